//! `EventSink` over an SNS topic, batching with `PublishBatch`.
//!
//! `publish` queues the event for a batcher task and waits for SNS's answer
//! about that one entry. The batcher takes what arrives within a short linger
//! (up to ten entries and 256 KiB), sends it, and retries entries that failed
//! through no fault of their own. Several batches may be in flight at once;
//! each connection publishes one message at a time, so per-client order holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_sdk_sns::Client;
use domain::stats::Histogram;
use domain::{EventSink, OutboundEvent, PublishError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use crate::classify::describe;
use crate::metrics::AwsMetrics;

/// SNS's limit on one message, and on a whole batch (256 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 262_144;
/// SNS's limit on entries in one `PublishBatch`.
const BATCH_LIMIT: usize = 10;

/// How the sink batches and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsSinkSettings {
    /// How long the first event of a batch waits for company.
    pub linger: Duration,
    /// Retries of an entry that failed transiently (whole-call retries of
    /// throttling and 5xx are done by the SDK itself).
    pub entry_retries: u32,
    /// Batches in flight at once.
    pub max_in_flight: usize,
    /// Events waiting for a batch before `publish` itself waits.
    pub queue_capacity: usize,
    /// How long `publish` waits for room in a full queue (SNS slow or
    /// unreachable) before it answers `Unavailable`: a client message is
    /// then answered with an error, never left waiting for good.
    pub enqueue_wait: Duration,
}

impl Default for SnsSinkSettings {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            entry_retries: 3,
            max_in_flight: 16,
            queue_capacity: 4096,
            enqueue_wait: Duration::from_secs(15),
        }
    }
}

type Answer = oneshot::Sender<Result<(), PublishError>>;

enum Request {
    Publish(OutboundEvent, Answer),
    Flush(oneshot::Sender<()>),
}

/// Publishes client events to one SNS topic.
#[derive(Debug, Clone)]
pub struct SnsEventSink {
    requests: mpsc::Sender<Request>,
    enqueue_wait: Duration,
}

impl SnsEventSink {
    /// Starts the batcher on the current tokio runtime. It runs until every
    /// clone of the sink is dropped, after sending what it holds.
    pub fn spawn(client: Client, topic_arn: impl Into<String>, settings: SnsSinkSettings) -> Self {
        Self::spawn_with_metrics(client, topic_arn, settings, AwsMetrics::default())
    }

    /// [`SnsEventSink::spawn`], recording the latency of every SNS call into
    /// the bridge's `metrics` (service `sns`).
    pub fn spawn_with_metrics(
        client: Client,
        topic_arn: impl Into<String>,
        settings: SnsSinkSettings,
        metrics: AwsMetrics,
    ) -> Self {
        let (requests, inbox) = mpsc::channel(settings.queue_capacity.max(1));
        let topic_arn = topic_arn.into();
        let publisher = Publisher {
            client,
            fifo: topic_arn.ends_with(".fifo"),
            topic_arn,
            instance: rand::random(),
            sequence: AtomicU64::new(0),
            entry_retries: settings.entry_retries,
            publish_latency: metrics.call("sns", "PublishBatch"),
        };
        let enqueue_wait = settings.enqueue_wait;
        let batcher = Batcher {
            publisher: Arc::new(publisher),
            settings,
        };
        tokio::spawn(batcher.run(inbox));
        Self {
            requests,
            enqueue_wait,
        }
    }

    /// Waits until every event queued before this call has been answered.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.requests.send(Request::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

#[async_trait]
impl EventSink for SnsEventSink {
    async fn publish(&self, event: OutboundEvent) -> Result<(), PublishError> {
        let size = event_size(&event);
        if size > MAX_PAYLOAD_BYTES {
            return Err(PublishError::Rejected(format!(
                "event is {size} bytes, SNS takes at most {MAX_PAYLOAD_BYTES}"
            )));
        }
        let (answer, wait) = oneshot::channel();
        let enqueue = self.requests.send(Request::Publish(event, answer));
        match tokio::time::timeout(self.enqueue_wait, enqueue).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(PublishError::Unavailable("event sink is shut down".into())),
            Err(_) => {
                return Err(PublishError::Unavailable(format!(
                "event sink saturated: no room in its queue within {:?} (SNS slow or unreachable)",
                self.enqueue_wait
            )))
            }
        }
        wait.await
            .unwrap_or_else(|_| Err(PublishError::Unavailable("event sink stopped".into())))
    }
}

fn event_size(event: &OutboundEvent) -> usize {
    event.body.len()
        + "client_id".len()
        + event.client_id.as_str().len()
        + "action".len()
        + event.action.len()
        + 2 * "String".len()
}

struct Batcher {
    publisher: Arc<Publisher>,
    settings: SnsSinkSettings,
}

impl Batcher {
    async fn run(self, mut inbox: mpsc::Receiver<Request>) {
        let in_flight = Arc::new(Semaphore::new(self.settings.max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        let mut carried: Option<(OutboundEvent, Answer)> = None;
        loop {
            let first = match carried.take() {
                Some(entry) => entry,
                None => match inbox.recv().await {
                    Some(Request::Publish(event, answer)) => (event, answer),
                    Some(Request::Flush(done)) => {
                        while tasks.join_next().await.is_some() {}
                        let _ = done.send(());
                        continue;
                    }
                    None => break,
                },
            };
            let mut size = event_size(&first.0);
            let mut batch = vec![first];
            let mut flush = None;
            let deadline = Instant::now() + self.settings.linger;
            while batch.len() < BATCH_LIMIT {
                match tokio::time::timeout_at(deadline, inbox.recv()).await {
                    Ok(Some(Request::Publish(event, answer))) => {
                        let event_size = event_size(&event);
                        if size + event_size > MAX_PAYLOAD_BYTES {
                            carried = Some((event, answer));
                            break;
                        }
                        size += event_size;
                        batch.push((event, answer));
                    }
                    Ok(Some(Request::Flush(done))) => {
                        flush = Some(done);
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            // Reap finished sends so the set does not grow.
            while tasks.try_join_next().is_some() {}
            let permit = in_flight.clone().acquire_owned().await;
            let publisher = self.publisher.clone();
            tasks.spawn(async move {
                publisher.send(batch).await;
                drop(permit);
            });
            if let Some(done) = flush {
                if let Some(entry) = carried.take() {
                    let publisher = self.publisher.clone();
                    tasks.spawn(async move { publisher.send(vec![entry]).await });
                }
                while tasks.join_next().await.is_some() {}
                let _ = done.send(());
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

struct Publisher {
    client: Client,
    topic_arn: String,
    fifo: bool,
    /// Random per sink, so de-duplication ids never collide across restarts.
    instance: u64,
    sequence: AtomicU64,
    entry_retries: u32,
    publish_latency: Arc<Histogram>,
}

impl Publisher {
    async fn send(&self, mut batch: Vec<(OutboundEvent, Answer)>) {
        let mut attempt = 0;
        while !batch.is_empty() {
            let entries = batch
                .iter()
                .enumerate()
                .map(|(i, (event, _))| self.entry(i, event))
                .collect::<Result<Vec<_>, _>>();
            let entries = match entries {
                Ok(entries) => entries,
                Err(error) => {
                    let error = PublishError::Rejected(error.to_string());
                    for (_, answer) in batch {
                        let _ = answer.send(Err(error.clone()));
                    }
                    return;
                }
            };
            let started = std::time::Instant::now();
            let result = self
                .client
                .publish_batch()
                .topic_arn(&self.topic_arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await;
            self.publish_latency.record(started.elapsed());
            let output = match result {
                Ok(output) => output,
                Err(error) => {
                    // The SDK already retried throttling and transient errors.
                    // Each event's publisher logs the error where it handles it.
                    let error = PublishError::Unavailable(describe("PublishBatch", &error));
                    debug!(%error, entries = batch.len(), "publishing client events failed");
                    for (_, answer) in batch {
                        let _ = answer.send(Err(error.clone()));
                    }
                    return;
                }
            };
            let mut outcomes: Vec<Option<Result<(), PublishError>>> = vec![None; batch.len()];
            for ok in output.successful() {
                if let Some(slot) = ok
                    .id()
                    .and_then(|id| id.parse::<usize>().ok())
                    .and_then(|i| outcomes.get_mut(i))
                {
                    *slot = Some(Ok(()));
                }
            }
            for failed in output.failed() {
                let reason = format!("{}: {}", failed.code(), failed.message().unwrap_or(""));
                let Some(slot) = failed
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| outcomes.get_mut(i))
                else {
                    continue;
                };
                *slot = Some(Err(if failed.sender_fault() {
                    PublishError::Rejected(reason)
                } else {
                    PublishError::Unavailable(reason)
                }));
            }
            let mut retry = Vec::new();
            for ((event, answer), outcome) in batch.into_iter().zip(outcomes) {
                match outcome {
                    Some(Err(PublishError::Unavailable(reason)))
                        if attempt < self.entry_retries =>
                    {
                        debug!(%reason, attempt, "entry failed transiently, retrying");
                        retry.push((event, answer));
                    }
                    Some(result) => {
                        let _ = answer.send(result);
                    }
                    None => {
                        let _ = answer.send(Err(PublishError::Unavailable(
                            "SNS did not report on the entry".into(),
                        )));
                    }
                }
            }
            if !retry.is_empty() {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * 2u64.pow(attempt.min(6)))).await;
            }
            batch = retry;
        }
    }

    fn entry(
        &self,
        index: usize,
        event: &OutboundEvent,
    ) -> Result<PublishBatchRequestEntry, aws_sdk_sns::error::BuildError> {
        let string = |value: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
        };
        let mut entry = PublishBatchRequestEntry::builder()
            .id(index.to_string())
            .message(&event.body)
            .message_attributes("client_id", string(event.client_id.as_str())?)
            .message_attributes("action", string(&event.action)?);
        if self.fifo {
            // One group per client keeps each client's events in order.
            let n = self.sequence.fetch_add(1, Ordering::Relaxed);
            entry = entry
                .message_group_id(event.client_id.as_str())
                .message_deduplication_id(format!("{:016x}-{n}", self.instance));
        }
        entry.build()
    }
}
