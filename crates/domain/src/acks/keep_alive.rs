//! Keeping held and parked messages invisible: their visibility is set
//! back to the queue's full timeout whenever half of it is spent, so the
//! source never hands out a copy of a message the bridge still owns
//! (docs/delivery.md), never past SQS's 12 h cap from the receive.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

use super::{lock, PendingAcks};
use crate::ports::Receipt;
use crate::stats::bump;

/// SQS's cap on a message's invisibility, counted from its receive.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

impl PendingAcks {
    /// Sets the visibility of every held or parked message whose visibility
    /// is half spent back to the full timeout (never past 12 h from its
    /// receive).
    pub(super) async fn extend_due(&self) -> usize {
        if self.is_empty() && self.parked_len() == 0 {
            return 0;
        }
        let visibility = match self.visibility.get() {
            Some(known) => *known,
            None => match self.source.visibility_timeout().await {
                Some(asked) => *self.visibility.get_or_init(|| asked),
                None => return 0,
            },
        };
        if visibility.is_zero() {
            return 0;
        }
        let now = Instant::now();
        // One call per distinct visibility (nearly always one), batched
        // across every held message that is due.
        let mut due: Vec<(Duration, Receipt)> = Vec::new();
        {
            let mut table = self.lock();
            let mut parking = lock(&self.parking);
            let held = table
                .iter_mut()
                .map(|h| (&mut h.visible_since, h.received_at, &h.receipt));
            let parked = parking.iter_mut().map(|p| {
                (
                    &mut p.visible_since,
                    p.received_at,
                    &p.command.message.receipt,
                )
            });
            for (visible_since, received_at, receipt) in held.chain(parked) {
                if now.saturating_duration_since(*visible_since) < visibility / 2 {
                    continue;
                }
                let left =
                    MAX_VISIBILITY.saturating_sub(now.saturating_duration_since(received_at));
                let extend_to = visibility.min(left);
                if extend_to < Duration::from_secs(1) {
                    continue;
                }
                *visible_since = now;
                due.push((extend_to, receipt.clone()));
            }
            // Marked before the table is unlocked: a release that takes one of
            // these from the table from now on is seen by the extension.
            self.extensions.begin(due.iter().map(|(_, r)| r.clone()));
        }
        if due.is_empty() {
            return 0;
        }
        due.sort_by_key(|(extend_to, _)| *extend_to);
        let mut extended = 0;
        for group in due.chunk_by(|a, b| a.0 == b.0) {
            let extend_to = group[0].0;
            let receipts: Vec<Receipt> = group.iter().map(|(_, r)| r.clone()).collect();
            let count = receipts.len();
            let result = self.source.extend(receipts.clone(), extend_to).await;
            match result {
                Ok(()) => extended += count,
                Err(error) => warn!(%error, "extending the visibility of held deliveries failed"),
            }
            let again = self.extensions.end(&receipts);
            if !again.is_empty() {
                debug!(
                    count = again.len(),
                    "released during their extension: released again"
                );
                if let Err(error) = self.source.release(again, Duration::ZERO).await {
                    warn!(%error, "releasing unacknowledged deliveries failed");
                }
            }
        }
        bump(&self.stats.downlink.visibility_extended, extended as u64);
        extended
    }
}
