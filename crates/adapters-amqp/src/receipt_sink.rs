//! `domain::ReceiptSink` over an AMQP topic exchange, the RabbitMQ
//! counterpart of the SNS receipt sink (`adapters-aws`): delivery receipts
//! (docs/control-plane.md) published with routing key = the outcome (`delivered`,
//! `acknowledged`, `undeliverable`, `malformed`, `dead_lettered`), so a
//! binding selects outcomes, and headers `outcome` and `client_id` (when the
//! Command named one), for headers exchanges. The body is
//! [`DeliveryReceipt::body`].
//!
//! Recording never waits: a receipt goes into a bounded queue (full: it is
//! dropped and counted). A background task takes what has queued up, a
//! batch at a time, publishes it through the publishing core the event sink
//! uses (`confirmed.rs`: supervised connection, confirm-mode channel) and
//! retries the receipts the broker did not confirm. `flush` waits for
//! everything queued so far, for a graceful shutdown; `close` flushes, then
//! closes the connection.
//!
//! What it counts into the domain's `Stats` is what the SNS sink counts:
//! `receipts_published` per confirmed receipt, `receipts_failed` per receipt
//! given up after its attempts, `receipts_dropped` per receipt the full
//! queue refused.
//!
//! A connection of its own, beside the event sink's: the broker closes a
//! channel that publishes to a missing exchange, and a receipts exchange
//! nobody declared must not take the client events down with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use domain::{DeliveryReceipt, PublishError, ReceiptSink, Stats};
use futures_util::future::join_all;
use lapin::types::{AMQPValue, FieldTable, LongString};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

use crate::backoff::Reconnect;
use crate::bootstrap::DEFAULT_RECEIPTS_EXCHANGE;
use crate::confirmed::{ConfirmedPublisher, PublisherSettings};
use crate::metrics::{op, AmqpMetrics, Role};
use crate::url::AmqpUrl;

/// Most receipts published at once in one batch. AMQP has no batch
/// publish, but confirms pipeline on one channel: a batch costs about one
/// round trip, however many it holds.
const BATCH_LIMIT: usize = 100;
/// Batches in flight at once.
const IN_FLIGHT: u32 = 4;

/// How the receipt sink publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpReceiptSettings {
    /// The topic exchange receipts are published to (declared beforehand,
    /// e.g. by [`crate::bootstrap::ensure`]).
    pub exchange: String,
    /// Receipts waiting to be published; beyond it they are dropped.
    pub queue: usize,
    /// Attempts per receipt, the first included.
    pub attempts: u32,
    /// Pause after the first failed attempt, doubled after each next one.
    pub retry_pause: Duration,
    /// How long the broker may take to confirm a receipt.
    pub confirm_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// Pauses between reconnection attempts.
    pub reconnect: Reconnect,
    /// The connection's name on the broker.
    pub connection_name: String,
}

impl Default for AmqpReceiptSettings {
    fn default() -> Self {
        // Queue, attempts and pauses as the SNS receipt sink has them.
        Self {
            exchange: DEFAULT_RECEIPTS_EXCHANGE.to_owned(),
            queue: 10_000,
            attempts: 4,
            retry_pause: Duration::from_millis(200),
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            reconnect: Reconnect::default(),
            connection_name: "wsbridge-receipts".to_owned(),
        }
    }
}

enum Request {
    Record(DeliveryReceipt),
    Flush(oneshot::Sender<()>),
}

/// Publishes delivery receipts to one AMQP exchange.
///
/// Dropping it ends its publishing task once the queue is empty, and then
/// its connection.
#[derive(Debug)]
pub struct AmqpReceiptSink {
    queue: mpsc::Sender<Request>,
    stats: Arc<Stats>,
    publisher: Arc<ConfirmedPublisher>,
}

impl AmqpReceiptSink {
    /// Starts publishing to `settings.exchange` at `url`, connecting in the
    /// background and counting receipts into `stats`. Must be called within
    /// a tokio runtime, which must outlive the sink.
    pub fn spawn(url: AmqpUrl, settings: AmqpReceiptSettings, stats: Arc<Stats>) -> Self {
        Self::spawn_with_metrics(url, settings, stats, AmqpMetrics::default())
    }

    /// [`AmqpReceiptSink::spawn`], its link counted into `metrics` (shared
    /// with the command source and the event sink, exported by the app).
    pub fn spawn_with_metrics(
        url: AmqpUrl,
        settings: AmqpReceiptSettings,
        stats: Arc<Stats>,
        metrics: AmqpMetrics,
    ) -> Self {
        let publisher = Arc::new(ConfirmedPublisher::spawn(
            url,
            PublisherSettings {
                role: Role::Receipts,
                what: "receipt sink",
                exchange: settings.exchange,
                confirm_timeout: settings.confirm_timeout,
                connect_timeout: settings.connect_timeout,
                reconnect: settings.reconnect,
                connection_name: settings.connection_name,
                operation: op::PUBLISH_RECEIPT,
            },
            metrics,
        ));
        let (queue, requests) = mpsc::channel(settings.queue.max(1));
        let task = Publisher {
            publisher: publisher.clone(),
            stats: stats.clone(),
            attempts: settings.attempts.max(1),
            retry_pause: settings.retry_pause,
        };
        tokio::spawn(task.run(requests));
        Self {
            queue,
            stats,
            publisher,
        }
    }

    /// The exchange receipts go to.
    pub fn exchange(&self) -> &str {
        self.publisher.exchange()
    }

    /// Whether a publishing channel is open right now.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected()
    }

    /// Waits up to `timeout` for a publishing channel; says whether there is one.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.publisher.wait_connected(timeout).await
    }

    /// Waits until every receipt recorded before the call has been
    /// published or given up.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Request::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    /// Flushes, then closes the connection. Receipts recorded afterwards
    /// are given up (counted failed).
    pub async fn close(&self) {
        self.flush().await;
        self.publisher.close().await;
    }
}

impl ReceiptSink for AmqpReceiptSink {
    fn record(&self, receipt: DeliveryReceipt) {
        if self.queue.try_send(Request::Record(receipt)).is_err() {
            bump(&self.stats.control.receipts_dropped, 1);
        }
    }
}

/// The background task: takes receipts off the queue and publishes them.
struct Publisher {
    publisher: Arc<ConfirmedPublisher>,
    stats: Arc<Stats>,
    attempts: u32,
    retry_pause: Duration,
}

impl Publisher {
    async fn run(self, mut requests: mpsc::Receiver<Request>) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT as usize));
        while let Some(first) = requests.recv().await {
            let mut batch = Vec::new();
            let mut flush = None;
            match first {
                Request::Record(receipt) => batch.push(receipt),
                Request::Flush(done) => flush = Some(done),
            }
            // What is already waiting joins the batch; nothing waits for
            // company (unlike SNS there is no batch call to fill, and
            // confirms already pipeline).
            while flush.is_none() && batch.len() < BATCH_LIMIT {
                match requests.try_recv() {
                    Ok(Request::Record(receipt)) => batch.push(receipt),
                    Ok(Request::Flush(done)) => flush = Some(done),
                    Err(_) => break,
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

    /// Publishes one batch, retrying the receipts that were not confirmed.
    async fn publish(&self, mut batch: Vec<DeliveryReceipt>) {
        let mut pause = self.retry_pause;
        for attempt in 1..=self.attempts {
            let results = join_all(batch.iter().map(|receipt| self.publish_one(receipt))).await;
            let mut failed = Vec::new();
            let mut error = None;
            for (receipt, result) in batch.into_iter().zip(results) {
                if let Err(e) = result {
                    error = Some(e);
                    failed.push(receipt);
                }
            }
            batch = failed;
            if batch.is_empty() {
                return;
            }
            if let Some(error) = error {
                debug!(%error, attempt, receipts = batch.len(), "receipts not published");
            }
            if attempt < self.attempts {
                tokio::time::sleep(pause).await;
                pause = pause.saturating_mul(2);
            }
        }
        warn!(
            receipts = batch.len(),
            exchange = self.publisher.exchange(),
            "delivery receipts not published, given up"
        );
        bump(&self.stats.control.receipts_failed, batch.len() as u64);
    }

    /// Publishes one receipt, counting it when confirmed.
    async fn publish_one(&self, receipt: &DeliveryReceipt) -> Result<(), PublishError> {
        let outcome = receipt.outcome.as_str();
        let mut headers = FieldTable::default();
        headers.insert(
            "outcome".into(),
            AMQPValue::LongString(LongString::from(outcome)),
        );
        if let Some(client_id) = &receipt.client_id {
            headers.insert(
                "client_id".into(),
                AMQPValue::LongString(LongString::from(client_id.as_str())),
            );
        }
        // Outcome names are a few fixed words: always a valid short string.
        let published = self
            .publisher
            .publish(outcome.into(), headers, receipt.body().as_bytes())
            .await;
        if published.is_ok() {
            bump(&self.stats.control.receipts_published, 1);
        }
        published
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}
