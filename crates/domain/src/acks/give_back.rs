//! How held deliveries and parked Commands leave the bridge without an
//! acknowledgement: delivered again from the hold after the ack timeout,
//! else released to the source — or, when the source would move a released
//! message to its dead-letter queue on the next receive (its receive count
//! is at the queue's `maxReceiveCount`), given up here with the reason, so
//! no Command reaches the dead-letter queue without one (docs/delivery.md).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::{debug, warn};

use super::{lock, Held, Parked, PendingAcks};
use crate::client_id::ClientId;
use crate::ports::{DeadLetter, GiveUpReason, InboundMessage, Receipt};
use crate::receipts::{command_id, DeliveryReceipt, Outcome};
use crate::stats::bump;

/// Messages going back to the source, split by what the source does next.
#[derive(Default)]
struct GoingBack {
    release: Vec<Receipt>,
    letters: Vec<DeadLetter>,
}

impl PendingAcks {
    /// The overdue deliveries, delivered again. Redelivering from the hold
    /// (same message, same receipt, still invisible) rather than through
    /// the queue keeps a Command whose client is connected here from being
    /// received by another replica that does not hold the client.
    pub(super) async fn deliver_overdue(&self, now: Instant) -> (usize, usize) {
        let overdue = self.lock().take_where(|held| held.deadline <= now);
        if overdue.is_empty() {
            return (0, 0);
        }
        let mut redelivered = 0;
        let mut unanswered = Vec::new();
        let mut delete = Vec::new();
        for held in overdue {
            let id = self.next_id();
            // Entered first, as at the first delivery: an acknowledgement
            // cannot outrun it.
            let client_id = held.client_id.clone();
            let frame = held.frame.clone();
            self.lock().insert(
                id,
                Held {
                    deadline: now + self.timeout,
                    ..held
                },
            );
            let handoff = self.registry.deliver(&client_id, &frame, id);
            if handoff.awaiting_ack > 0 {
                debug!(%client_id, "acknowledgement timed out, delivered again");
                redelivered += 1;
                continue;
            }
            let Some(held) = self.lock().remove(id) else {
                // Acknowledged in between: nothing left to do.
                continue;
            };
            if handoff.immediate > 0 {
                // Only plain connections took it: at-most-once from here.
                delete.push(held.receipt);
            } else {
                debug!(%client_id, "acknowledgement timed out, released");
                unanswered.push(held);
            }
        }
        bump(&self.stats.downlink.ack_redelivered, redelivered as u64);
        if !delete.is_empty() {
            lock(&self.confirmed).extend(delete);
            if let Some(wake) = self.waker.get() {
                wake();
            }
        }
        let released = self.give_back(unanswered, Vec::new()).await;
        (redelivered, released)
    }

    /// The last acknowledging connection of `client_id` closed: its
    /// deliveries are released at once, so it gets them again when it
    /// reconnects, here or elsewhere; so are its parked Commands.
    pub async fn release_client(&self, client_id: &ClientId) -> usize {
        let held = self.lock().take_where(|held| &held.client_id == client_id);
        let parked = lock(&self.parking).take_where(|c| c == client_id);
        for held in &held {
            debug!(client_id = %held.client_id, "client disconnected: delivery released");
        }
        self.give_back(held, parked).await
    }

    /// Releases every waiting delivery and parked Command at once (shutdown).
    pub async fn release_all(&self) -> usize {
        let held = self.lock().take_where(|_| true);
        let parked = lock(&self.parking).take_where(|_| true);
        if !held.is_empty() {
            debug!(count = held.len(), "deliveries released at shutdown");
        }
        self.give_back(held, parked).await
    }

    /// Hands unacknowledged deliveries and parked Commands back to the
    /// source at once; returns how many held deliveries went back.
    pub(super) async fn give_back(&self, held: Vec<Held>, parked: Vec<Parked>) -> usize {
        if held.is_empty() && parked.is_empty() {
            return 0;
        }
        let limit = self.receive_limit().await;
        let mut back = GoingBack::default();
        let held_count = held.len();
        let now = Instant::now();
        for held in held {
            // Delivered again when it comes back: not a duplicate; and, its
            // client having been given it, never dropped (its window restarts).
            self.recent.forget(&held.dedup_key);
            lock(&self.released).record(&held.dedup_key, now, self.release_memory);
            let mut message = held.message;
            message.receipt = held.receipt;
            let detail = format!("client {} did not acknowledge it", held.client_id.as_str());
            self.sort(
                message,
                &held.client_id,
                &detail,
                limit,
                &mut back,
                &held.frame,
            );
        }
        for parked in parked {
            let command = parked.command;
            let detail = format!(
                "client {} was at its unacknowledged limit",
                command.client_id.as_str()
            );
            let (client_id, frame) = (&command.client_id, &command.frame);
            self.sort(command.message, client_id, &detail, limit, &mut back, frame);
        }
        bump(&self.stats.downlink.ack_released, held_count as u64);
        if !back.release.is_empty() {
            self.release_now(back.release).await;
        }
        if !back.letters.is_empty() {
            bump(
                &self.stats.downlink.dead_lettered,
                back.letters.len() as u64,
            );
            if let Err(error) = self.source.dead_letter(back.letters).await {
                warn!(%error, "giving up unacknowledged deliveries failed");
            }
        }
        held_count
    }

    /// Release, or give up when a release would reach the receive limit.
    fn sort(
        &self,
        message: InboundMessage,
        client_id: &ClientId,
        why: &str,
        limit: Option<u32>,
        back: &mut GoingBack,
        frame: &str,
    ) {
        match limit {
            Some(max) if message.receive_count >= max => {
                warn!(
                    message_id = %message.message_id,
                    receive_count = message.receive_count,
                    "at the queue's receive limit: given up rather than released"
                );
                if let Some(receipts) = self.receipts.get() {
                    receipts.record(DeliveryReceipt {
                        outcome: Outcome::DeadLettered,
                        client_id: Some(client_id.clone()),
                        message_id: message.message_id.clone(),
                        sns_message_id: None,
                        command_id: command_id(frame),
                        connections: None,
                        at: SystemTime::now(),
                    });
                }
                let detail = receive_limit_detail(why, message.receive_count, max);
                back.letters.push(DeadLetter::new(
                    message,
                    GiveUpReason::Undeliverable,
                    &detail,
                ));
            }
            _ => back.release.push(message.receipt),
        }
    }

    /// Makes the messages visible again at once.
    pub(super) async fn release_now(&self, receipts: Vec<Receipt>) {
        self.extensions.releasing(&receipts);
        if let Err(error) = self.source.release(receipts, Duration::ZERO).await {
            warn!(%error, "releasing unacknowledged deliveries failed");
        }
    }
}

/// The `wsbridge_detail` of a Command given up at the queue's receive limit.
pub(crate) fn receive_limit_detail(why: &str, receive_count: u32, max: u32) -> String {
    format!(
        "{why}; received {receive_count} times, the queue's maxReceiveCount is {max}: \
         released again it would reach the dead-letter queue without a reason"
    )
}
