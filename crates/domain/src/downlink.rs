//! The downlink use case: receive → decode → de-duplicate → deliver →
//! acknowledge, release or reject. The delivery rules of SPEC §3 live here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{debug, info_span, warn};

use crate::acks::{CopyFate, PendingAcks};
use crate::client_id::ClientId;
use crate::command::decode_sqs_body;
use crate::control::Control;
use crate::dedup::RecentIds;
use crate::envelope::parse_timestamp;
use crate::ports::{
    ClientRegistry, CommandSource, DeadLetter, Frame, GiveUpReason, InboundMessage, Receipt,
    SourceError,
};
use crate::receipts::{command_id, DeliveryReceipt, Outcome, ReceiptSink};
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
}

/// A batch being routed: the outcome so far, and the messages given up.
#[derive(Default)]
struct Routing {
    outcome: BatchOutcome,
    letters: Vec<DeadLetter>,
}

impl Routing {
    fn give_up(&mut self, letter: DeadLetter) {
        self.outcome
            .dead_lettered
            .push(letter.message.receipt.clone());
        self.letters.push(letter);
    }
}

/// Longest part of a malformed body that goes into a log line.
const LOGGED_BODY_BYTES: usize = 256;
/// How long a Command for a client at its limit of unacknowledged
/// deliveries waits, when the retry delay does not say.
const DEFER_DELAY: Duration = Duration::from_secs(5);

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

    /// Records one outcome, when receipts are on (nothing is parsed otherwise).
    fn receipt(&self, outcome: Outcome, of: ReceiptOf<'_>) {
        let Some(receipts) = self.receipts.as_ref().filter(|r| r.wants(outcome)) else {
            return;
        };
        receipts.record(DeliveryReceipt {
            outcome,
            client_id: of.client_id.cloned(),
            message_id: of.message_id.to_owned(),
            sns_message_id: of.sns_message_id.map(str::to_owned),
            command_id: of.frame.and_then(command_id),
            connections: of.connections,
            at: SystemTime::now(),
        });
    }

    /// The bridge is shutting down: from now on a Command that cannot be
    /// handed off here is released at once instead of after the retry delay,
    /// so another instance (which may hold its client) receives it without
    /// waiting. Batches still in hand are settled as usual otherwise.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        // No new receive starts: not ready from now on (SPEC §2 /ready).
        self.stats.set_consumer_stopped();
    }

    /// The deliveries waiting for a client's acknowledgement: the uplink
    /// confirms them, the app releases the overdue ones periodically and all
    /// of them at shutdown.
    pub fn acks(&self) -> Arc<PendingAcks> {
        self.acks.clone()
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
        let mut routing = Routing::default();
        bump(&self.stats.downlink.received, batch.len() as u64);
        for message in batch {
            self.route(message, &mut routing);
        }
        self.settle(&routing.outcome, routing.letters).await;
        routing.outcome
    }

    fn route(&self, message: InboundMessage, routing: &mut Routing) {
        let span = info_span!("command", message_id = %message.message_id, client_id = tracing::field::Empty);
        let _entered = span.enter();
        let stats = &self.stats.downlink;

        let command = match decode_sqs_body(&message.body) {
            Ok(command) => command,
            Err(error) => {
                warn!(
                    reason = error.reason(),
                    %error,
                    receive_count = message.receive_count,
                    body = truncate(&message.body, LOGGED_BODY_BYTES),
                    "malformed command, not forwarded"
                );
                bump(&stats.malformed, 1);
                self.receipt(
                    Outcome::Malformed,
                    ReceiptOf {
                        message_id: &message.message_id,
                        ..ReceiptOf::default()
                    },
                );
                let detail = error.to_string();
                routing.give_up(DeadLetter::new(message, GiveUpReason::Malformed, &detail));
                return;
            }
        };
        span.record("client_id", command.client_id.as_str());
        let outcome = &mut routing.outcome;

        // The SNS MessageId survives a re-publish to several queues or a
        // redelivery; the SQS MessageId is the fallback for bare Commands.
        let dedup_key = command
            .sns_message_id
            .as_deref()
            .unwrap_or(&message.message_id);
        // A held delivery owns its key for as long as it is held, whatever
        // the de-duplication memory's TTL: a copy of it is never deleted.
        match self.acks.adopt_copy(dedup_key, &message) {
            CopyFate::Adopted => {
                debug!("copy of a held delivery received again, kept invisible");
                outcome.held.push(message.receipt);
                return;
            }
            CopyFate::Duplicate => {
                debug!("duplicate of a held delivery, dropped");
                bump(&stats.duplicate, 1);
                outcome.acknowledged.push(message.receipt);
                return;
            }
            CopyFate::NotHeld => {}
        }
        if !self.recent.claim(dedup_key) {
            debug!("duplicate of a forwarded command, dropped");
            bump(&stats.duplicate, 1);
            outcome.acknowledged.push(message.receipt);
            return;
        }

        // Entered before any connection can see the frame, so an
        // acknowledgement cannot arrive before its delivery is known.
        let frame: Frame = command.json;
        match Control::of(&frame) {
            Some(Err(detail)) => {
                warn!(%detail, "malformed control message, not carried out");
                bump(&stats.malformed, 1);
                routing.give_up(DeadLetter::new(message, GiveUpReason::Malformed, &detail));
                return;
            }
            Some(Ok(control)) => {
                // Carried out by the replica that holds the client; the
                // others treat it as an undeliverable Command (below).
                let reached = self.registry.control(&command.client_id, &control);
                if reached > 0 {
                    bump(&stats.forwarded, 1);
                    debug!(connections = reached, "control message carried out");
                    outcome.acknowledged.push(message.receipt);
                    return;
                }
            }
            None => {
                let Some(delivery) =
                    self.acks
                        .reserve(&command.client_id, &message, dedup_key, &frame)
                else {
                    debug!("client has its limit of unacknowledged deliveries, command deferred");
                    self.recent.forget(dedup_key);
                    bump(&stats.deferred, 1);
                    outcome.deferred.push(message.receipt);
                    return;
                };
                let handoff = self.registry.deliver(&command.client_id, &frame, delivery);
                if handoff.awaiting_ack == 0 {
                    self.acks.cancel(delivery);
                }
                if handoff.taken() > 0 {
                    bump(&stats.forwarded, 1);
                    // Published (SNS Timestamp, else SQS SentTimestamp) → hand-off.
                    let published = command.sns_timestamp.as_deref().and_then(parse_timestamp);
                    self.stats
                        .forward_latency
                        .record(age(published.or(message.sent_at)));
                    bump(&stats.frames_queued, handoff.taken() as u64);
                    self.receipt(
                        Outcome::Delivered,
                        ReceiptOf {
                            client_id: Some(&command.client_id),
                            message_id: &message.message_id,
                            sns_message_id: command.sns_message_id.as_deref(),
                            frame: Some(&frame),
                            connections: Some(handoff.taken()),
                        },
                    );
                    debug!(
                        connections = handoff.taken(),
                        awaiting_ack = handoff.awaiting_ack,
                        "command forwarded"
                    );
                    if handoff.awaiting_ack > 0 {
                        // Deleted when the client acknowledges; released on timeout.
                        outcome.held.push(message.receipt);
                    } else {
                        outcome.acknowledged.push(message.receipt);
                    }
                    return;
                }
            }
        }
        // Not handed off: a later copy must not be taken for a duplicate.
        self.recent.forget(dedup_key);

        match self.settings.undeliverable {
            Undeliverable::Retry { window, .. } if age(message.sent_at) < window => {
                debug!("client not connected here, released for a later attempt");
                bump(&stats.released, 1);
                outcome.released.push(message.receipt);
            }
            Undeliverable::Drop => {
                // In fanout mode this is the normal fate of other replicas'
                // Commands: counted, not worth a warning each.
                debug!("client not connected here, command dropped");
                bump(&stats.undeliverable, 1);
                self.receipt(
                    Outcome::Undeliverable,
                    ReceiptOf {
                        client_id: Some(&command.client_id),
                        message_id: &message.message_id,
                        sns_message_id: command.sns_message_id.as_deref(),
                        frame: Some(&frame),
                        connections: None,
                    },
                );
                outcome.acknowledged.push(message.receipt);
            }
            Undeliverable::Retry { window, .. } => {
                warn!(
                    ?window,
                    "client not connected within the retry window, command given up"
                );
                bump(&stats.undeliverable, 1);
                self.receipt(
                    Outcome::DeadLettered,
                    ReceiptOf {
                        client_id: Some(&command.client_id),
                        message_id: &message.message_id,
                        sns_message_id: command.sns_message_id.as_deref(),
                        frame: Some(&frame),
                        connections: None,
                    },
                );
                let detail = format!(
                    "client {} was not connected within the retry window of {} s",
                    command.client_id.as_str(),
                    window.as_secs()
                );
                routing.give_up(DeadLetter::new(
                    message,
                    GiveUpReason::Undeliverable,
                    &detail,
                ));
            }
        }
    }

    async fn settle(&self, outcome: &BatchOutcome, letters: Vec<DeadLetter>) {
        let source = &self.source;
        let draining = self.draining.load(Ordering::Relaxed);
        if !outcome.acknowledged.is_empty() {
            let result = source.acknowledge(outcome.acknowledged.clone()).await;
            self.record_settle("acknowledge", result);
        }
        if !outcome.released.is_empty() {
            let delay = match self.settings.undeliverable {
                _ if draining => Duration::ZERO,
                Undeliverable::Retry { delay, .. } => delay,
                Undeliverable::Drop => Duration::ZERO,
            };
            let result = source.release(outcome.released.clone(), delay).await;
            self.record_settle("release", result);
        }
        if !outcome.deferred.is_empty() {
            let delay = if draining {
                Duration::ZERO
            } else {
                self.defer_delay()
            };
            let result = source.release(outcome.deferred.clone(), delay).await;
            self.record_settle("release", result);
        }
        if !letters.is_empty() {
            bump(&self.stats.downlink.dead_lettered, letters.len() as u64);
            let result = source.dead_letter(letters).await;
            self.record_settle("dead-letter", result);
        }
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

/// What a receipt is about.
#[derive(Default)]
struct ReceiptOf<'a> {
    client_id: Option<&'a ClientId>,
    message_id: &'a str,
    sns_message_id: Option<&'a str>,
    /// The Command's JSON, for its own `id`.
    frame: Option<&'a str>,
    connections: Option<usize>,
}

fn age(sent_at: Option<SystemTime>) -> Duration {
    sent_at
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_of_unknown_or_future_send_time_is_zero() {
        assert_eq!(age(None), Duration::ZERO);
        let future = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(age(Some(future)), Duration::ZERO);
        let past = SystemTime::now() - Duration::from_secs(90);
        assert!(age(Some(past)) >= Duration::from_secs(90));
    }
}
