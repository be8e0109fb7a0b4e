//! One queue: its identity ([`QueueCell`]) and its state behind a lock —
//! the messages, the visible ones in send order (`ready`), the invisible
//! ones by the instant they become visible again (`hidden`), FIFO groups in
//! flight, de-duplication ids, the redrive policy — with the bookkeeping
//! that keeps those sets consistent, the attributes `CreateQueue` and
//! `SetQueueAttributes` accept, and the receipt handles it issues.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use super::{lock, Attributes, QueueCounts, MAX_MESSAGE_BYTES, MAX_VISIBILITY_SECS};
use crate::error::{ApiError, ApiResult, ErrorKind};

/// A queue: its fixed identity, its state behind a lock, and the
/// notification its long polls wait on.
#[derive(Debug)]
pub struct QueueCell {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) url: String,
    pub(super) arn: String,
    pub(super) fifo: bool,
    pub(super) notify: Notify,
    pub(super) state: Mutex<Queue>,
}

#[derive(Debug, Clone)]
pub(super) struct Redrive {
    pub(super) target: String,
    pub(super) max_receive_count: u32,
}

#[derive(Debug)]
pub(super) struct Queue {
    pub(super) deleted: bool,
    pub(super) attributes: BTreeMap<String, String>,
    pub(super) tags: BTreeMap<String, String>,
    pub(super) created_secs: u64,
    pub(super) modified_secs: u64,
    pub(super) visibility_secs: u32,
    pub(super) delay_secs: u32,
    pub(super) receive_wait_secs: u32,
    pub(super) max_message_bytes: usize,
    pub(super) content_dedup: bool,
    pub(super) redrive: Option<Redrive>,
    pub(super) messages: HashMap<u64, Stored>,
    pub(super) ready: BTreeSet<u64>,
    pub(super) hidden: BTreeSet<(Instant, u64)>,
    pub(super) in_flight: usize,
    pub(super) inflight_groups: HashMap<String, usize>,
    pub(super) dedup: HashMap<String, (Instant, String)>,
    pub(super) next_seq: u64,
    pub(super) generation: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub(super) message_id: String,
    pub(super) body: Arc<str>,
    pub(super) md5: Arc<str>,
    pub(super) attributes: Attributes,
    pub(super) sent_millis: u64,
    pub(super) receive_count: u32,
    pub(super) first_receive_millis: Option<u64>,
    pub(super) group: Option<String>,
    pub(super) dedup_id: Option<String>,
    pub(super) hidden_until: Option<Instant>,
    pub(super) in_flight: bool,
    pub(super) generation: u64,
    pub(super) dead_letter_source: Option<String>,
}

/// The name at the end of a queue URL (`http://host/account/name`) or ARN.
pub(super) fn queue_name(url_or_arn: &str) -> &str {
    let tail = url_or_arn.trim_end_matches('/');
    let after_slash = tail.rsplit('/').next().unwrap_or(tail);
    after_slash.rsplit(':').next().unwrap_or(after_slash)
}

pub(super) fn valid_name(name: &str) -> bool {
    let stem = name.strip_suffix(".fifo").unwrap_or(name);
    !stem.is_empty()
        && name.len() <= 80
        && stem
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn parse_u32(
    name: &str,
    value: &str,
    range: std::ops::RangeInclusive<u32>,
) -> ApiResult<u32> {
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
    pub(super) fn new(now_secs: u64) -> Self {
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
    pub(super) fn promote(&mut self, now: Instant) {
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

    pub(super) fn apply_attribute(&mut self, name: &str, value: &str, fifo: bool) -> ApiResult<()> {
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

    pub(super) fn remove(&mut self, seq: u64) -> Option<Stored> {
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

    pub(super) fn counts(&self) -> QueueCounts {
        QueueCounts {
            visible: self.ready.len(),
            in_flight: self.in_flight,
            delayed: self.hidden.len() - self.in_flight,
        }
    }
}

pub(super) fn release_group(groups: &mut HashMap<String, usize>, group: &str) {
    if let Some(count) = groups.get_mut(group) {
        *count -= 1;
        if *count == 0 {
            groups.remove(group);
        }
    }
}

pub(super) fn parse_redrive(text: &str) -> ApiResult<Redrive> {
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

    pub(super) fn receipt(&self, seq: u64, generation: u64) -> String {
        format!("{:x}:{seq:x}:{generation:x}", self.id)
    }

    /// (sequence, generation) of a receipt handle issued for this queue.
    pub(super) fn parse_receipt(&self, handle: &str) -> ApiResult<(u64, u64)> {
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
