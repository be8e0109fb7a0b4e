//! Client-acknowledged delivery (docs/delivery.md, `ack=true`): a Command handed to a
//! connection that opted in waits here, receipt in hand, until the client
//! answers `{"ack_delivery": "<id>"}` — then it is deleted from the source —
//! or until the ack timeout — then it is released to be delivered again.
//! While it waits its message stays invisible: [`PendingAcks::tick`] extends
//! the visibility ahead of expiry, so the ack timeout is the only clock that
//! decides a redelivery.
//!
//! Also here: the Commands parked for a client at its limit ([`parking`]),
//! and the memory of released deliveries ([`released`]) that keeps the
//! `drop` policy off them and restarts their retry window; and how a
//! replica hands them all back to the fleet at shutdown ([`take_out`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::warn;

use crate::client_id::ClientId;
use crate::dedup::RecentIds;
use crate::ports::{ClientRegistry, CommandSource, Frame, InboundMessage, Receipt};
use crate::receipts::{command_id, DeliveryReceipt, Outcome, ReceiptSink};
use crate::stats::{bump, Stats};

mod extensions;
mod give_back;
mod keep_alive;
mod parking;
mod released;
mod table;
mod take_out;

use extensions::Extensions;
pub(crate) use give_back::receive_limit_detail;
pub use parking::Parked;
use parking::Parking;
use released::Released;
use table::{Held, Table};
pub use take_out::TakenOut;

/// Identifies one hand-off of one Command to the connections of its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(u64);

impl From<u64> for DeliveryId {
    fn from(n: u64) -> Self {
        Self(n)
    }
}

impl DeliveryId {
    /// Parses the id as the client sends it back.
    pub fn parse(text: &str) -> Option<Self> {
        text.parse().ok().map(Self)
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The frame an acknowledging connection gets:
/// `{"delivery_id": "<id>", "command": <the Command JSON as published>}`.
pub fn ack_frame(id: DeliveryId, command: &str) -> Frame {
    Frame::from(format!(r#"{{"delivery_id":"{id}","command":{command}}}"#))
}

/// Why an acknowledgement was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmError {
    /// No delivery with this id is waiting for this client (never sent,
    /// already acknowledged, released, or another client's).
    #[error("no delivery {0:?} is waiting for an acknowledgement")]
    Unknown(String),
}

/// What became of a received copy of a message whose de-duplication key a
/// held delivery owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CopyFate {
    /// No held delivery owns the key.
    NotHeld,
    /// The source handed the held message out again: the hold takes the new
    /// receipt (the only one that still settles it) and keeps it invisible.
    Adopted,
    /// Another message with the same key: a true duplicate of a Command
    /// that is held, safe to delete.
    Duplicate,
}

/// What one [`PendingAcks::tick`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// Overdue deliveries delivered again to the client's connections here.
    pub redelivered: usize,
    /// Overdue deliveries released to the source (no connection here took
    /// them again).
    pub released: usize,
    /// Deliveries whose visibility was extended.
    pub extended: usize,
}

/// Deliveries acknowledged with one call to the source.
const ACK_BATCH: usize = 10;

/// The deliveries waiting for a client's acknowledgement.
///
/// A delivery is entered before its frame is queued on any connection (so
/// an acknowledgement cannot outrun it), and leaves on the client's
/// acknowledgement (the message is deleted, in batches), on its ack timeout,
/// when its client's last acknowledging connection closes, or at shutdown
/// (the message is made visible again at once, and delivered again). While
/// it waits, the hold keeps the message invisible ([`PendingAcks::tick`])
/// and owns its de-duplication key: a redelivered copy is adopted, never
/// deleted as a duplicate.
pub struct PendingAcks {
    source: Arc<dyn CommandSource>,
    registry: Arc<dyn ClientRegistry>,
    recent: Arc<RecentIds>,
    stats: Arc<Stats>,
    timeout: Duration,
    max_per_client: usize,
    next_id: AtomicU64,
    table: Mutex<Table>,
    /// Receipts of acknowledged deliveries, not yet deleted.
    confirmed: Mutex<Vec<Receipt>>,
    /// The source's visibility timeout, asked once a delivery is held
    /// (until the source knows one: AMQP never does).
    visibility: OnceLock<Duration>,
    /// Called when an acknowledgement is waiting to be deleted.
    waker: OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Where acknowledgements are recorded as receipts, when they are on.
    receipts: OnceLock<Arc<dyn ReceiptSink>>,
    /// Extensions in flight, so that no release is undone by one.
    extensions: Extensions,
    /// Commands waiting for a free slot of their client.
    parking: Mutex<Parking>,
    /// Deliveries released unacknowledged, by de-duplication key.
    released: Mutex<Released>,
    /// How long a release is remembered: the retry window that then applies.
    release_memory: Duration,
}

impl PendingAcks {
    pub(crate) fn new(
        source: Arc<dyn CommandSource>,
        registry: Arc<dyn ClientRegistry>,
        recent: Arc<RecentIds>,
        stats: Arc<Stats>,
        timeout: Duration,
        max_per_client: usize,
        release_memory: Duration,
    ) -> Self {
        Self {
            source,
            registry,
            recent,
            stats,
            timeout,
            max_per_client: max_per_client.max(1),
            next_id: AtomicU64::new(1),
            table: Mutex::new(Table::default()),
            confirmed: Mutex::new(Vec::new()),
            visibility: OnceLock::new(),
            waker: OnceLock::new(),
            receipts: OnceLock::new(),
            extensions: Extensions::default(),
            parking: Mutex::new(Parking::default()),
            released: Mutex::new(Released::default()),
            release_memory,
        }
    }

    /// Receives after which the source moves a message to its dead-letter
    /// queue by itself, if it does (asked once).
    pub(crate) async fn receive_limit(&self) -> Option<u32> {
        // Not cached here: the source knows when it has read its queue.
        self.source.max_receive_count().await
    }

    /// When the Command of `dedup_key` was last released unacknowledged,
    /// if that is remembered.
    pub(crate) fn released_since(&self, dedup_key: &str) -> Option<Instant> {
        lock(&self.released).since(dedup_key)
    }

    /// The Command of `dedup_key` was delivered or given up.
    pub(crate) fn forget_release(&self, dedup_key: &str) {
        lock(&self.released).forget(dedup_key);
    }

    /// A fresh delivery id, for a Command that is not held.
    pub(crate) fn next_id(&self) -> DeliveryId {
        DeliveryId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// `wake` is called whenever an acknowledgement waits to be deleted,
    /// so the caller runs [`PendingAcks::settle_confirmed`] soon. Set once.
    pub fn set_waker(&self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.waker.set(Box::new(wake));
    }

    /// Enters a delivery of `message` to `client_id` before it is handed to
    /// any connection; `None` when the client already has its limit of
    /// unacknowledged deliveries (the Command must wait).
    pub(crate) fn reserve(
        &self,
        client_id: &ClientId,
        message: &InboundMessage,
        dedup_key: &str,
        frame: &Frame,
    ) -> Option<DeliveryId> {
        let mut table = self.lock();
        if table.count_of(client_id) >= self.max_per_client {
            return None;
        }
        let id = self.next_id();
        let now = Instant::now();
        table.insert(
            id,
            Held {
                client_id: client_id.clone(),
                receipt: message.receipt.clone(),
                message_id: message.message_id.clone(),
                message: message.clone(),
                dedup_key: dedup_key.to_owned(),
                frame: frame.clone(),
                deadline: now + self.timeout,
                received_at: now,
                visible_since: now,
            },
        );
        Some(id)
    }

    /// No connection awaits an acknowledgement of `id` after all.
    pub(crate) fn cancel(&self, id: DeliveryId) {
        self.lock().remove(id);
    }

    /// A message with `dedup_key` was received while that key is claimed:
    /// says whether it is a copy of a held delivery (adopted) or a duplicate.
    pub(crate) fn adopt_copy(&self, dedup_key: &str, message: &InboundMessage) -> CopyFate {
        let mut table = self.lock();
        let Some(id) = table.id_of_key(dedup_key) else {
            return CopyFate::NotHeld;
        };
        let Some(held) = table.get_mut(id) else {
            return CopyFate::NotHeld;
        };
        if held.message_id != message.message_id {
            return CopyFate::Duplicate;
        }
        held.receipt = message.receipt.clone();
        held.message = message.clone();
        held.visible_since = Instant::now();
        CopyFate::Adopted
    }

    /// The client acknowledged `delivery_id`: its message is deleted with
    /// the next [`PendingAcks::settle_confirmed`]. Never waits.
    pub fn confirm(&self, client_id: &ClientId, delivery_id: &str) -> Result<(), ConfirmError> {
        let unknown = || ConfirmError::Unknown(delivery_id.to_owned());
        let id = DeliveryId::parse(delivery_id).ok_or_else(unknown)?;
        let held = {
            let mut table = self.lock();
            // A client may only acknowledge its own deliveries.
            match table.get(id) {
                Some(held) if &held.client_id == client_id => table.remove(id),
                _ => None,
            }
        }
        .ok_or_else(unknown)?;
        bump(&self.stats.downlink.acknowledged_by_client, 1);
        if let Some(receipts) = self.receipts.get() {
            // The de-duplication key is the SNS message id when there was one.
            let sns_message_id =
                (held.dedup_key != held.message_id).then(|| held.dedup_key.clone());
            receipts.record(DeliveryReceipt {
                outcome: Outcome::Acknowledged,
                client_id: Some(held.client_id.clone()),
                message_id: held.message_id.clone(),
                sns_message_id,
                command_id: command_id(&held.frame),
                connections: None,
                at: SystemTime::now(),
            });
        }
        lock(&self.confirmed).push(held.receipt);
        if let Some(wake) = self.waker.get() {
            wake();
        }
        Ok(())
    }

    /// Records each acknowledgement as a receipt into `receipts`.
    pub(crate) fn set_receipts(&self, receipts: Arc<dyn ReceiptSink>) {
        let _ = self.receipts.set(receipts);
    }

    /// Deletes up to one batch of acknowledged deliveries' messages; returns
    /// how many it tried. A failed delete is logged (and counted by the
    /// source): the message comes back after its visibility timeout and is
    /// then deleted as a duplicate, since its key stays remembered.
    pub async fn settle_confirmed(&self) -> usize {
        let batch: Vec<Receipt> = {
            let mut confirmed = lock(&self.confirmed);
            let take = confirmed.len().min(ACK_BATCH);
            confirmed.drain(..take).collect()
        };
        let count = batch.len();
        if count > 0 {
            if let Err(error) = self.source.acknowledge(batch).await {
                warn!(%error, "deleting acknowledged deliveries failed");
            }
        }
        count
    }

    /// How many acknowledged deliveries wait to be deleted.
    pub fn confirmed_len(&self) -> usize {
        lock(&self.confirmed).len()
    }

    /// How often [`PendingAcks::tick`] should run: often enough to extend a
    /// message's visibility well before it lapses.
    pub fn tick_interval(&self) -> Duration {
        match self.visibility.get().copied() {
            Some(vt) => (vt / 6).clamp(Duration::from_millis(100), Duration::from_secs(1)),
            None => Duration::from_millis(250),
        }
    }

    /// Delivers every delivery whose acknowledgement is overdue again —
    /// to the client's connections here, from the hold, or, when none takes
    /// it, by releasing it to the source — and extends the visibility of
    /// those still waiting (and of the parked Commands) whose visibility is
    /// half spent.
    pub async fn tick(&self) -> Tick {
        let now = Instant::now();
        let (redelivered, released) = self.deliver_overdue(now).await;
        let extended = self.extend_due().await;
        self.stats
            .held_deliveries
            .store(self.len() as u64, Ordering::Relaxed);
        let window = u64::try_from(self.recent.window().as_millis()).unwrap_or(u64::MAX);
        self.stats.dedup_window_ms.store(window, Ordering::Relaxed);
        Tick {
            redelivered,
            released,
            extended,
        }
    }

    /// Delivers every overdue delivery again (here or through the source);
    /// returns how many.
    pub async fn release_expired(&self) -> usize {
        let tick = self.tick().await;
        tick.redelivered + tick.released
    }

    /// How many deliveries wait for an acknowledgement.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no delivery waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_frame_wraps_the_command_verbatim() {
        let frame = ack_frame(DeliveryId(42), r#"{"client_id":"a", "command":"x"}"#);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"delivery_id": "42", "command": {"client_id": "a", "command": "x"}})
        );
        assert_eq!(DeliveryId::parse("42"), Some(DeliveryId(42)));
        assert_eq!(DeliveryId::parse("x"), None);
    }
}
