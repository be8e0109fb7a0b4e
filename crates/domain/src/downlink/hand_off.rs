//! Handing a Command to its client's connections here — straight from the
//! source, or from the parking when its client has a free slot again.

use std::time::SystemTime;

use tracing::debug;

use super::{age, Arrival, Downlink, ReceiptOf, Routing};
use crate::acks::Parked;
use crate::envelope::parse_timestamp;
use crate::receipts::Outcome;
use crate::stats::bump;

impl Downlink {
    /// Hands a Command to its client's connections here; one that cannot be
    /// handed off follows the undeliverable rules, one for a client at its
    /// unacknowledged limit waits ([`Downlink::defer`]).
    pub(super) fn hand_off(&self, parked: Parked, routing: &mut Routing, arrival: Arrival) {
        let stats = &self.stats.downlink;
        let command = &parked.command;
        // Behind the client's parked Commands: they keep their order.
        if arrival == Arrival::Fresh && self.acks.has_parked(&command.client_id) {
            self.defer(parked, routing, arrival);
            return;
        }
        // Entered before any connection can see the frame, so an
        // acknowledgement cannot arrive before its delivery is known.
        let reserved = self.acks.reserve(
            &command.client_id,
            &command.message,
            &command.dedup_key,
            &command.frame,
        );
        let Some(delivery) = reserved else {
            self.defer(parked, routing, arrival);
            return;
        };
        let handoff = self
            .registry
            .deliver(&command.client_id, &command.frame, delivery);
        if handoff.awaiting_ack == 0 {
            self.acks.cancel(delivery);
        }
        if handoff.taken() == 0 {
            self.not_handed_off(parked.command, routing);
            return;
        }
        bump(&stats.forwarded, 1);
        self.acks.forget_release(&command.dedup_key);
        // Published (SNS Timestamp, else SQS SentTimestamp) → hand-off.
        let published = command.sns_timestamp.as_deref().and_then(parse_timestamp);
        self.stats.forward_latency.record(age(
            published.or(command.message.sent_at),
            SystemTime::now(),
        ));
        bump(&stats.frames_queued, handoff.taken() as u64);
        self.receipt(
            Outcome::Delivered,
            ReceiptOf::command(command, Some(handoff.taken())),
        );
        debug!(
            connections = handoff.taken(),
            awaiting_ack = handoff.awaiting_ack,
            "command forwarded"
        );
        let receipt = parked.command.message.receipt;
        if handoff.awaiting_ack > 0 {
            // Deleted when the client acknowledges; released on timeout.
            routing.outcome.held.push(receipt);
        } else {
            routing.outcome.acknowledged.push(receipt);
        }
    }

    /// Looks after the held and parked Commands (see [`PendingAcks::tick`])
    /// and hands out the parked ones whose client has a free slot again.
    /// Runs periodically, every [`PendingAcks::tick_interval`].
    pub async fn tend(&self) -> crate::acks::Tick {
        let tick = self.acks.tick().await;
        let ready = self.acks.take_parked_ready();
        if ready.is_empty() {
            return tick;
        }
        let mut routing = Routing::new(self.acks.receive_limit().await, SystemTime::now());
        for parked in ready {
            // The key was let go while parked: a copy forwarded meanwhile
            // makes this one a duplicate.
            if !self.recent.claim(&parked.command.dedup_key) {
                bump(&self.stats.downlink.duplicate, 1);
                let receipt = parked.command.message.receipt;
                routing.outcome.acknowledged.push(receipt);
                continue;
            }
            self.hand_off(parked, &mut routing, Arrival::Parked);
        }
        self.acks.parked_handed_out();
        self.settle(routing).await;
        tick
    }
}
