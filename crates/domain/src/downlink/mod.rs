//! The downlink use case: receive → decode → de-duplicate → deliver →
//! acknowledge, release or reject. The delivery rules (docs/delivery.md) live here;
//! [`fate`] decides what becomes of a Command that is not handed off, and
//! settles a batch.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{debug, info_span, warn};

mod fate;
mod hand_off;
mod handed_back;
mod receipt;

use receipt::ReceiptOf;

use crate::acks::{CopyFate, Parked, PendingAcks};
use crate::client_id::ClientId;
use crate::command::{decode_sqs_body, DecodeError};
use crate::control::Control;
use crate::dedup::RecentIds;
use crate::ports::{
    ClientRegistry, CommandSource, DeadLetter, Frame, GiveUpReason, InboundMessage, Receipt,
    SourceError,
};
use crate::receipts::{Outcome, ReceiptSink};
use crate::stats::{bump, Stats};
use crate::text::truncate;

/// What to do with a Command whose client has no connection here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undeliverable {
    /// Release it to be received again after `delay`, until it is older than
    /// `window`; then delete it and count it as undeliverable.
    Retry {
        /// Delay before the message is visible again.
        delay: Duration,
        /// Age after which the Command is given up.
        window: Duration,
    },
    /// Delete it at once and count it as undeliverable.
    Drop,
}

/// How a Command waits for an absent client: released to be received again
/// after `delay`, until it is older than `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryRule {
    /// Delay before the message is visible again.
    pub delay: Duration,
    /// Age after which the Command is given up.
    pub window: Duration,
}

/// Settings of the downlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownlinkSettings {
    /// The policy for Commands of absent clients.
    pub undeliverable: Undeliverable,
    /// How many forwarded message ids are remembered for de-duplication.
    pub dedup_capacity: usize,
    /// How long a forwarded message id is remembered.
    pub dedup_ttl: Duration,
    /// How long a delivery to an acknowledging connection waits for the
    /// acknowledgement before it is released and delivered again; the
    /// message's visibility is extended meanwhile.
    pub ack_timeout: Duration,
    /// Unacknowledged deliveries one client may have at once; Commands for
    /// it beyond that wait (released, received again later), so a client
    /// that never acknowledges cannot take the source's whole window.
    pub max_unacked_per_client: usize,
    /// How a Command handed to an acknowledging connection and released
    /// without an acknowledgement waits for its client, whatever the
    /// policy (`drop` included): its window counts from the release.
    pub after_release: RetryRule,
}

/// How one batch was settled, for the caller's logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Receipts acknowledged (handed off, duplicate, or given up).
    pub acknowledged: Vec<Receipt>,
    /// Receipts released for a later attempt.
    pub released: Vec<Receipt>,
    /// Receipts of messages given up (malformed, undeliverable), sent to
    /// the dead-letter queue.
    pub dead_lettered: Vec<Receipt>,
    /// Receipts held until a client acknowledges the delivery.
    pub held: Vec<Receipt>,
    /// Receipts of Commands for a client that has its limit of
    /// unacknowledged deliveries, released to be received again later.
    pub deferred: Vec<Receipt>,
    /// Receipts of Commands for a client that has its limit of
    /// unacknowledged deliveries, parked here (visibility kept) until it
    /// has a free slot, on a source that counts receives.
    pub parked: Vec<Receipt>,
}

/// A decoded Command in the bridge's hands.
#[derive(Debug, Clone)]
pub struct CommandInHand {
    /// The message as received.
    pub message: InboundMessage,
    /// Its client.
    pub client_id: ClientId,
    /// The Command's JSON, as its client gets it.
    pub frame: Frame,
    /// The key the de-duplication memory knows it by.
    pub dedup_key: String,
    /// The SNS message id, when it came in an envelope.
    pub sns_message_id: Option<String>,
    /// The SNS timestamp, when it came in an envelope.
    pub sns_timestamp: Option<String>,
}

/// Where a Command being handed off comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Just received from the source.
    Fresh,
    /// Taken from the parking, its client having a free slot.
    Parked,
}

/// A batch being routed: the outcome so far, the messages given up and
/// released, the source's receive limit, and the wall-clock time against
/// which the messages' send times are counted.
struct Routing {
    outcome: BatchOutcome,
    letters: Vec<DeadLetter>,
    /// Releases with their delay.
    releases: Vec<(Receipt, Duration)>,
    /// [`CommandSource::max_receive_count`].
    receive_limit: Option<u32>,
    /// Now, on the wall clock the send times are read on.
    now: SystemTime,
}

impl Routing {
    fn new(receive_limit: Option<u32>, now: SystemTime) -> Self {
        Self {
            outcome: BatchOutcome::default(),
            letters: Vec::new(),
            releases: Vec::new(),
            receive_limit,
            now,
        }
    }

    fn give_up(&mut self, letter: DeadLetter) {
        self.outcome
            .dead_lettered
            .push(letter.message.receipt.clone());
        self.letters.push(letter);
    }
}

/// Longest part of a malformed body that goes into a log line.
const LOGGED_BODY_BYTES: usize = 256;

/// The downlink: one instance shared by all poll loops.
pub struct Downlink {
    source: Arc<dyn CommandSource>,
    registry: Arc<dyn ClientRegistry>,
    settings: DownlinkSettings,
    recent: Arc<RecentIds>,
    acks: Arc<PendingAcks>,
    stats: Arc<Stats>,
    /// Set at shutdown: Commands not handed off are released at once.
    draining: AtomicBool,
    /// Where each Command's outcome is recorded, when receipts are on.
    receipts: Option<Arc<dyn ReceiptSink>>,
}

impl Downlink {
    /// Wires the use case to its ports.
    pub fn new(
        source: Arc<dyn CommandSource>,
        registry: Arc<dyn ClientRegistry>,
        settings: DownlinkSettings,
        stats: Arc<Stats>,
    ) -> Self {
        let recent = Arc::new(RecentIds::new(settings.dedup_capacity, settings.dedup_ttl));
        let acks = Arc::new(PendingAcks::new(
            source.clone(),
            registry.clone(),
            recent.clone(),
            stats.clone(),
            settings.ack_timeout,
            settings.max_unacked_per_client,
            settings.after_release.window,
        ));
        Self {
            source,
            registry,
            settings,
            recent,
            acks,
            stats,
            draining: AtomicBool::new(false),
            receipts: None,
        }
    }

    /// Records a receipt of each Command's outcome into `receipts`
    /// (acknowledgements included).
    pub fn with_receipts(mut self, receipts: Arc<dyn ReceiptSink>) -> Self {
        self.acks.set_receipts(receipts.clone());
        self.receipts = Some(receipts);
        self
    }

    /// The bridge is shutting down: from now on a Command that cannot be
    /// handed off here is released at once instead of after the retry delay,
    /// so another instance (which may hold its client) receives it without
    /// waiting. Batches still in hand are settled as usual otherwise.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        // No new receive starts: not ready from now on (docs/operations.md, Health).
        self.stats.set_consumer_stopped();
    }

    /// The deliveries waiting for a client's acknowledgement: the uplink
    /// confirms them, the app releases the overdue ones periodically and all
    /// of them at shutdown.
    pub fn acks(&self) -> Arc<PendingAcks> {
        self.acks.clone()
    }

    /// The counters this downlink keeps.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// How long a forwarded message id is remembered now: the TTL, or less
    /// while the de-duplication memory is full.
    pub fn dedup_window(&self) -> Duration {
        self.recent.window()
    }

    /// Receives one batch and settles every message of it.
    ///
    /// A receive failure is returned (the caller backs off); settle failures
    /// are logged, since the source hands the messages out again.
    pub async fn poll_once(&self) -> Result<BatchOutcome, SourceError> {
        let batch = self.receive().await?;
        Ok(self.process(batch).await)
    }

    /// Waits for the next batch. A failure is the caller's to log and back
    /// off from; the source adapter counts it and reports readiness.
    ///
    /// Safe to abandon (e.g. at shutdown): nothing has been taken from the
    /// source until it returns. Once it has returned, the batch must go
    /// through [`Downlink::process`], which should not be abandoned.
    pub async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
        self.source.receive().await
    }

    /// Decides the fate of each message of a batch, in order, then settles
    /// them with one call per kind of outcome.
    pub async fn process(&self, batch: Vec<InboundMessage>) -> BatchOutcome {
        self.process_at(batch, SystemTime::now()).await
    }

    /// [`Downlink::process`], the messages' ages (their retry window)
    /// counted to `now` on the wall clock their send times are read on.
    pub async fn process_at(&self, batch: Vec<InboundMessage>, now: SystemTime) -> BatchOutcome {
        if batch.is_empty() {
            return BatchOutcome::default();
        }
        let mut routing = Routing::new(self.acks.receive_limit().await, now);
        bump(&self.stats.downlink.received, batch.len() as u64);
        for message in batch {
            self.route(message, &mut routing);
        }
        self.settle(routing).await
    }

    fn route(&self, message: InboundMessage, routing: &mut Routing) {
        let span = info_span!("command", message_id = %message.message_id, client_id = tracing::field::Empty);
        let _entered = span.enter();
        let command = match decode_sqs_body(&message.body) {
            Ok(command) => command,
            Err(error) => return self.malformed(message, &error, routing),
        };
        span.record("client_id", command.client_id.as_str());

        // The SNS MessageId survives a re-publish to several queues or a
        // redelivery; the SQS MessageId is the fallback for bare Commands.
        let dedup_key = command
            .sns_message_id
            .clone()
            .unwrap_or_else(|| message.message_id.clone());
        if !self.claim(&dedup_key, &message, routing) {
            return;
        }
        let in_hand = CommandInHand {
            message,
            client_id: command.client_id,
            frame: command.json,
            dedup_key,
            sns_message_id: command.sns_message_id,
            sns_timestamp: command.sns_timestamp,
        };
        match Control::of(&in_hand.frame) {
            Some(Err(detail)) => {
                warn!(%detail, "malformed control message, not carried out");
                bump(&self.stats.downlink.malformed, 1);
                let message = in_hand.message;
                routing.give_up(DeadLetter::new(message, GiveUpReason::Malformed, &detail));
            }
            Some(Ok(control)) => self.carry_out(in_hand, &control, routing),
            None => self.hand_off(Parked::new(in_hand), routing, Arrival::Fresh),
        }
    }

    /// The body is not a Command: given up, with the decoder's reason.
    fn malformed(&self, message: InboundMessage, error: &DecodeError, routing: &mut Routing) {
        warn!(
            reason = error.reason(),
            %error,
            receive_count = message.receive_count,
            body = truncate(&message.body, LOGGED_BODY_BYTES),
            "malformed command, not forwarded"
        );
        bump(&self.stats.downlink.malformed, 1);
        self.receipt(
            Outcome::Malformed,
            ReceiptOf {
                message_id: &message.message_id,
                ..ReceiptOf::default()
            },
        );
        let detail = error.to_string();
        routing.give_up(DeadLetter::new(message, GiveUpReason::Malformed, &detail));
    }

    /// Claims `dedup_key` for `message`; says whether it goes on to be
    /// delivered. A copy of a held delivery is kept invisible, a duplicate
    /// is acknowledged.
    fn claim(&self, dedup_key: &str, message: &InboundMessage, routing: &mut Routing) -> bool {
        let receipt = || message.receipt.clone();
        // A held delivery owns its key for as long as it is held, whatever
        // the de-duplication memory's TTL: a copy of it is never deleted.
        match self.acks.adopt_copy(dedup_key, message) {
            CopyFate::Adopted => {
                debug!("copy of a held delivery received again, kept invisible");
                routing.outcome.held.push(receipt());
                return false;
            }
            CopyFate::Duplicate => {
                debug!("duplicate of a held delivery, dropped");
                bump(&self.stats.downlink.duplicate, 1);
                routing.outcome.acknowledged.push(receipt());
                return false;
            }
            CopyFate::NotHeld => {}
        }
        if !self.recent.claim(dedup_key) {
            debug!("duplicate of a forwarded command, dropped");
            bump(&self.stats.downlink.duplicate, 1);
            routing.outcome.acknowledged.push(receipt());
            return false;
        }
        true
    }

    /// A control message: carried out by the replica that holds the client;
    /// the others treat it as an undeliverable Command.
    fn carry_out(&self, in_hand: CommandInHand, control: &Control, routing: &mut Routing) {
        let reached = self.registry.control(&in_hand.client_id, control);
        if reached > 0 {
            bump(&self.stats.downlink.forwarded, 1);
            debug!(connections = reached, "control message carried out");
            routing.outcome.acknowledged.push(in_hand.message.receipt);
        } else {
            self.not_handed_off(in_hand, routing);
        }
    }
}

/// How long before `now` a message was sent; zero when that is unknown or
/// the sender's clock is ahead.
fn age(sent_at: Option<SystemTime>, now: SystemTime) -> Duration {
    sent_at
        .and_then(|at| now.duration_since(at).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_of_unknown_or_future_send_time_is_zero() {
        let now = SystemTime::now();
        assert_eq!(age(None, now), Duration::ZERO);
        let future = now + Duration::from_secs(60);
        assert_eq!(age(Some(future), now), Duration::ZERO);
        let past = now - Duration::from_secs(90);
        assert_eq!(age(Some(past), now), Duration::from_secs(90));
    }
}
