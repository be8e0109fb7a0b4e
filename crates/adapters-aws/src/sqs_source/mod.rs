//! `CommandSource` over an SQS queue. It counts its failures, deletes and
//! call latencies, and the outcome of its last receive, into the bridge's
//! [`AwsMetrics`]. What it learns of the queue once (visibility timeout,
//! dead-letter queue) is in `queue`; the dead-letter entries in `dead_letter`.

mod dead_letter;
mod inbound;
mod queue;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName,
};
use aws_sdk_sqs::Client;
use domain::stats::Histogram;
use domain::{CommandSource, DeadLetter, InboundMessage, Receipt, SourceError};
use futures_util::future::join_all;
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::classify::{failure_reason, source_error};
use crate::metrics::AwsMetrics;
use crate::sdk::{SETTLE_ATTEMPT_TIMEOUT, SETTLE_TIMEOUT};
use crate::sqs_http::{BatchEntry, BatchFailure, CallError, SqsHttpClient};
use inbound::SYSTEM_ATTRIBUTES;
use queue::QueueFacts;

/// SQS's limit on entries in one batch call.
const BATCH_LIMIT: usize = 10;
/// Entry ids of a batch call: the entry's position in its chunk.
const ENTRY_IDS: [&str; BATCH_LIMIT] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
/// Longest visibility timeout SQS accepts (12 h).
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// How the queue is polled and settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsSourceSettings {
    /// Messages per receive (1..=10).
    pub max_messages: i32,
    /// Long-poll wait per receive (0..=20 s).
    pub wait_time: Duration,
    /// How many times a failed batch entry is retried before giving up.
    pub settle_retries: u32,
    /// Where given-up messages go, instead of the queue's RedrivePolicy
    /// target.
    pub dead_letter_queue_url: Option<String>,
}

impl Default for SqsSourceSettings {
    fn default() -> Self {
        Self {
            max_messages: 10,
            wait_time: Duration::from_secs(20),
            settle_retries: 3,
            dead_letter_queue_url: None,
        }
    }
}

/// Receives Commands from one SQS queue.
#[derive(Debug)]
pub struct SqsCommandSource {
    client: Client,
    /// The same client with a short budget per call, for deletes,
    /// visibility changes and dead-letter sends: a black-holed endpoint
    /// must not pin a poller in its settle for minutes.
    settle_client: Client,
    /// When set, receives, deletes and visibility changes go through it
    /// instead of the SDK (which keeps every other call).
    http: Option<SqsHttpClient>,
    queue_url: String,
    settings: SqsSourceSettings,
    /// The queue's visibility timeout and dead-letter queue, learnt once.
    facts: OnceCell<QueueFacts>,
    /// Set after the first receive, which does not wait: readiness is known
    /// at start instead of after a whole long-poll of an empty queue.
    warmed_up: AtomicBool,
    /// Where failures, deletes and the last receive are recorded.
    metrics: AwsMetrics,
    /// Latency of each SQS operation (histograms of `metrics`).
    calls: SqsCalls,
}

/// The latency histogram of each SQS operation the source makes.
#[derive(Debug)]
struct SqsCalls {
    receive: Arc<Histogram>,
    delete: Arc<Histogram>,
    change_visibility: Arc<Histogram>,
    get_attributes: Arc<Histogram>,
    send_dead_letters: Arc<Histogram>,
}

impl SqsCalls {
    fn new(metrics: &AwsMetrics) -> Self {
        Self {
            receive: metrics.call("sqs", "ReceiveMessage"),
            delete: metrics.call("sqs", "DeleteMessageBatch"),
            change_visibility: metrics.call("sqs", "ChangeMessageVisibilityBatch"),
            get_attributes: metrics.call("sqs", "GetQueueAttributes"),
            send_dead_letters: metrics.call("sqs", "SendMessageBatch"),
        }
    }
}

/// Runs `call`, recording how long it took (answered or failed) in `histogram`.
async fn timed<T>(histogram: &Histogram, call: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = call.await;
    histogram.record(started.elapsed());
    out
}

impl SqsCommandSource {
    /// A source over `queue_url`, using an already configured client. It
    /// records into metrics of its own until [`SqsCommandSource::with_metrics`].
    pub fn new(client: Client, queue_url: impl Into<String>, settings: SqsSourceSettings) -> Self {
        let metrics = AwsMetrics::default();
        let settle_config = client
            .config()
            .to_builder()
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(SETTLE_ATTEMPT_TIMEOUT)
                    .operation_timeout(SETTLE_TIMEOUT)
                    .build(),
            )
            .build();
        Self {
            settle_client: Client::from_conf(settle_config),
            client,
            http: None,
            queue_url: queue_url.into(),
            settings,
            facts: OnceCell::new(),
            warmed_up: AtomicBool::new(false),
            calls: SqsCalls::new(&metrics),
            metrics,
        }
    }

    /// Records receive and settle failures, deletes, the last receive's
    /// outcome and the latency of every SQS call (service `sqs`) into the
    /// bridge's `metrics`.
    pub fn with_metrics(mut self, metrics: AwsMetrics) -> Self {
        self.calls = SqsCalls::new(&metrics);
        self.metrics = metrics;
        self
    }

    /// Sends the three hot calls (ReceiveMessage, DeleteMessageBatch,
    /// ChangeMessageVisibilityBatch) through `http` instead of the SDK.
    pub fn with_http_client(mut self, http: SqsHttpClient) -> Self {
        self.http = Some(http);
        self
    }

    /// The metrics this source records into.
    pub fn metrics(&self) -> &AwsMetrics {
        &self.metrics
    }

    /// The queue this source reads.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// The queue's facts, learnt at the first call that needs them (and
    /// asked again after a failure).
    async fn facts(&self) -> Result<&QueueFacts, SourceError> {
        self.facts
            .get_or_try_init(|| {
                timed(
                    &self.calls.get_attributes,
                    queue::learn(
                        &self.settle_client,
                        &self.queue_url,
                        self.settings.dead_letter_queue_url.as_deref(),
                    ),
                )
            })
            .await
    }

    /// Sends the messages to the dead-letter queue, then deletes from the
    /// source those whose send succeeded; without a dead-letter queue,
    /// deletes them.
    async fn give_up(&self, letters: Vec<DeadLetter>) -> Result<(), SourceError> {
        let facts = self.facts().await?;
        // The downlink has logged each one (id, reason, body); here only
        // where they went.
        for letter in &letters {
            debug!(
                message_id = %letter.message.message_id,
                reason = letter.reason.as_str(),
                dead_letter_queue = facts.dead_letter_url.as_deref().unwrap_or("none: deleted"),
                "command given up"
            );
        }
        let Some(dlq) = facts.dead_letter_url.as_deref() else {
            return self
                .delete(letters.into_iter().map(|l| l.message.receipt).collect())
                .await;
        };
        let sends = dead_letter::batches(&letters)
            .into_iter()
            .map(|chunk| self.send_dead_letters(dlq, facts.dead_letter_fifo, chunk));
        let mut sent = Vec::new();
        let mut failure = None;
        for result in join_all(sends).await {
            match result {
                Ok((delivered, failed)) => {
                    sent.extend(delivered);
                    if let Some(reason) = failed {
                        failure = Some(reason);
                    }
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
        // Only what the dead-letter queue holds now leaves the source; the
        // rest comes back after its visibility timeout and is given up again.
        let deleted = if sent.is_empty() {
            Ok(())
        } else {
            self.delete(sent).await
        };
        match failure {
            Some(reason) => Err(SourceError::Unavailable(format!(
                "SendMessageBatch (dead-letter queue): {reason}"
            ))),
            None => deleted,
        }
    }

    /// One SendMessageBatch (ten letters, 256 KiB at most): the receipts of those
    /// sent, and the first failure's reason if some were not.
    async fn send_dead_letters(
        &self,
        dlq: &str,
        fifo: bool,
        chunk: &[DeadLetter],
    ) -> Result<(Vec<Receipt>, Option<String>), SourceError> {
        let entries = chunk
            .iter()
            .zip(ENTRY_IDS)
            .map(|(letter, id)| dead_letter::entry(id, letter, fifo))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SourceError::Unavailable)?;
        let call = self
            .settle_client
            .send_message_batch()
            .queue_url(dlq)
            .set_entries(Some(entries))
            .send();
        let out = timed(&self.calls.send_dead_letters, call)
            .await
            .map_err(|e| source_error("SendMessageBatch", e))?;
        let failed = failed_entries(out.failed());
        let reason = failed.first().map(|(_, _, reason)| reason.clone());
        let sent = chunk
            .iter()
            .zip(ENTRY_IDS)
            .filter(|(_, id)| !failed.iter().any(|(f, _, _)| f == id))
            .map(|(letter, _)| letter.message.receipt.clone())
            .collect();
        Ok((sent, reason))
    }

    /// A receive through the SDK; on failure, the error and `/ready`'s reason.
    async fn receive_sdk(
        &self,
        wait: Duration,
    ) -> Result<Vec<InboundMessage>, (SourceError, String)> {
        let mut call = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.settings.max_messages)
            .wait_time_seconds(wait.as_secs() as i32)
            // Kept so that a message given up reaches the dead-letter queue
            // with them.
            .message_attribute_names("All");
        for name in SYSTEM_ATTRIBUTES {
            call = call.message_system_attribute_names(MessageSystemAttributeName::from(name));
        }
        // Includes the long-poll wait: an idle queue reads as slow receives.
        match timed(&self.calls.receive, call.send()).await {
            Ok(out) => Ok(out
                .messages
                .unwrap_or_default()
                .into_iter()
                .filter_map(inbound::inbound)
                .collect()),
            Err(e) => {
                let reason = failure_reason("SQS", "ReceiveMessage", &e);
                Err((source_error("ReceiveMessage", e), reason))
            }
        }
    }

    /// A receive through the lean client.
    async fn receive_http(
        &self,
        http: &SqsHttpClient,
        wait: Duration,
    ) -> Result<Vec<InboundMessage>, (SourceError, String)> {
        let call = http.receive(
            &self.queue_url,
            self.settings.max_messages,
            wait,
            &SYSTEM_ATTRIBUTES,
            &["All"],
        );
        match timed(&self.calls.receive, call).await {
            Ok(messages) => Ok(messages
                .into_iter()
                .filter_map(inbound::from_wire)
                .collect()),
            Err(e) => Err((
                e.source_error("ReceiveMessage"),
                e.failure_reason("ReceiveMessage"),
            )),
        }
    }

    async fn delete(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        let receipts = distinct(receipts);
        let distinct = receipts.len() as u64;
        let result = self.delete_batches(receipts).await;
        let failed = match &result {
            Ok(()) => 0,
            Err(SourceError::Partial { failed, .. }) => failed.len() as u64,
            Err(_) => distinct,
        };
        self.metrics
            .deletes(distinct.saturating_sub(failed), failed);
        result
    }

    async fn delete_batches(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        if let Some(http) = &self.http {
            return self
                .in_batches("DeleteMessageBatch", receipts, |chunk| {
                    let entries = http_entries(chunk, None);
                    async move {
                        let call = http.delete_batch(&self.queue_url, entries);
                        http_failures("DeleteMessageBatch", timed(&self.calls.delete, call).await)
                    }
                })
                .await;
        }
        self.in_batches("DeleteMessageBatch", receipts, |chunk| {
            let entries = chunk
                .iter()
                .zip(ENTRY_IDS)
                .map(|(r, id)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(id)
                        .receipt_handle(r.token())
                        .build()
                })
                .collect::<Result<Vec<_>, _>>();
            async move {
                let entries = entries.map_err(|e| SourceError::Unavailable(e.to_string()))?;
                let call = self
                    .settle_client
                    .delete_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(entries))
                    .send();
                let out = timed(&self.calls.delete, call)
                    .await
                    .map_err(|e| source_error("DeleteMessageBatch", e))?;
                Ok(failed_entries(out.failed()))
            }
        })
        .await
    }

    async fn change_visibility(
        &self,
        receipts: Vec<Receipt>,
        delay: Duration,
    ) -> Result<(), SourceError> {
        let seconds = delay.min(MAX_VISIBILITY).as_secs_f64().ceil() as i32;
        if let Some(http) = &self.http {
            return self
                .in_batches(
                    "ChangeMessageVisibilityBatch",
                    distinct(receipts),
                    |chunk| {
                        let entries = http_entries(chunk, Some(seconds));
                        async move {
                            let call = http.change_visibility_batch(&self.queue_url, entries);
                            http_failures(
                                "ChangeMessageVisibilityBatch",
                                timed(&self.calls.change_visibility, call).await,
                            )
                        }
                    },
                )
                .await;
        }
        self.in_batches(
            "ChangeMessageVisibilityBatch",
            distinct(receipts),
            |chunk| {
                let entries = chunk
                    .iter()
                    .zip(ENTRY_IDS)
                    .map(|(r, id)| {
                        ChangeMessageVisibilityBatchRequestEntry::builder()
                            .id(id)
                            .receipt_handle(r.token())
                            .visibility_timeout(seconds)
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>();
                async move {
                    let entries = entries.map_err(|e| SourceError::Unavailable(e.to_string()))?;
                    let call = self
                        .settle_client
                        .change_message_visibility_batch()
                        .queue_url(&self.queue_url)
                        .set_entries(Some(entries))
                        .send();
                    let out = timed(&self.calls.change_visibility, call)
                        .await
                        .map_err(|e| source_error("ChangeMessageVisibilityBatch", e))?;
                    Ok(failed_entries(out.failed()))
                }
            },
        )
        .await
    }

    /// Runs a batch call over chunks of at most ten receipts, which must be
    /// [`distinct`]. Entry ids are positions in the chunk. Entries that failed
    /// through no fault of the request are retried alone; the others are never
    /// re-sent. `call` builds its request from the receipts before it returns
    /// the future, so no attempt copies them.
    async fn in_batches<F, Fut>(
        &self,
        operation: &'static str,
        receipts: Vec<Receipt>,
        call: F,
    ) -> Result<(), SourceError>
    where
        F: Fn(&[Receipt]) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<FailedEntry>, SourceError>>,
    {
        let chunks = receipts
            .chunks(BATCH_LIMIT)
            .map(|chunk| self.settle_chunk(operation, chunk, &call));
        let mut given_up: Vec<Receipt> = Vec::new();
        let mut last_reason = String::new();
        // The chunks go out together: a thousand acknowledgements a second
        // are a hundred calls, not a queue of them.
        for (failed, reason) in join_all(chunks).await {
            given_up.extend(failed);
            if let Some(reason) = reason {
                last_reason = reason;
            }
        }
        if given_up.is_empty() {
            Ok(())
        } else {
            Err(SourceError::Partial {
                failed: given_up,
                reason: format!("{operation}: {last_reason}"),
            })
        }
    }

    /// Settles one chunk of at most ten receipts, retrying entries that
    /// failed through no fault of the request; returns those given up and
    /// the last failure's reason.
    async fn settle_chunk<F, Fut>(
        &self,
        operation: &'static str,
        chunk: &[Receipt],
        call: &F,
    ) -> (Vec<Receipt>, Option<String>)
    where
        F: Fn(&[Receipt]) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<FailedEntry>, SourceError>>,
    {
        let mut given_up = Vec::new();
        let mut last_reason = None;
        let mut retry: Vec<Receipt>;
        let mut pending = chunk;
        let mut attempt = 0;
        while !pending.is_empty() {
            let failed = match call(pending).await {
                Ok(failed) => failed,
                Err(e) if attempt < self.settings.settle_retries => {
                    debug!(operation, error = %e, attempt, "batch call failed, retrying");
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
                Err(e) => {
                    last_reason = Some(e.to_string());
                    given_up.extend_from_slice(pending);
                    break;
                }
            };
            let mut next = Vec::new();
            for (id, sender_fault, reason) in failed {
                let Some(receipt) = id.parse::<usize>().ok().and_then(|i| pending.get(i)) else {
                    warn!(operation, entry = %id, "SQS reported a failure for an unknown entry");
                    continue;
                };
                last_reason = Some(reason);
                if sender_fault || attempt >= self.settings.settle_retries {
                    given_up.push(receipt.clone());
                } else {
                    next.push(receipt.clone());
                }
            }
            if !next.is_empty() {
                attempt += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            retry = next;
            pending = &retry;
        }
        (given_up, last_reason)
    }
}

type FailedEntry = (String, bool, String);

/// `receipts` with each one once, first occurrences in order. moto refuses a
/// whole batch that repeats a receipt handle (`BatchEntryIdsNotDistinct`)
/// even under distinct entry ids, and settling one message twice is
/// pointless anyway.
fn distinct(receipts: Vec<Receipt>) -> Vec<Receipt> {
    if receipts.len() < 2 {
        return receipts;
    }
    let first: Vec<bool> = {
        let mut seen = HashSet::with_capacity(receipts.len());
        receipts.iter().map(|r| seen.insert(r.token())).collect()
    };
    if first.iter().all(|&f| f) {
        return receipts;
    }
    receipts
        .into_iter()
        .zip(first)
        .filter_map(|(r, first)| first.then_some(r))
        .collect()
}

/// The failed entries of a batch answer, as (entry id, sender's fault, reason).
fn failed_entries(failed: &[BatchResultErrorEntry]) -> Vec<FailedEntry> {
    failed
        .iter()
        .map(|f| {
            (
                f.id().to_owned(),
                f.sender_fault(),
                describe_entry(f.code(), f.message()),
            )
        })
        .collect()
}

/// Batch entries of the lean client: ids are positions in the chunk.
fn http_entries(chunk: &[Receipt], visibility: Option<i32>) -> Vec<BatchEntry> {
    chunk
        .iter()
        .zip(ENTRY_IDS)
        .map(|(r, id)| BatchEntry {
            id,
            receipt_handle: r.token().to_owned(),
            visibility_timeout: visibility,
        })
        .collect()
}

/// The lean client's batch answer as the source's failed entries.
fn http_failures(
    operation: &str,
    answer: Result<Vec<BatchFailure>, CallError>,
) -> Result<Vec<FailedEntry>, SourceError> {
    let failed = answer.map_err(|e| e.source_error(operation))?;
    Ok(failed
        .into_iter()
        .map(|f| {
            let reason = describe_entry(&f.code, f.message.as_deref());
            (f.id, f.sender_fault, reason)
        })
        .collect())
}

fn describe_entry(code: &str, message: Option<&str>) -> String {
    match message {
        Some(message) => format!("{code}: {message}"),
        None => code.to_owned(),
    }
}

fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(50) * 2u32.saturating_pow(attempt.min(6));
    let jitter = Duration::from_millis(rand::random_range(0..50));
    base + jitter
}

#[async_trait]
impl CommandSource for SqsCommandSource {
    async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
        let wait = if self.warmed_up.load(Ordering::Relaxed) {
            self.settings.wait_time
        } else {
            Duration::ZERO
        };
        let received = match &self.http {
            Some(http) => self.receive_http(http, wait).await,
            None => self.receive_sdk(wait).await,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err((error, reason)) => {
                self.metrics.receive_failed(reason);
                return Err(error);
            }
        };
        self.metrics.receive_succeeded();
        if !self.warmed_up.swap(true, Ordering::Relaxed) {
            // Learnt at start, so a missing dead-letter queue is warned
            // about before the first Command is given up.
            if let Err(error) = self.facts().await {
                warn!(%error, "cannot read the command queue's attributes yet");
            }
        }
        Ok(messages)
    }

    async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        self.metrics.settled(self.delete(receipts).await)
    }

    async fn release(&self, receipts: Vec<Receipt>, delay: Duration) -> Result<(), SourceError> {
        self.metrics
            .settled(self.change_visibility(receipts, delay).await)
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>) -> Result<(), SourceError> {
        self.metrics.settled(self.give_up(letters).await)
    }

    async fn visibility_timeout(&self) -> Option<Duration> {
        match self.facts().await {
            Ok(facts) => Some(facts.visibility),
            Err(error) => {
                warn!(%error, "cannot read the command queue's visibility timeout");
                None
            }
        }
    }

    async fn extend(
        &self,
        receipts: Vec<Receipt>,
        visibility: Duration,
    ) -> Result<(), SourceError> {
        self.metrics
            .settled(self.change_visibility(receipts, visibility).await)
    }

    async fn max_receive_count(&self) -> Option<u32> {
        match self.facts().await {
            Ok(facts) => facts.max_receive_count,
            Err(error) => {
                warn!(%error, "cannot read the command queue's RedrivePolicy");
                None
            }
        }
    }
}
