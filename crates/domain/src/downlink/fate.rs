//! What becomes of a Command that is not handed off (docs/delivery.md), and how a
//! routed batch is settled with the source.
//!
//! - Its client has no connection here: the `retry` policy releases it
//!   until it is older than the retry window, then gives it up; `drop`
//!   deletes it — except a Command its client was handed and never
//!   acknowledged, which waits as under `retry`, its window counted from
//!   the release — or, handed back to the fleet by a replica that shut
//!   down ([`handed_back`](super::handed_back)), from its send.
//! - Its client is at its unacknowledged limit: it waits, parked here on a
//!   source that counts receives, else released.
//! - A release that the source would answer by moving the message to its
//!   dead-letter queue (receive count at `maxReceiveCount`) becomes a give
//!   up here, with the reason.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{debug, warn};

use super::handed_back::handed_back;
use super::{age, Arrival, BatchOutcome, CommandInHand, Downlink, ReceiptOf, Routing};
use super::{RetryRule, Undeliverable};
use crate::acks::{receive_limit_detail, Parked};
use crate::ports::{DeadLetter, GiveUpReason, InboundMessage, SourceError};
use crate::receipts::Outcome;
use crate::stats::bump;

/// How long a Command for a client at its limit of unacknowledged
/// deliveries waits when released, when the retry delay does not say.
const DEFER_DELAY: Duration = Duration::from_secs(5);

impl Downlink {
    /// The Command's client has no connection here.
    pub(super) fn not_handed_off(&self, command: CommandInHand, routing: &mut Routing) {
        let stats = &self.stats.downlink;
        // Not handed off: a later copy must not be taken for a duplicate.
        self.recent.forget(&command.dedup_key);
        let released_at = self.acks.released_since(&command.dedup_key);
        // Handed back by a replica that shut down while its client held it:
        // just published, so its window counts from the send.
        let marked = released_at.is_none() && handed_back(&command.message);
        let (rule, waited) = match (released_at, self.settings.undeliverable) {
            (Some(at), _) => (Some(self.settings.after_release), at.elapsed()),
            (None, _) if marked => (
                Some(self.settings.after_release),
                age(command.message.sent_at, routing.now),
            ),
            (None, Undeliverable::Retry { delay, window }) => (
                Some(RetryRule { delay, window }),
                age(command.message.sent_at, routing.now),
            ),
            (None, Undeliverable::Drop) => (None, Duration::ZERO),
        };
        match rule {
            Some(rule) if waited < rule.window => {
                debug!("client not connected here, released for a later attempt");
                bump(&stats.released, 1);
                let why = format!("client {} was not connected", command.client_id.as_str());
                self.release(command, rule.delay, &why, routing);
            }
            // Every replica without the client gets a handed-back copy; past
            // the window, under `drop`, each drops its own rather than
            // filling the dead-letter queue with one per replica.
            None => self.drop_undeliverable(command, routing),
            Some(_) if marked && self.settings.undeliverable == Undeliverable::Drop => {
                self.drop_undeliverable(command, routing);
            }
            Some(rule) => {
                warn!(window = ?rule.window, "client not connected within the retry window, command given up");
                let detail = format!(
                    "client {} was not connected within the retry window of {} s",
                    command.client_id.as_str(),
                    rule.window.as_secs()
                );
                self.give_up_undeliverable(command, &detail, routing);
            }
        }
    }

    /// Deletes a Command whose client is not here, counting it.
    fn drop_undeliverable(&self, command: CommandInHand, routing: &mut Routing) {
        // In fanout mode this is the normal fate of other replicas'
        // Commands: counted, not worth a warning each.
        debug!("client not connected here, command dropped");
        bump(&self.stats.downlink.undeliverable, 1);
        self.receipt(Outcome::Undeliverable, ReceiptOf::command(&command, None));
        routing.outcome.acknowledged.push(command.message.receipt);
    }

    /// The Command's client has its limit of unacknowledged deliveries: the
    /// Command waits behind the ones it holds.
    pub(super) fn defer(&self, parked: Parked, routing: &mut Routing, arrival: Arrival) {
        self.recent.forget(&parked.command.dedup_key);
        if arrival == Arrival::Parked {
            // Its slot was taken meanwhile: back to the head of the line.
            self.acks.unpark_failed(parked);
            return;
        }
        bump(&self.stats.downlink.deferred, 1);
        let parked = if routing.receive_limit.is_some() {
            let receipt = parked.command.message.receipt.clone();
            match self.acks.park(parked) {
                Ok(()) => {
                    debug!("client has its limit of unacknowledged deliveries, command parked");
                    routing.outcome.parked.push(receipt);
                    return;
                }
                Err(full) => *full,
            }
        } else {
            parked
        };
        debug!("client has its limit of unacknowledged deliveries, command deferred");
        let command = parked.command;
        routing
            .outcome
            .deferred
            .push(command.message.receipt.clone());
        let why = format!(
            "client {} was at its unacknowledged limit",
            command.client_id.as_str()
        );
        self.release(command, self.defer_delay(), &why, routing);
    }

    /// Releases the Command to be received again after `delay`, unless the
    /// source would then move it to its dead-letter queue without a reason.
    fn release(&self, command: CommandInHand, delay: Duration, why: &str, routing: &mut Routing) {
        match routing.receive_limit {
            Some(max) if command.message.receive_count >= max => {
                warn!(
                    receive_count = command.message.receive_count,
                    "at the queue's receive limit: given up rather than released"
                );
                let detail = receive_limit_detail(why, command.message.receive_count, max);
                self.give_up_undeliverable(command, &detail, routing);
            }
            _ => {
                let receipt = command.message.receipt.clone();
                if !routing.outcome.deferred.contains(&receipt) {
                    routing.outcome.released.push(receipt.clone());
                }
                routing.releases.push((receipt, delay));
            }
        }
    }

    fn give_up_undeliverable(&self, command: CommandInHand, detail: &str, routing: &mut Routing) {
        bump(&self.stats.downlink.undeliverable, 1);
        self.receipt(Outcome::DeadLettered, ReceiptOf::command(&command, None));
        self.acks.forget_release(&command.dedup_key);
        let message: InboundMessage = command.message;
        routing.give_up(DeadLetter::new(
            message,
            GiveUpReason::Undeliverable,
            detail,
        ));
    }

    /// Settles a routed batch with one call per kind of outcome (and per
    /// release delay).
    pub(super) async fn settle(&self, routing: Routing) -> BatchOutcome {
        let Routing {
            outcome,
            letters,
            mut releases,
            ..
        } = routing;
        let source = &self.source;
        if !outcome.acknowledged.is_empty() {
            let result = source.acknowledge(outcome.acknowledged.clone()).await;
            self.record_settle("acknowledge", result);
        }
        if self.draining.load(Ordering::Relaxed) {
            // Shutting down: another instance may hold the client.
            for (_, delay) in &mut releases {
                *delay = Duration::ZERO;
            }
        }
        releases.sort_by_key(|(_, delay)| *delay);
        for group in releases.chunk_by(|a, b| a.1 == b.1) {
            let delay = group[0].1;
            let receipts = group.iter().map(|(r, _)| r.clone()).collect();
            let result = source.release(receipts, delay).await;
            self.record_settle("release", result);
        }
        if !letters.is_empty() {
            bump(&self.stats.downlink.dead_lettered, letters.len() as u64);
            let result = source.dead_letter(letters).await;
            self.record_settle("dead-letter", result);
        }
        outcome
    }

    /// How long a Command for a client at its limit of unacknowledged
    /// deliveries waits before it is received again.
    fn defer_delay(&self) -> Duration {
        match self.settings.undeliverable {
            Undeliverable::Retry { delay, .. } if !delay.is_zero() => delay,
            _ => DEFER_DELAY,
        }
    }

    fn record_settle(&self, what: &'static str, result: Result<(), SourceError>) {
        if let Err(error) = result {
            // The source hands unsettled messages out again; de-duplication
            // keeps a forwarded one from reaching its client twice. The
            // source adapter counts the failure.
            warn!(operation = what, %error, "settling messages failed");
        }
    }
}
