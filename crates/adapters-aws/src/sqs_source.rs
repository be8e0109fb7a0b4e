//! `CommandSource` over an SQS queue. It counts its failures, deletes and
//! call latencies, and the outcome of its last receive, into the bridge's
//! [`AwsMetrics`].

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName, QueueAttributeName,
};
use aws_sdk_sqs::Client;
use domain::stats::Histogram;
use domain::{CommandSource, InboundMessage, Receipt, SourceError};
use tokio::sync::OnceCell;
use tracing::{debug, warn};

use crate::classify::{failure_reason, source_error};
use crate::metrics::AwsMetrics;

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
}

impl Default for SqsSourceSettings {
    fn default() -> Self {
        Self {
            max_messages: 10,
            wait_time: Duration::from_secs(20),
            settle_retries: 3,
        }
    }
}

/// Receives Commands from one SQS queue.
#[derive(Debug)]
pub struct SqsCommandSource {
    client: Client,
    queue_url: String,
    settings: SqsSourceSettings,
    /// Whether the queue has a redrive policy; learnt at the first reject.
    has_dead_letter_queue: OnceCell<bool>,
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
}

impl SqsCalls {
    fn new(metrics: &AwsMetrics) -> Self {
        Self {
            receive: metrics.call("sqs", "ReceiveMessage"),
            delete: metrics.call("sqs", "DeleteMessageBatch"),
            change_visibility: metrics.call("sqs", "ChangeMessageVisibilityBatch"),
            get_attributes: metrics.call("sqs", "GetQueueAttributes"),
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
        Self {
            client,
            queue_url: queue_url.into(),
            settings,
            has_dead_letter_queue: OnceCell::new(),
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

    /// The metrics this source records into.
    pub fn metrics(&self) -> &AwsMetrics {
        &self.metrics
    }

    /// The queue this source reads.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    async fn dead_letter_queue_configured(&self) -> Result<bool, SourceError> {
        self.has_dead_letter_queue
            .get_or_try_init(|| async {
                let call = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.queue_url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send();
                let attrs = timed(&self.calls.get_attributes, call)
                    .await
                    .map_err(|e| source_error("GetQueueAttributes", e))?;
                Ok(attrs
                    .attributes()
                    .is_some_and(|a| a.contains_key(&QueueAttributeName::RedrivePolicy)))
            })
            .await
            .copied()
    }

    /// Leaves the messages for the dead-letter queue when there is one,
    /// else deletes them.
    async fn reject_messages(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        if self.dead_letter_queue_configured().await? {
            // Left invisible: it comes back after the visibility timeout and
            // the queue's redrive policy moves it once maxReceiveCount is hit.
            return Ok(());
        }
        self.delete(receipts).await
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
                    .client
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
                        .client
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
        let mut given_up: Vec<Receipt> = Vec::new();
        let mut last_reason = String::new();
        for chunk in receipts.chunks(BATCH_LIMIT) {
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
                        last_reason = e.to_string();
                        given_up.extend_from_slice(pending);
                        break;
                    }
                };
                let mut next = Vec::new();
                for (id, sender_fault, reason) in failed {
                    let Some(receipt) = id.parse::<usize>().ok().and_then(|i| pending.get(i))
                    else {
                        warn!(operation, entry = %id, "SQS reported a failure for an unknown entry");
                        continue;
                    };
                    last_reason = reason;
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
        let call = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.settings.max_messages)
            .wait_time_seconds(wait.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        // Includes the long-poll wait: an idle queue reads as slow receives.
        let out = match timed(&self.calls.receive, call).await {
            Ok(out) => out,
            Err(e) => {
                self.metrics
                    .receive_failed(failure_reason("SQS", "ReceiveMessage", &e));
                return Err(source_error("ReceiveMessage", e));
            }
        };
        self.metrics.receive_succeeded();
        self.warmed_up.store(true, Ordering::Relaxed);
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(inbound)
            .collect())
    }

    async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        self.metrics.settled(self.delete(receipts).await)
    }

    async fn release(&self, receipts: Vec<Receipt>, delay: Duration) -> Result<(), SourceError> {
        self.metrics
            .settled(self.change_visibility(receipts, delay).await)
    }

    async fn reject(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        self.metrics.settled(self.reject_messages(receipts).await)
    }
}

fn inbound(message: Message) -> Option<InboundMessage> {
    let system = message.attributes.as_ref();
    let attr = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name));
    let sent_at = attr(MessageSystemAttributeName::SentTimestamp)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let receive_count = attr(MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let message_id = message.message_id.unwrap_or_default();
    let Some(receipt) = message.receipt_handle else {
        warn!(%message_id, "SQS message without a receipt handle, skipped");
        return None;
    };
    Some(InboundMessage {
        message_id,
        body: message.body.unwrap_or_default(),
        receipt: Receipt::new(receipt),
        sent_at,
        receive_count,
    })
}
