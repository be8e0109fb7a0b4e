//! The in-memory state: queues with their messages, topics with their
//! subscriptions, and the operations on them, independent of any protocol.
//!
//! Each queue has its own lock, held only for a few map operations and never
//! across an `.await`. A queue keeps its visible messages in send order
//! (`ready`) and the invisible ones — in flight or delayed — by the instant
//! they become visible again (`hidden`); every operation first moves what is
//! due from one to the other. Long polls wait on the queue's [`Notify`] and
//! wake when a message arrives or the next hidden one becomes visible.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::filter::FilterPolicy;
use crate::md5;
use crate::time::{iso8601_millis, now_millis};

/// SQS's and SNS's limit on a message (256 KiB).
pub const MAX_MESSAGE_BYTES: usize = 262_144;
/// Longest visibility timeout (12 h).
const MAX_VISIBILITY_SECS: u32 = 43_200;
/// How long a FIFO de-duplication id is remembered.
const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// One message attribute, as the SQS JSON protocol writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageAttribute {
    /// `String`, `Number`, `Binary`, optionally with a `.custom` suffix.
    pub data_type: String,
    /// The value of a String or Number attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// The value of a Binary attribute, base64 as on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
}

/// Message attributes by name.
pub type Attributes = BTreeMap<String, MessageAttribute>;

/// A message to put on a queue.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    /// The body.
    pub body: String,
    /// Message attributes.
    pub attributes: Attributes,
    /// Per-message delay in seconds (standard queues).
    pub delay_secs: Option<u32>,
    /// FIFO: the message group.
    pub group: Option<String>,
    /// FIFO: the de-duplication id.
    pub dedup_id: Option<String>,
}

/// What a send answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The new message's id.
    pub message_id: String,
    /// MD5 of the body, hex.
    pub md5_of_body: String,
    /// FIFO: the sequence number.
    pub sequence_number: Option<String>,
}

/// Which system attributes and message attributes a receive asks for.
#[derive(Debug, Clone, Default)]
pub struct ReceiveRequest {
    /// Messages at most (1..=10).
    pub max_messages: usize,
    /// Long-poll wait.
    pub wait: Duration,
    /// Visibility timeout override, in seconds.
    pub visibility_secs: Option<u32>,
    /// System attribute names (`All` for all).
    pub system_attributes: Vec<String>,
    /// Message attribute names (`All`, `.*`, names, `prefix.*`).
    pub message_attributes: Vec<String>,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The message id.
    pub message_id: String,
    /// The receipt handle of this receive.
    pub receipt_handle: String,
    /// MD5 of the body, hex.
    pub md5_of_body: Arc<str>,
    /// The body.
    pub body: Arc<str>,
    /// The system attributes asked for.
    pub system_attributes: BTreeMap<&'static str, String>,
    /// The message attributes asked for.
    pub message_attributes: Attributes,
}

/// A message to publish to a topic.
#[derive(Debug, Clone, Default)]
pub struct Publication {
    /// The message.
    pub message: String,
    /// Optional subject (kept in the envelope).
    pub subject: Option<String>,
    /// Message attributes.
    pub attributes: Attributes,
    /// `json`: `message` holds one text per protocol (`default`, `sqs`).
    pub message_structure: Option<String>,
    /// FIFO topics: the message group.
    pub group: Option<String>,
    /// FIFO topics: the de-duplication id.
    pub dedup_id: Option<String>,
}

/// A subscription as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// Its ARN.
    pub arn: String,
    /// The topic's ARN.
    pub topic_arn: String,
    /// `sqs`, `http`, …
    pub protocol: String,
    /// The queue ARN (or URL, address …).
    pub endpoint: String,
    /// Every attribute.
    pub attributes: BTreeMap<String, String>,
}

/// Counters of the model itself (per-operation counts live with the server).
#[derive(Debug, Default)]
pub struct ModelCounters {
    /// Messages put on queues (sends, fan-out, dead-lettering).
    pub enqueued: AtomicU64,
    /// Messages handed out by receives.
    pub received: AtomicU64,
    /// Messages deleted.
    pub deleted: AtomicU64,
    /// SNS deliveries to queues.
    pub fanout_deliveries: AtomicU64,
    /// SNS deliveries that found no queue.
    pub fanout_failures: AtomicU64,
    /// Messages moved to a dead-letter queue.
    pub dead_lettered: AtomicU64,
}

/// A snapshot of a queue's message counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Visible messages.
    pub visible: usize,
    /// Messages in flight (received, neither deleted nor visible again).
    pub in_flight: usize,
    /// Messages delayed (sent with a delay not yet over).
    pub delayed: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unique, UUID-shaped ids without a random draw per id.
#[derive(Debug)]
struct IdGen {
    prefix: u32,
    counter: AtomicU64,
}

impl IdGen {
    fn new() -> Self {
        Self {
            prefix: rand::random(),
            counter: AtomicU64::new(rand::random::<u32>().into()),
        }
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            self.prefix,
            (n >> 48) & 0xffff,
            (n >> 36) & 0xfff,
            (n >> 24) & 0xfff,
            n & 0xff_ffff_ffff
        )
    }
}

/// Everything the server holds.
#[derive(Debug)]
pub struct Model {
    account: String,
    region: String,
    base_url: String,
    queues: RwLock<HashMap<String, Arc<QueueCell>>>,
    topics: RwLock<BTreeMap<String, Topic>>,
    next_queue_id: AtomicU64,
    ids: IdGen,
    /// What the model did.
    pub counters: ModelCounters,
}

/// A queue: its fixed identity, its state behind a lock, and the
/// notification its long polls wait on.
#[derive(Debug)]
pub struct QueueCell {
    id: u64,
    name: String,
    url: String,
    arn: String,
    fifo: bool,
    notify: Notify,
    state: Mutex<Queue>,
}

#[derive(Debug, Clone)]
struct Redrive {
    target: String,
    max_receive_count: u32,
}

#[derive(Debug)]
struct Queue {
    deleted: bool,
    attributes: BTreeMap<String, String>,
    tags: BTreeMap<String, String>,
    created_secs: u64,
    modified_secs: u64,
    visibility_secs: u32,
    delay_secs: u32,
    receive_wait_secs: u32,
    max_message_bytes: usize,
    content_dedup: bool,
    redrive: Option<Redrive>,
    messages: HashMap<u64, Stored>,
    ready: BTreeSet<u64>,
    hidden: BTreeSet<(Instant, u64)>,
    in_flight: usize,
    inflight_groups: HashMap<String, usize>,
    dedup: HashMap<String, (Instant, String)>,
    next_seq: u64,
    generation: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    message_id: String,
    body: Arc<str>,
    md5: Arc<str>,
    attributes: Attributes,
    sent_millis: u64,
    receive_count: u32,
    first_receive_millis: Option<u64>,
    group: Option<String>,
    dedup_id: Option<String>,
    hidden_until: Option<Instant>,
    in_flight: bool,
    generation: u64,
    dead_letter_source: Option<String>,
}

#[derive(Debug, Clone)]
struct Topic {
    arn: String,
    fifo: bool,
    attributes: BTreeMap<String, String>,
    subscriptions: Vec<Arc<Subscription>>,
}

#[derive(Debug)]
struct Subscription {
    info: SubscriptionInfo,
    raw: bool,
    filter: Option<FilterPolicy>,
    body_scope: bool,
}

/// The SNS notification envelope (raw message delivery off), in AWS field order.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "MessageId")]
    message_id: &'a str,
    #[serde(rename = "SequenceNumber", skip_serializing_if = "Option::is_none")]
    sequence_number: Option<&'a str>,
    #[serde(rename = "TopicArn")]
    topic_arn: &'a str,
    #[serde(rename = "Subject", skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(rename = "Message")]
    message: &'a str,
    #[serde(rename = "Timestamp")]
    timestamp: &'a str,
    #[serde(rename = "SignatureVersion")]
    signature_version: &'static str,
    #[serde(rename = "Signature")]
    signature: &'static str,
    #[serde(rename = "SigningCertURL")]
    signing_cert_url: String,
    #[serde(rename = "UnsubscribeURL")]
    unsubscribe_url: String,
    #[serde(
        rename = "MessageAttributes",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    message_attributes: BTreeMap<&'a str, EnvelopeAttribute<'a>>,
}

#[derive(Serialize)]
struct EnvelopeAttribute<'a> {
    #[serde(rename = "Type")]
    kind: &'a str,
    #[serde(rename = "Value")]
    value: &'a str,
}

/// The name at the end of a queue URL (`http://host/account/name`) or ARN.
fn queue_name(url_or_arn: &str) -> &str {
    let tail = url_or_arn.trim_end_matches('/');
    let after_slash = tail.rsplit('/').next().unwrap_or(tail);
    after_slash.rsplit(':').next().unwrap_or(after_slash)
}

fn valid_name(name: &str) -> bool {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    !stem.is_empty()
        && name.len() <= 80
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn parse_u32(name: &str, value: &str, range: std::ops::RangeInclusive<u32>) -> ApiResult<u32> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid value for the parameter {name}: {value:?} (allowed {}..={})",
                range.start(),
                range.end()
            ))
        })
}

impl Queue {
    fn new(now_secs: u64) -> Self {
        Self {
            deleted: false,
            attributes: BTreeMap::new(),
            tags: BTreeMap::new(),
            created_secs: now_secs,
            modified_secs: now_secs,
            visibility_secs: 30,
            delay_secs: 0,
            receive_wait_secs: 0,
            max_message_bytes: MAX_MESSAGE_BYTES,
            content_dedup: false,
            redrive: None,
            messages: HashMap::new(),
            ready: BTreeSet::new(),
            hidden: BTreeSet::new(),
            in_flight: 0,
            inflight_groups: HashMap::new(),
            dedup: HashMap::new(),
            next_seq: 1,
            generation: 0,
        }
    }

    /// Makes visible what is due.
    fn promote(&mut self, now: Instant) {
        while let Some(&(at, seq)) = self.hidden.first() {
            if at > now {
                break;
            }
            self.hidden.pop_first();
            if let Some(message) = self.messages.get_mut(&seq) {
                message.hidden_until = None;
                if message.in_flight {
                    message.in_flight = false;
                    self.in_flight -= 1;
                    if let Some(group) = &message.group {
                        release_group(&mut self.inflight_groups, group);
                    }
                }
                self.ready.insert(seq);
            }
        }
    }

    fn apply_attribute(&mut self, name: &str, value: &str, fifo: bool) -> ApiResult<()> {
        match name {
            "VisibilityTimeout" => {
                self.visibility_secs = parse_u32(name, value, 0..=MAX_VISIBILITY_SECS)?
            }
            "DelaySeconds" => self.delay_secs = parse_u32(name, value, 0..=900)?,
            "ReceiveMessageWaitTimeSeconds" => {
                self.receive_wait_secs = parse_u32(name, value, 0..=20)?
            }
            "MaximumMessageSize" => {
                self.max_message_bytes = parse_u32(name, value, 1024..=262_144)? as usize
            }
            "MessageRetentionPeriod" => {
                parse_u32(name, value, 60..=1_209_600)?;
            }
            "RedrivePolicy" => {
                self.redrive = if value.trim().is_empty() {
                    None
                } else {
                    Some(parse_redrive(value)?)
                }
            }
            "ContentBasedDeduplication" if fifo => self.content_dedup = value == "true",
            "FifoQueue" => {
                if (value == "true") != fifo {
                    return Err(ApiError::invalid(
                        "FifoQueue must be true exactly for queue names ending in .fifo",
                    ));
                }
            }
            "Policy"
            | "RedriveAllowPolicy"
            | "KmsMasterKeyId"
            | "KmsDataKeyReusePeriodSeconds"
            | "SqsManagedSseEnabled" => {}
            "DeduplicationScope" | "FifoThroughputLimit" if fifo => {}
            _ => return Err(ApiError::invalid(format!("Unknown Attribute {name}."))),
        }
        if value.is_empty() && name == "RedrivePolicy" {
            self.attributes.remove(name);
        } else if name != "FifoQueue" {
            self.attributes.insert(name.to_owned(), value.to_owned());
        }
        Ok(())
    }

    fn remove(&mut self, seq: u64) -> Option<Stored> {
        let message = self.messages.remove(&seq)?;
        match message.hidden_until {
            Some(at) => {
                self.hidden.remove(&(at, seq));
            }
            None => {
                self.ready.remove(&seq);
            }
        }
        if message.in_flight {
            self.in_flight -= 1;
            if let Some(group) = &message.group {
                release_group(&mut self.inflight_groups, group);
            }
        }
        Some(message)
    }

    fn counts(&self) -> QueueCounts {
        QueueCounts {
            visible: self.ready.len(),
            in_flight: self.in_flight,
            delayed: self.hidden.len() - self.in_flight,
        }
    }
}

fn release_group(groups: &mut HashMap<String, usize>, group: &str) {
    if let Some(count) = groups.get_mut(group) {
        *count -= 1;
        if *count == 0 {
            groups.remove(group);
        }
    }
}

fn parse_redrive(text: &str) -> ApiResult<Redrive> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("Invalid value for RedrivePolicy: {e}")))?;
    let target = value
        .get("deadLetterTargetArn")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::invalid("RedrivePolicy needs deadLetterTargetArn"))?;
    let count = match value.get("maxReceiveCount") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| (1..=1000).contains(n))
    .ok_or_else(|| ApiError::invalid("RedrivePolicy needs maxReceiveCount in 1..=1000"))?;
    Ok(Redrive {
        target: queue_name(target).to_owned(),
        max_receive_count: count as u32,
    })
}

fn wants_attribute(selection: &[String], name: &str) -> bool {
    selection.iter().any(|s| {
        s == "All"
            || s == ".*"
            || s == name
            || s.strip_suffix(".*").is_some_and(|prefix| {
                name.starts_with(prefix) && name[prefix.len()..].starts_with('.')
            })
    })
}

fn wants_system(selection: &[String], name: &str) -> bool {
    selection.iter().any(|s| s == "All" || s == name)
}

impl QueueCell {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The queue's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// Message counts now.
    pub fn counts(&self) -> QueueCounts {
        let mut queue = lock(&self.state);
        queue.promote(Instant::now());
        queue.counts()
    }

    fn receipt(&self, seq: u64, generation: u64) -> String {
        format!("{:x}:{seq:x}:{generation:x}", self.id)
    }

    /// (sequence, generation) of a receipt handle issued for this queue.
    fn parse_receipt(&self, handle: &str) -> ApiResult<(u64, u64)> {
        let invalid = || {
            ApiError::new(
                ErrorKind::ReceiptInvalid,
                format!("The input receipt handle \"{handle}\" is not a valid receipt handle."),
            )
        };
        let mut parts = handle.split(':');
        let mut next = || {
            parts
                .next()
                .and_then(|p| u64::from_str_radix(p, 16).ok())
                .ok_or_else(invalid)
        };
        let (queue, seq, generation) = (next()?, next()?, next()?);
        if queue != self.id || parts.next().is_some() {
            return Err(invalid());
        }
        Ok((seq, generation))
    }
}

impl Model {
    /// An empty model whose queue URLs start with `base_url`
    /// (`http://127.0.0.1:PORT`).
    pub fn new(base_url: impl Into<String>, region: impl Into<String>) -> Self {
        Self {
            account: "123456789012".into(),
            region: region.into(),
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            queues: RwLock::default(),
            topics: RwLock::default(),
            next_queue_id: AtomicU64::new(1),
            ids: IdGen::new(),
            counters: ModelCounters::default(),
        }
    }

    /// Removes every queue, topic and subscription.
    pub fn reset(&self) {
        let queues =
            std::mem::take(&mut *self.queues.write().unwrap_or_else(PoisonError::into_inner));
        for cell in queues.values() {
            lock(&cell.state).deleted = true;
            cell.notify.notify_waiters();
        }
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    // ---- queues -------------------------------------------------------

    /// Creates a queue (or finds the one of that name); returns its URL.
    pub fn create_queue(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
        tags: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        if !valid_name(name) {
            return Err(ApiError::invalid(format!(
                "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length: {name:?}"
            )));
        }
        let fifo = name.ends_with(".fifo");
        let mut queues = self.queues.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = queues.get(name) {
            return Ok(existing.url.clone());
        }
        let mut queue = Queue::new(now_millis() / 1000);
        for (key, value) in attributes {
            queue.apply_attribute(key, value, fifo)?;
        }
        if !fifo && attributes.get("FifoQueue").is_some_and(|v| v == "true") {
            return Err(ApiError::invalid(
                "The name of a FIFO queue must end in .fifo",
            ));
        }
        queue.tags = tags.clone();
        let cell = QueueCell {
            id: self.next_queue_id.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            url: format!("{}/{}/{name}", self.base_url, self.account),
            arn: format!("arn:aws:sqs:{}:{}:{name}", self.region, self.account),
            fifo,
            notify: Notify::new(),
            state: Mutex::new(queue),
        };
        let url = cell.url.clone();
        queues.insert(name.to_owned(), Arc::new(cell));
        Ok(url)
    }

    /// The queue a URL (or name, or ARN) names.
    pub fn queue(&self, url: &str) -> ApiResult<Arc<QueueCell>> {
        let name = queue_name(url);
        self.queues
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::QueueMissing,
                    "The specified queue does not exist.",
                )
            })
    }

    /// Deletes a queue; its long polls end.
    pub fn delete_queue(&self, url: &str) -> ApiResult<()> {
        let name = queue_name(url);
        let cell = self
            .queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::QueueMissing,
                    "The specified queue does not exist.",
                )
            })?;
        lock(&cell.state).deleted = true;
        cell.notify.notify_waiters();
        Ok(())
    }

    /// URLs of the queues whose name starts with `prefix`, by name, from
    /// position `start`, at most `max`; and where the next page starts.
    pub fn list_queues(
        &self,
        prefix: &str,
        start: usize,
        max: usize,
    ) -> (Vec<String>, Option<usize>) {
        let queues = self.queues.read().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<&String> = queues.keys().filter(|n| n.starts_with(prefix)).collect();
        names.sort();
        let page: Vec<String> = names
            .iter()
            .skip(start)
            .take(max)
            .filter_map(|n| queues.get(*n).map(|c| c.url.clone()))
            .collect();
        let next = (start + page.len() < names.len()).then_some(start + page.len());
        (page, next)
    }

    /// The attributes of a queue that `names` asks for (`All`: every one).
    pub fn queue_attributes(
        &self,
        url: &str,
        names: &[String],
    ) -> ApiResult<BTreeMap<String, String>> {
        let cell = self.queue(url)?;
        let mut queue = lock(&cell.state);
        queue.promote(Instant::now());
        let counts = queue.counts();
        let mut all: BTreeMap<String, String> = queue.attributes.clone();
        let mut put = |k: &str, v: String| {
            all.insert(k.to_owned(), v);
        };
        put("QueueArn", cell.arn.clone());
        put("ApproximateNumberOfMessages", counts.visible.to_string());
        put(
            "ApproximateNumberOfMessagesNotVisible",
            counts.in_flight.to_string(),
        );
        put(
            "ApproximateNumberOfMessagesDelayed",
            counts.delayed.to_string(),
        );
        put("CreatedTimestamp", queue.created_secs.to_string());
        put("LastModifiedTimestamp", queue.modified_secs.to_string());
        put("VisibilityTimeout", queue.visibility_secs.to_string());
        put("DelaySeconds", queue.delay_secs.to_string());
        put(
            "ReceiveMessageWaitTimeSeconds",
            queue.receive_wait_secs.to_string(),
        );
        put("MaximumMessageSize", queue.max_message_bytes.to_string());
        all.entry("MessageRetentionPeriod".into())
            .or_insert_with(|| "345600".into());
        all.entry("SqsManagedSseEnabled".into())
            .or_insert_with(|| "false".into());
        if cell.fifo {
            all.insert("FifoQueue".into(), "true".into());
            all.insert(
                "ContentBasedDeduplication".into(),
                queue.content_dedup.to_string(),
            );
        }
        Ok(if names.iter().any(|n| n == "All") {
            all
        } else {
            all.into_iter().filter(|(k, _)| names.contains(k)).collect()
        })
    }

    /// The queue's `ReceiveMessageWaitTimeSeconds`: the wait of a receive that sets none.
    pub fn default_wait(&self, url: &str) -> ApiResult<Duration> {
        let cell = self.queue(url)?;
        let secs = lock(&cell.state).receive_wait_secs;
        Ok(Duration::from_secs(secs.into()))
    }

    /// Sets attributes of a queue.
    pub fn set_queue_attributes(
        &self,
        url: &str,
        attributes: &BTreeMap<String, String>,
    ) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let mut queue = lock(&cell.state);
        for (key, value) in attributes {
            queue.apply_attribute(key, value, cell.fifo)?;
        }
        queue.modified_secs = now_millis() / 1000;
        Ok(())
    }

    /// Adds or replaces tags.
    pub fn tag_queue(&self, url: &str, tags: &BTreeMap<String, String>) -> ApiResult<()> {
        let cell = self.queue(url)?;
        lock(&cell.state).tags.extend(tags.clone());
        Ok(())
    }

    /// Removes tags.
    pub fn untag_queue(&self, url: &str, keys: &[String]) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let mut queue = lock(&cell.state);
        for key in keys {
            queue.tags.remove(key);
        }
        Ok(())
    }

    /// The tags of a queue.
    pub fn queue_tags(&self, url: &str) -> ApiResult<BTreeMap<String, String>> {
        Ok(lock(&self.queue(url)?.state).tags.clone())
    }

    /// Deletes every message of a queue.
    pub fn purge_queue(&self, url: &str) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let mut queue = lock(&cell.state);
        queue.messages.clear();
        queue.ready.clear();
        queue.hidden.clear();
        queue.in_flight = 0;
        queue.inflight_groups.clear();
        Ok(())
    }

    // ---- messages -----------------------------------------------------

    /// Puts a message on a queue.
    pub fn send(&self, url: &str, message: NewMessage) -> ApiResult<Sent> {
        let cell = self.queue(url)?;
        self.send_to(&cell, message, None)
    }

    fn send_to(
        &self,
        cell: &QueueCell,
        message: NewMessage,
        dead_letter_source: Option<String>,
    ) -> ApiResult<Sent> {
        if message.body.is_empty() {
            return Err(ApiError::missing("MessageBody"));
        }
        let md5 = md5::hex_digest(message.body.as_bytes());
        let now = Instant::now();
        let mut queue = lock(&cell.state);
        if queue.deleted {
            return Err(ApiError::new(
                ErrorKind::QueueMissing,
                "The specified queue does not exist.",
            ));
        }
        if message.body.len() > queue.max_message_bytes {
            return Err(ApiError::invalid(format!(
                "One or more parameters are invalid. Reason: Message must be shorter than {} bytes.",
                queue.max_message_bytes
            )));
        }
        let mut dedup_id = None;
        if cell.fifo {
            if message.group.is_none() {
                return Err(ApiError::missing("MessageGroupId"));
            }
            let id = match (&message.dedup_id, queue.content_dedup) {
                (Some(id), _) => id.clone(),
                (None, true) => format!("content:{md5}:{}", message.body.len()),
                (None, false) => {
                    return Err(ApiError::invalid(
                        "The queue should either have ContentBasedDeduplication enabled or \
                         MessageDeduplicationId provided explicitly",
                    ))
                }
            };
            queue.dedup.retain(|_, (expires, _)| *expires > now);
            if let Some((_, existing)) = queue.dedup.get(&id) {
                return Ok(Sent {
                    message_id: existing.clone(),
                    md5_of_body: md5,
                    sequence_number: None,
                });
            }
            dedup_id = Some(id);
        }
        let seq = queue.next_seq;
        queue.next_seq += 1;
        let message_id = self.ids.next();
        if let Some(id) = &dedup_id {
            queue
                .dedup
                .insert(id.clone(), (now + DEDUP_WINDOW, message_id.clone()));
        }
        let delay = if cell.fifo {
            queue.delay_secs
        } else {
            message.delay_secs.unwrap_or(queue.delay_secs)
        };
        let hidden_until = (delay > 0).then(|| now + Duration::from_secs(delay.into()));
        let stored = Stored {
            message_id: message_id.clone(),
            body: Arc::from(message.body),
            md5: Arc::from(md5.as_str()),
            attributes: message.attributes,
            sent_millis: now_millis(),
            receive_count: 0,
            first_receive_millis: None,
            group: message.group,
            dedup_id: message.dedup_id,
            hidden_until,
            in_flight: false,
            generation: 0,
            dead_letter_source,
        };
        queue.messages.insert(seq, stored);
        match hidden_until {
            Some(at) => {
                queue.hidden.insert((at, seq));
            }
            None => {
                queue.ready.insert(seq);
            }
        }
        drop(queue);
        self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
        if hidden_until.is_none() {
            cell.notify.notify_waiters();
        }
        Ok(Sent {
            message_id,
            md5_of_body: md5,
            sequence_number: cell.fifo.then(|| format!("{seq:020}")),
        })
    }

    /// Receives up to `request.max_messages` messages, waiting up to
    /// `request.wait` for the first one.
    pub async fn receive(&self, url: &str, request: &ReceiveRequest) -> ApiResult<Vec<Delivered>> {
        let cell = self.queue(url)?;
        let started = Instant::now();
        let deadline = started + request.wait;
        loop {
            let notified = cell.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let (taken, dead, dead_target, next_visible) = {
                let mut queue = lock(&cell.state);
                if queue.deleted {
                    return Err(ApiError::new(
                        ErrorKind::QueueMissing,
                        "The specified queue does not exist.",
                    ));
                }
                queue.promote(now);
                let (taken, dead) = self.take(&cell, &mut queue, now, request);
                let target = queue.redrive.as_ref().map(|r| r.target.clone());
                (taken, dead, target, queue.hidden.first().map(|(at, _)| *at))
            };
            if !dead.is_empty() {
                self.dead_letter(&cell, dead, dead_target.as_deref());
            }
            if !taken.is_empty() {
                self.counters
                    .received
                    .fetch_add(taken.len() as u64, Ordering::Relaxed);
                return Ok(taken);
            }
            if now >= deadline {
                return Ok(Vec::new());
            }
            let wake = next_visible.map_or(deadline, |at| at.min(deadline));
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
            }
        }
    }

    /// Takes the visible messages a receive gets; returns them and those
    /// that go to the dead-letter queue instead.
    fn take(
        &self,
        cell: &QueueCell,
        queue: &mut Queue,
        now: Instant,
        request: &ReceiveRequest,
    ) -> (Vec<Delivered>, Vec<Stored>) {
        let max = request.max_messages.clamp(1, 10);
        let visibility = request.visibility_secs.unwrap_or(queue.visibility_secs);
        let mut chosen = Vec::with_capacity(max);
        let mut dead_seqs = Vec::new();
        let mut batch_groups: HashSet<&str> = HashSet::new();
        for &seq in &queue.ready {
            if chosen.len() >= max {
                break;
            }
            let Some(message) = queue.messages.get(&seq) else {
                continue;
            };
            if let Some(redrive) = &queue.redrive {
                if message.receive_count >= redrive.max_receive_count {
                    dead_seqs.push(seq);
                    continue;
                }
            }
            if cell.fifo {
                let group = message.group.as_deref().unwrap_or_default();
                if queue.inflight_groups.contains_key(group) && !batch_groups.contains(group) {
                    continue;
                }
                batch_groups.insert(group);
            }
            chosen.push(seq);
        }
        drop(batch_groups);
        let dead: Vec<Stored> = dead_seqs
            .into_iter()
            .filter_map(|seq| queue.remove(seq))
            .collect();
        let now_ms = now_millis();
        let until = now + Duration::from_secs(visibility.into());
        let mut taken = Vec::with_capacity(chosen.len());
        for seq in chosen {
            queue.ready.remove(&seq);
            queue.generation += 1;
            let generation = queue.generation;
            let Some(message) = queue.messages.get_mut(&seq) else {
                continue;
            };
            message.receive_count += 1;
            message.first_receive_millis.get_or_insert(now_ms);
            message.generation = generation;
            message.in_flight = true;
            message.hidden_until = Some(until);
            let delivered = deliver(cell, seq, message, request);
            let group = message.group.clone();
            queue.in_flight += 1;
            if let Some(group) = group {
                *queue.inflight_groups.entry(group).or_insert(0) += 1;
            }
            queue.hidden.insert((until, seq));
            taken.push(delivered);
        }
        (taken, dead)
    }

    fn dead_letter(&self, source: &QueueCell, messages: Vec<Stored>, target: Option<&str>) {
        let Some(target) = target.and_then(|t| self.queue(t).ok()) else {
            return;
        };
        for message in messages {
            let new = NewMessage {
                body: message.body.to_string(),
                attributes: message.attributes,
                delay_secs: Some(0),
                group: message.group,
                dedup_id: message.dedup_id,
            };
            if self.send_to(&target, new, Some(source.arn.clone())).is_ok() {
                self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Deletes the message a receipt handle names. A stale handle (the
    /// message was received again since) deletes nothing, as on AWS.
    pub fn delete_message(&self, url: &str, receipt: &str) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let (seq, generation) = cell.parse_receipt(receipt)?;
        let mut queue = lock(&cell.state);
        if queue
            .messages
            .get(&seq)
            .is_some_and(|m| m.generation == generation)
        {
            queue.remove(seq);
            drop(queue);
            self.counters.deleted.fetch_add(1, Ordering::Relaxed);
            if cell.fifo {
                // A group may be free again.
                cell.notify.notify_waiters();
            }
        }
        Ok(())
    }

    /// Changes the visibility timeout of a message in flight.
    pub fn change_visibility(&self, url: &str, receipt: &str, secs: u32) -> ApiResult<()> {
        let cell = self.queue(url)?;
        let (seq, generation) = cell.parse_receipt(receipt)?;
        if secs > MAX_VISIBILITY_SECS {
            return Err(ApiError::invalid(format!(
                "Value {secs} for parameter VisibilityTimeout is invalid. Reason: must be between 0 and 43200."
            )));
        }
        let now = Instant::now();
        let mut queue = lock(&cell.state);
        queue.promote(now);
        let Some(message) = queue.messages.get_mut(&seq) else {
            return Err(ApiError::invalid(format!(
                "Value {receipt} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
            )));
        };
        if !message.in_flight || message.generation != generation {
            return Err(ApiError::new(
                ErrorKind::NotInflight,
                "Message not inflight.",
            ));
        }
        let old = message.hidden_until.unwrap_or(now);
        let group = message.group.clone();
        if secs == 0 {
            message.hidden_until = None;
            message.in_flight = false;
            queue.hidden.remove(&(old, seq));
            queue.in_flight -= 1;
            if let Some(group) = group {
                release_group(&mut queue.inflight_groups, &group);
            }
            queue.ready.insert(seq);
            drop(queue);
            cell.notify.notify_waiters();
        } else {
            let until = now + Duration::from_secs(secs.into());
            message.hidden_until = Some(until);
            queue.hidden.remove(&(old, seq));
            queue.hidden.insert((until, seq));
        }
        Ok(())
    }

    // ---- topics -------------------------------------------------------

    /// Creates a topic (or finds it); returns its ARN.
    pub fn create_topic(
        &self,
        name: &str,
        attributes: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        if !valid_name(name) || name.len() > 256 {
            return Err(ApiError::invalid(format!(
                "Invalid parameter: Topic Name {name:?}"
            )));
        }
        let fifo = name.ends_with(".fifo");
        if attributes.get("FifoTopic").is_some_and(|v| v == "true") != fifo {
            return Err(ApiError::invalid(
                "Invalid parameter: FifoTopic must be true exactly for topic names ending in .fifo",
            ));
        }
        let arn = format!("arn:aws:sns:{}:{}:{name}", self.region, self.account);
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        topics.entry(arn.clone()).or_insert_with(|| Topic {
            arn: arn.clone(),
            fifo,
            attributes: attributes.clone(),
            subscriptions: Vec::new(),
        });
        Ok(arn)
    }

    /// Deletes a topic and its subscriptions (deleting a missing topic succeeds).
    pub fn delete_topic(&self, arn: &str) {
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(arn);
    }

    /// Every topic ARN.
    pub fn list_topics(&self) -> Vec<String> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    fn topic_missing() -> ApiError {
        ApiError::new(ErrorKind::TopicMissing, "Topic does not exist")
    }

    /// The attributes of a topic.
    pub fn topic_attributes(&self, arn: &str) -> ApiResult<BTreeMap<String, String>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get(arn).ok_or_else(Self::topic_missing)?;
        let mut attributes = topic.attributes.clone();
        attributes.insert("TopicArn".into(), topic.arn.clone());
        attributes.insert("Owner".into(), self.account.clone());
        attributes.insert(
            "SubscriptionsConfirmed".into(),
            topic.subscriptions.len().to_string(),
        );
        attributes.insert("SubscriptionsPending".into(), "0".into());
        attributes.insert("SubscriptionsDeleted".into(), "0".into());
        Ok(attributes)
    }

    /// Sets one attribute of a topic.
    pub fn set_topic_attribute(&self, arn: &str, name: &str, value: &str) -> ApiResult<()> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get_mut(arn).ok_or_else(Self::topic_missing)?;
        topic.attributes.insert(name.to_owned(), value.to_owned());
        Ok(())
    }

    fn build_subscription(info: SubscriptionInfo) -> ApiResult<Subscription> {
        let filter = match info.attributes.get("FilterPolicy") {
            Some(text) if !text.trim().is_empty() => Some(FilterPolicy::parse(text)?),
            _ => None,
        };
        let body_scope = match info.attributes.get("FilterPolicyScope").map(String::as_str) {
            None | Some("MessageAttributes") => false,
            Some("MessageBody") => true,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid parameter: FilterPolicyScope: {other:?}"
                )))
            }
        };
        let raw = match info
            .attributes
            .get("RawMessageDelivery")
            .map(String::as_str)
        {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "Invalid parameter: RawMessageDelivery: {other:?}"
                )))
            }
        };
        Ok(Subscription {
            info,
            raw,
            filter,
            body_scope,
        })
    }

    /// Subscribes an endpoint to a topic (the existing subscription of the
    /// same protocol and endpoint is returned as it is); returns its ARN.
    pub fn subscribe(
        &self,
        topic_arn: &str,
        protocol: &str,
        endpoint: &str,
        attributes: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        if protocol.is_empty() {
            return Err(ApiError::missing("Protocol"));
        }
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get_mut(topic_arn).ok_or_else(Self::topic_missing)?;
        if let Some(existing) = topic
            .subscriptions
            .iter()
            .find(|s| s.info.protocol == protocol && s.info.endpoint == endpoint)
        {
            return Ok(existing.info.arn.clone());
        }
        let arn = format!("{topic_arn}:{}", self.ids.next());
        let mut all = attributes.clone();
        all.entry("RawMessageDelivery".into())
            .or_insert_with(|| "false".into());
        let subscription = Self::build_subscription(SubscriptionInfo {
            arn: arn.clone(),
            topic_arn: topic_arn.to_owned(),
            protocol: protocol.to_owned(),
            endpoint: endpoint.to_owned(),
            attributes: all,
        })?;
        topic.subscriptions.push(Arc::new(subscription));
        Ok(arn)
    }

    /// Removes a subscription.
    pub fn unsubscribe(&self, subscription_arn: &str) -> ApiResult<()> {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        for topic in topics.values_mut() {
            if let Some(at) = topic
                .subscriptions
                .iter()
                .position(|s| s.info.arn == subscription_arn)
            {
                topic.subscriptions.remove(at);
                return Ok(());
            }
        }
        Err(ApiError::new(
            ErrorKind::SubscriptionMissing,
            "Subscription does not exist",
        ))
    }

    /// The subscriptions of one topic, or of all (`None`).
    pub fn list_subscriptions(&self, topic_arn: Option<&str>) -> ApiResult<Vec<SubscriptionInfo>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        match topic_arn {
            Some(arn) => Ok(topics
                .get(arn)
                .ok_or_else(Self::topic_missing)?
                .subscriptions
                .iter()
                .map(|s| s.info.clone())
                .collect()),
            None => Ok(topics
                .values()
                .flat_map(|t| t.subscriptions.iter().map(|s| s.info.clone()))
                .collect()),
        }
    }

    fn find_subscription(&self, arn: &str) -> ApiResult<(String, usize)> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics
            .values()
            .find_map(|t| {
                t.subscriptions
                    .iter()
                    .position(|s| s.info.arn == arn)
                    .map(|i| (t.arn.clone(), i))
            })
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::SubscriptionMissing,
                    "Subscription does not exist",
                )
            })
    }

    /// The attributes of a subscription.
    pub fn subscription_attributes(&self, arn: &str) -> ApiResult<BTreeMap<String, String>> {
        let (topic_arn, _) = self.find_subscription(arn)?;
        let subscriptions = self.list_subscriptions(Some(&topic_arn))?;
        let info = subscriptions
            .into_iter()
            .find(|s| s.arn == arn)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::SubscriptionMissing,
                    "Subscription does not exist",
                )
            })?;
        let mut attributes = info.attributes;
        attributes.insert("SubscriptionArn".into(), info.arn);
        attributes.insert("TopicArn".into(), info.topic_arn);
        attributes.insert("Protocol".into(), info.protocol);
        attributes.insert("Endpoint".into(), info.endpoint);
        attributes.insert("Owner".into(), self.account.clone());
        attributes.insert("ConfirmationWasAuthenticated".into(), "true".into());
        attributes.insert("PendingConfirmation".into(), "false".into());
        Ok(attributes)
    }

    /// Sets one attribute of a subscription (`RawMessageDelivery`,
    /// `FilterPolicy`, `FilterPolicyScope`, …).
    pub fn set_subscription_attribute(&self, arn: &str, name: &str, value: &str) -> ApiResult<()> {
        let (topic_arn, index) = self.find_subscription(arn)?;
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        let topic = topics.get_mut(&topic_arn).ok_or_else(Self::topic_missing)?;
        let Some(current) = topic.subscriptions.get(index).filter(|s| s.info.arn == arn) else {
            return Err(ApiError::new(
                ErrorKind::SubscriptionMissing,
                "Subscription does not exist",
            ));
        };
        let mut info = current.info.clone();
        if value.is_empty() && name == "FilterPolicy" {
            info.attributes.remove(name);
        } else {
            info.attributes.insert(name.to_owned(), value.to_owned());
        }
        topic.subscriptions[index] = Arc::new(Self::build_subscription(info)?);
        Ok(())
    }

    /// Publishes to a topic: one copy to every matching `sqs` subscription,
    /// in an envelope unless raw delivery is on. Returns the message id and,
    /// on a FIFO topic, the sequence number.
    pub fn publish(
        &self,
        topic_arn: &str,
        publication: Publication,
    ) -> ApiResult<(String, Option<String>)> {
        let (fifo, content_dedup, subscriptions) = {
            let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
            let topic = topics.get(topic_arn).ok_or_else(Self::topic_missing)?;
            (
                topic.fifo,
                topic
                    .attributes
                    .get("ContentBasedDeduplication")
                    .is_some_and(|v| v == "true"),
                topic.subscriptions.clone(),
            )
        };
        validate_publication(&publication, fifo, content_dedup)?;
        let message_id = self.ids.next();
        let sequence = fifo.then(|| format!("{:020}", now_millis()));
        let text = match publication.message_structure.as_deref() {
            Some("json") => structured_message(&publication.message, "sqs")?,
            _ => publication.message.clone(),
        };
        let timestamp = iso8601_millis(now_millis());
        let mut envelope_text: Option<String> = None;
        for subscription in subscriptions.iter().filter(|s| s.info.protocol == "sqs") {
            if let Some(filter) = &subscription.filter {
                let pass = if subscription.body_scope {
                    filter.matches_body(&text)
                } else {
                    filter.matches_attributes(&publication.attributes)
                };
                if !pass {
                    continue;
                }
            }
            let (body, attributes) = if subscription.raw {
                (text.clone(), publication.attributes.clone())
            } else {
                let body = envelope_text
                    .get_or_insert_with(|| {
                        self.envelope(
                            topic_arn,
                            &message_id,
                            sequence.as_deref(),
                            &publication,
                            &text,
                            &timestamp,
                        )
                    })
                    .clone();
                (body, Attributes::new())
            };
            let message = NewMessage {
                body,
                attributes,
                delay_secs: None,
                group: publication.group.clone(),
                dedup_id: fifo.then(|| {
                    publication
                        .dedup_id
                        .clone()
                        .unwrap_or_else(|| message_id.clone())
                }),
            };
            let delivered = self
                .queue(&subscription.info.endpoint)
                .and_then(|cell| self.send_to(&cell, message, None));
            let counter = if delivered.is_ok() {
                &self.counters.fanout_deliveries
            } else {
                &self.counters.fanout_failures
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok((message_id, sequence))
    }

    fn envelope(
        &self,
        topic_arn: &str,
        message_id: &str,
        sequence: Option<&str>,
        publication: &Publication,
        text: &str,
        timestamp: &str,
    ) -> String {
        let envelope = Envelope {
            kind: "Notification",
            message_id,
            sequence_number: sequence,
            topic_arn,
            subject: publication.subject.as_deref(),
            message: text,
            timestamp,
            signature_version: "1",
            signature: "c3Fzc3R1Yg==",
            signing_cert_url: format!("{}/SimpleNotificationService-stub.pem", self.base_url),
            unsubscribe_url: format!(
                "{}/?Action=Unsubscribe&SubscriptionArn={topic_arn}",
                self.base_url
            ),
            message_attributes: publication
                .attributes
                .iter()
                .map(|(name, attribute)| {
                    (
                        name.as_str(),
                        EnvelopeAttribute {
                            kind: &attribute.data_type,
                            value: attribute
                                .string_value
                                .as_deref()
                                .or(attribute.binary_value.as_deref())
                                .unwrap_or_default(),
                        },
                    )
                })
                .collect(),
        };
        serde_json::to_string(&envelope).unwrap_or_default()
    }
}

fn validate_publication(
    publication: &Publication,
    fifo: bool,
    content_dedup: bool,
) -> ApiResult<()> {
    if publication.message.is_empty() {
        return Err(ApiError::invalid("Invalid parameter: Empty message"));
    }
    let size = publication.message.len()
        + publication
            .attributes
            .iter()
            .map(|(k, v)| {
                k.len()
                    + v.data_type.len()
                    + v.string_value.as_ref().map_or(0, String::len)
                    + v.binary_value.as_ref().map_or(0, String::len)
            })
            .sum::<usize>();
    if size > MAX_MESSAGE_BYTES {
        return Err(ApiError::invalid("Invalid parameter: Message too long"));
    }
    if fifo {
        if publication.group.is_none() {
            return Err(ApiError::invalid(
                "Invalid parameter: The MessageGroupId parameter is required for FIFO topics",
            ));
        }
        if publication.dedup_id.is_none() && !content_dedup {
            return Err(ApiError::invalid(
                "Invalid parameter: The topic should either have ContentBasedDeduplication enabled \
                 or MessageDeduplicationId provided explicitly",
            ));
        }
    }
    Ok(())
}

/// The text for `protocol` of a `MessageStructure=json` message (else `default`).
fn structured_message(message: &str, protocol: &str) -> ApiResult<String> {
    let value: serde_json::Value = serde_json::from_str(message).map_err(|_| {
        ApiError::invalid(
            "Invalid parameter: Message Structure - No JSON message body is parseable",
        )
    })?;
    value
        .get(protocol)
        .or_else(|| value.get("default"))
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::invalid(
                "Invalid parameter: Message Structure - No default entry in JSON message body",
            )
        })
}

fn deliver(cell: &QueueCell, seq: u64, message: &Stored, request: &ReceiveRequest) -> Delivered {
    let mut system = BTreeMap::new();
    let wanted = &request.system_attributes;
    if !wanted.is_empty() {
        let mut put = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                if wants_system(wanted, name) {
                    system.insert(name, value);
                }
            }
        };
        put("SenderId", Some("AIDAIT2UOQQY3AUEKVGXU".into()));
        put("SentTimestamp", Some(message.sent_millis.to_string()));
        put(
            "ApproximateReceiveCount",
            Some(message.receive_count.to_string()),
        );
        put(
            "ApproximateFirstReceiveTimestamp",
            message.first_receive_millis.map(|ms| ms.to_string()),
        );
        put("MessageGroupId", message.group.clone());
        put("MessageDeduplicationId", message.dedup_id.clone());
        put("SequenceNumber", cell.fifo.then(|| format!("{seq:020}")));
        put(
            "DeadLetterQueueSourceArn",
            message.dead_letter_source.clone(),
        );
    }
    let message_attributes = if request.message_attributes.is_empty() {
        Attributes::new()
    } else {
        message
            .attributes
            .iter()
            .filter(|(name, _)| wants_attribute(&request.message_attributes, name))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    Delivered {
        message_id: message.message_id.clone(),
        receipt_handle: cell.receipt(seq, message.generation),
        md5_of_body: message.md5.clone(),
        body: message.body.clone(),
        system_attributes: system,
        message_attributes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Model {
        Model::new("http://127.0.0.1:1", "us-east-1")
    }

    fn receive_now(max: usize) -> ReceiveRequest {
        ReceiveRequest {
            max_messages: max,
            system_attributes: vec!["All".into()],
            ..ReceiveRequest::default()
        }
    }

    fn body(text: &str) -> NewMessage {
        NewMessage {
            body: text.into(),
            ..NewMessage::default()
        }
    }

    #[tokio::test]
    async fn messages_come_back_after_their_visibility_timeout() {
        let model = model();
        let url = model
            .create_queue("q", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        model.send(&url, body("one")).unwrap();
        let first = model
            .receive(
                &url,
                &ReceiveRequest {
                    visibility_secs: Some(0),
                    ..receive_now(10)
                },
            )
            .await
            .unwrap();
        assert_eq!(first.len(), 1);
        let again = model.receive(&url, &receive_now(10)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].system_attributes["ApproximateReceiveCount"], "2");
        // The first receipt is stale now: deleting with it deletes nothing.
        model
            .delete_message(&url, &first[0].receipt_handle)
            .unwrap();
        assert_eq!(model.queue(&url).unwrap().counts().in_flight, 1);
        model
            .delete_message(&url, &again[0].receipt_handle)
            .unwrap();
        assert_eq!(
            model.queue(&url).unwrap().counts(),
            QueueCounts {
                visible: 0,
                in_flight: 0,
                delayed: 0
            }
        );
    }

    #[tokio::test]
    async fn redrive_moves_a_message_received_too_often() {
        let model = model();
        let dlq = model
            .create_queue("q-dlq", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let policy = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:q-dlq","maxReceiveCount":"2"}"#;
        let attributes = BTreeMap::from([("RedrivePolicy".to_owned(), policy.to_owned())]);
        let url = model
            .create_queue("q", &attributes, &BTreeMap::new())
            .unwrap();
        model.send(&url, body("poison")).unwrap();
        let zero = ReceiveRequest {
            visibility_secs: Some(0),
            ..receive_now(1)
        };
        assert_eq!(model.receive(&url, &zero).await.unwrap().len(), 1);
        assert_eq!(model.receive(&url, &zero).await.unwrap().len(), 1);
        assert!(model.receive(&url, &zero).await.unwrap().is_empty());
        let moved = model.receive(&dlq, &receive_now(1)).await.unwrap();
        assert_eq!(&*moved[0].body, "poison");
        assert!(moved[0].system_attributes["DeadLetterQueueSourceArn"].ends_with(":q"));
    }

    #[tokio::test]
    async fn fifo_groups_are_delivered_in_order_one_batch_at_a_time() {
        let model = model();
        let attributes = BTreeMap::from([
            ("FifoQueue".to_owned(), "true".to_owned()),
            ("ContentBasedDeduplication".to_owned(), "true".to_owned()),
        ]);
        let url = model
            .create_queue("q.fifo", &attributes, &BTreeMap::new())
            .unwrap();
        for text in ["a1", "b1", "a2", "a1"] {
            let group = text[..1].to_owned();
            model
                .send(
                    &url,
                    NewMessage {
                        body: text.into(),
                        group: Some(group),
                        ..NewMessage::default()
                    },
                )
                .unwrap();
        }
        let first = model.receive(&url, &receive_now(1)).await.unwrap();
        assert_eq!(&*first[0].body, "a1");
        // Group a is in flight: only b1 is available.
        let second = model.receive(&url, &receive_now(10)).await.unwrap();
        let bodies: Vec<&str> = second.iter().map(|d| &*d.body).collect();
        assert_eq!(bodies, ["b1"]);
        model
            .delete_message(&url, &first[0].receipt_handle)
            .unwrap();
        let third = model.receive(&url, &receive_now(10)).await.unwrap();
        let bodies: Vec<&str> = third.iter().map(|d| &*d.body).collect();
        // The second "a1" was a duplicate within the window.
        assert_eq!(bodies, ["a2"]);
    }

    #[tokio::test]
    async fn a_long_poll_wakes_when_a_message_arrives() {
        let model = Arc::new(model());
        let url = model
            .create_queue("q", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let poll = {
            let (model, url) = (model.clone(), url.clone());
            tokio::spawn(async move {
                let request = ReceiveRequest {
                    wait: Duration::from_secs(10),
                    ..receive_now(10)
                };
                let started = Instant::now();
                let got = model.receive(&url, &request).await.unwrap();
                (got.len(), started.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        model.send(&url, body("wake up")).unwrap();
        let (count, waited) = poll.await.unwrap();
        assert_eq!(count, 1);
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }

    #[test]
    fn receipts_of_other_queues_are_invalid() {
        let model = model();
        let a = model
            .create_queue("a", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let b = model
            .create_queue("b", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let handle = model.queue(&a).unwrap().receipt(1, 1);
        let err = model.delete_message(&b, &handle).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ReceiptInvalid);
        let err = model.delete_message(&b, "garbage").unwrap_err();
        assert_eq!(err.kind, ErrorKind::ReceiptInvalid);
    }

    #[tokio::test]
    async fn fanout_wraps_in_an_envelope_unless_raw() {
        let model = model();
        let topic = model.create_topic("t", &BTreeMap::new()).unwrap();
        let wrapped = model
            .create_queue("wrapped", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let raw = model
            .create_queue("raw", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        let arn = |url: &str| model.queue(url).unwrap().arn().to_owned();
        model
            .subscribe(&topic, "sqs", &arn(&wrapped), &BTreeMap::new())
            .unwrap();
        let raw_on = BTreeMap::from([("RawMessageDelivery".to_owned(), "true".to_owned())]);
        model.subscribe(&topic, "sqs", &arn(&raw), &raw_on).unwrap();
        let attributes = Attributes::from([(
            "client_id".to_owned(),
            MessageAttribute {
                data_type: "String".into(),
                string_value: Some("c1".into()),
                binary_value: None,
            },
        )]);
        let (id, _) = model
            .publish(
                &topic,
                Publication {
                    message: r#"{"a":1}"#.into(),
                    attributes,
                    ..Publication::default()
                },
            )
            .unwrap();
        let request = ReceiveRequest {
            message_attributes: vec!["All".into()],
            ..receive_now(10)
        };
        let got = model.receive(&wrapped, &request).await.unwrap();
        let envelope: serde_json::Value = serde_json::from_str(&got[0].body).unwrap();
        assert_eq!(envelope["Type"], "Notification");
        assert_eq!(envelope["MessageId"], id.as_str());
        assert_eq!(envelope["Message"], r#"{"a":1}"#);
        assert_eq!(envelope["MessageAttributes"]["client_id"]["Value"], "c1");
        assert!(got[0].message_attributes.is_empty());
        let got = model.receive(&raw, &request).await.unwrap();
        assert_eq!(&*got[0].body, r#"{"a":1}"#);
        assert_eq!(
            got[0].message_attributes["client_id"]
                .string_value
                .as_deref(),
            Some("c1")
        );
    }

    #[test]
    fn ids_look_like_uuids_and_differ() {
        let ids = IdGen::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
    }
}
