//! Client-acknowledged delivery (SPEC §3, `ack=true`): a Command handed to a
//! connection that opted in waits here, receipt in hand, until the client
//! answers `{"ack_delivery": "<id>"}` — then it is deleted from the source —
//! or until the ack timeout — then it is released to be delivered again.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::client_id::ClientId;
use crate::dedup::RecentIds;
use crate::ports::{CommandSource, Frame, Receipt, SourceError};
use crate::stats::{bump, Stats};

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
    /// already acknowledged, or timed out and released).
    #[error("no delivery {0:?} is waiting for an acknowledgement")]
    Unknown(String),
    /// The source could not delete the message; it will be delivered again.
    #[error("acknowledgement not recorded: {0}")]
    Source(SourceError),
}

struct Pending {
    client_id: ClientId,
    receipt: Receipt,
    dedup_key: String,
    deadline: Instant,
}

/// The deliveries waiting for a client's acknowledgement.
pub struct PendingAcks {
    source: Arc<dyn CommandSource>,
    recent: Arc<RecentIds>,
    stats: Arc<Stats>,
    timeout: Duration,
    next_id: AtomicU64,
    table: Mutex<HashMap<DeliveryId, Pending>>,
}

impl PendingAcks {
    pub(crate) fn new(
        source: Arc<dyn CommandSource>,
        recent: Arc<RecentIds>,
        stats: Arc<Stats>,
        timeout: Duration,
    ) -> Self {
        Self {
            source,
            recent,
            stats,
            timeout,
            next_id: AtomicU64::new(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh delivery id.
    pub(crate) fn next_id(&self) -> DeliveryId {
        DeliveryId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Keeps a handed-off message until its client acknowledges it.
    pub(crate) fn hold(
        &self,
        id: DeliveryId,
        client_id: ClientId,
        receipt: Receipt,
        dedup_key: String,
    ) {
        let deadline = Instant::now() + self.timeout;
        self.lock().insert(
            id,
            Pending {
                client_id,
                receipt,
                dedup_key,
                deadline,
            },
        );
    }

    /// The client acknowledged `delivery_id`: delete its message.
    pub async fn confirm(
        &self,
        client_id: &ClientId,
        delivery_id: &str,
    ) -> Result<(), ConfirmError> {
        let unknown = || ConfirmError::Unknown(delivery_id.to_owned());
        let id = DeliveryId::parse(delivery_id).ok_or_else(unknown)?;
        let pending = {
            let mut table = self.lock();
            // A client may only acknowledge its own deliveries.
            match table.get(&id) {
                Some(p) if &p.client_id == client_id => table.remove(&id),
                _ => None,
            }
        }
        .ok_or_else(unknown)?;
        bump(&self.stats.downlink.acknowledged_by_client, 1);
        self.source
            .acknowledge(vec![pending.receipt])
            .await
            .map_err(ConfirmError::Source)
    }

    /// Releases every delivery whose acknowledgement is overdue, so it is
    /// received and delivered again; returns how many.
    pub async fn release_expired(&self) -> usize {
        let now = Instant::now();
        self.release_where(|p| p.deadline <= now, "acknowledgement timed out")
            .await
    }

    /// Releases every waiting delivery at once (shutdown).
    pub async fn release_all(&self) -> usize {
        self.release_where(|_| true, "released at shutdown").await
    }

    /// How many deliveries wait for an acknowledgement.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no delivery waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn release_where(&self, due: impl Fn(&Pending) -> bool, why: &'static str) -> usize {
        let released: Vec<Pending> = {
            let mut table = self.lock();
            let ids: Vec<DeliveryId> = table
                .iter()
                .filter(|(_, p)| due(p))
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| table.remove(id)).collect()
        };
        if released.is_empty() {
            return 0;
        }
        let count = released.len();
        let receipts = released
            .into_iter()
            .map(|p| {
                // Delivered again when it comes back: not a duplicate.
                self.recent.forget(&p.dedup_key);
                debug!(client_id = %p.client_id, reason = why, "delivery released");
                p.receipt
            })
            .collect();
        bump(&self.stats.downlink.ack_released, count as u64);
        if let Err(error) = self.source.release(receipts, Duration::ZERO).await {
            warn!(%error, "releasing unacknowledged deliveries failed");
        }
        count
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<DeliveryId, Pending>> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
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
