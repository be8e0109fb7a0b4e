//! `ReceiptSink` over an SNS topic: delivery receipts (docs/control-plane.md) published
//! with `PublishBatch`, String attributes `outcome` (and `client_id` when
//! the Command named one).
//!
//! Recording never waits: a receipt goes into a bounded queue (full: it is
//! dropped and counted), a background task batches what arrives within a
//! short linger (up to ten entries), sends up to four batches at once and
//! retries the entries SNS did not take. `flush` waits for everything
//! queued so far, for a graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_sdk_sns::Client;
use std::sync::atomic::{AtomicU64, Ordering};

use domain::stats::Stats;
use domain::{DeliveryReceipt, ReceiptSink};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

use crate::classify::describe;

/// SNS's limit on entries in one `PublishBatch`.
const BATCH_LIMIT: usize = 10;
/// Receipts waiting to be published; beyond it they are dropped.
const QUEUE: usize = 10_000;
/// How long the first receipt of a batch waits for company.
const LINGER: Duration = Duration::from_millis(20);
/// Batches in flight at once.
const IN_FLIGHT: u32 = 4;
/// Attempts per entry, the first included.
const ATTEMPTS: u32 = 4;

enum Request {
    Record(DeliveryReceipt),
    Flush(oneshot::Sender<()>),
}

/// Publishes delivery receipts to one SNS topic (cheap to clone).
#[derive(Debug, Clone)]
pub struct SnsReceiptSink {
    queue: mpsc::Sender<Request>,
    stats: Arc<Stats>,
}

impl SnsReceiptSink {
    /// Starts the publishing task on the current runtime.
    pub fn spawn(client: Client, topic_arn: impl Into<String>, stats: Arc<Stats>) -> Self {
        let (queue, requests) = mpsc::channel(QUEUE);
        let publisher = Publisher {
            client,
            topic_arn: topic_arn.into(),
            stats: stats.clone(),
        };
        tokio::spawn(publisher.run(requests));
        Self { queue, stats }
    }

    /// Waits until every receipt recorded before the call has been
    /// published or given up.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Request::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

impl ReceiptSink for SnsReceiptSink {
    fn record(&self, receipt: DeliveryReceipt) {
        if self.queue.try_send(Request::Record(receipt)).is_err() {
            bump(&self.stats.control.receipts_dropped, 1);
        }
    }
}

struct Publisher {
    client: Client,
    topic_arn: String,
    stats: Arc<Stats>,
}

impl Publisher {
    async fn run(self, mut requests: mpsc::Receiver<Request>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT as usize));
        while let Some(first) = requests.recv().await {
            let mut batch = Vec::with_capacity(BATCH_LIMIT);
            let mut flush = None;
            match first {
                Request::Record(receipt) => batch.push(receipt),
                Request::Flush(done) => flush = Some(done),
            }
            if flush.is_none() {
                let deadline = tokio::time::Instant::now() + LINGER;
                while batch.len() < BATCH_LIMIT {
                    match tokio::time::timeout_at(deadline, requests.recv()).await {
                        Ok(Some(Request::Record(receipt))) => batch.push(receipt),
                        Ok(Some(Request::Flush(done))) => {
                            flush = Some(done);
                            break;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            if !batch.is_empty() {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let this = this.clone();
                tokio::spawn(async move {
                    this.publish(batch).await;
                    drop(slot);
                });
            }
            if let Some(done) = flush {
                // Every batch before it holds a slot until it is answered.
                if let Ok(all) = slots.acquire_many(IN_FLIGHT).await {
                    drop(all);
                }
                let _ = done.send(());
            }
        }
    }

    /// Publishes one batch, retrying the entries that failed.
    async fn publish(&self, mut batch: Vec<DeliveryReceipt>) {
        for attempt in 1..=ATTEMPTS {
            let entries: Vec<PublishBatchRequestEntry> = batch
                .iter()
                .enumerate()
                .filter_map(|(i, receipt)| entry(i, receipt))
                .collect();
            let failed: Vec<usize> = match self
                .client
                .publish_batch()
                .topic_arn(&self.topic_arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await
            {
                Ok(out) => out
                    .failed()
                    .iter()
                    .filter_map(|f| f.id().parse().ok())
                    .collect(),
                Err(e) => {
                    debug!(error = %describe("PublishBatch", &e), attempt, "receipts not published");
                    (0..batch.len()).collect()
                }
            };
            bump(
                &self.stats.control.receipts_published,
                (batch.len() - failed.len()) as u64,
            );
            if failed.is_empty() {
                return;
            }
            batch = batch
                .into_iter()
                .enumerate()
                .filter(|(i, _)| failed.contains(i))
                .map(|(_, receipt)| receipt)
                .collect();
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
        }
        warn!(
            receipts = batch.len(),
            "delivery receipts not published, given up"
        );
        bump(&self.stats.control.receipts_failed, batch.len() as u64);
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// The batch entry of one receipt (`None` only if SNS's builder refuses it).
fn entry(index: usize, receipt: &DeliveryReceipt) -> Option<PublishBatchRequestEntry> {
    let string = |value: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .ok()
    };
    let mut entry = PublishBatchRequestEntry::builder()
        .id(index.to_string())
        .message(receipt.body())
        .message_attributes("outcome", string(receipt.outcome.as_str())?);
    if let Some(client_id) = &receipt.client_id {
        entry = entry.message_attributes("client_id", string(client_id.as_str())?);
    }
    entry.build().ok()
}
