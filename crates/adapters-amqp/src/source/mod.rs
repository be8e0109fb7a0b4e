//! `CommandSource` over an AMQP queue.
//!
//! The connection supervisor (`supervisor.rs`) owns the connection: it
//! connects (with backoff) and has the consuming session
//! ([`consumer`]) open a channel with a prefetch limit (`basic.qos`) and
//! consume the queue with manual acknowledgements; each delivery goes to a
//! bounded inbox that [`CommandSource::receive`] drains into batches.
//! Every consuming channel gets a new *generation*; receipts carry it (see
//! `receipt.rs`), and a receipt of a channel that has died is never
//! settled on its successor ([`in_flight`]). Acknowledge, requeue and
//! reject are in [`settle`], releases with a delay in [`release`], giving
//! up (a copy with the reason to the dead-letter exchange) in
//! [`dead_letter`]; both publish on the connection of [`publisher`].
//!
//! # At-least-once across failures
//!
//! When the connection or channel is lost, the broker puts every delivery
//! that was not acknowledged back in the queue and hands it out again
//! (`redelivered` set): that is the at-least-once path. Settling a receipt
//! of the lost channel then fails (`SourceError::Partial`), since the broker
//! has already taken the message back; the domain's de-duplication keeps a
//! Command that was forwarded but whose ack was lost from reaching its
//! client twice (when the message carries a stable id, see
//! [`AmqpCommandSource`]).
//!
//! # Releasing with a delay
//!
//! `release(delay = 0)` is `basic.nack(requeue = true)`. For a delay, the
//! default ([`ReleaseDelay::DelayQueue`]) publishes a copy of the message,
//! with publisher confirms and on a connection of its own (a broker under
//! a resource alarm stops reading from publishing connections, and the
//! consumer's acknowledgements must still flow), to the delay queue
//! `<queue>.delay` with a
//! per-message TTL of `delay`; when the TTL runs out the broker dead-letters
//! it back to the command queue, at its tail. Only once the broker has
//! confirmed the copy is the original acknowledged, so a failure in between
//! duplicates, never loses. The copying runs in the background, so a
//! broker that blocks publishing (a memory or disk alarm) never holds up
//! the pollers, and each publish and confirm has a deadline
//! (`confirm_timeout`): a copy that cannot be made in time is held
//! instead (see below), never lost. The message leaves the consumer's window at
//! once, so Commands for absent clients neither hold prefetch slots nor
//! come back to the head of the queue over and over, and a delay survives a
//! restart of the bridge. [`ReleaseDelay::Hold`] (also the fallback when the
//! delay queue cannot be used) keeps the delivery unacknowledged for
//! `delay` and then requeues it: simpler, but each held message occupies a
//! prefetch slot, and a requeued message goes back near the head.

mod consumer;
mod dead_letter;
mod in_flight;
mod publisher;
mod release;
mod settle;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain::{CommandSource, DeadLetter, InboundMessage, Receipt, SourceError};
use lapin::Channel;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backoff::Reconnect;
use crate::bootstrap::DEFAULT_COMMAND_QUEUE;
use crate::metrics::{AmqpMetrics, Role};
use crate::supervisor::{LinkSettings, LinkState, Supervisor};
use crate::url::AmqpUrl;

use consumer::{Arrival, Consuming};
use in_flight::InFlight;
use publisher::Publisher;
use settle::Settle;

/// Header in which a released copy carries how many times the message had
/// been received before it was released.
pub const RECEIVE_COUNT_HEADER: &str = "x-wsbridge-receive-count";
/// Header in which a released copy of a message without a `timestamp`
/// carries when the bridge first received it (milliseconds since the epoch),
/// so the retry window of the downlink still ends.
pub const FIRST_RECEIVED_HEADER: &str = "x-wsbridge-first-received-ms";
/// Header in which quorum queues count earlier deliveries.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
/// Most unsettled deliveries on a consuming channel, in prefetch windows:
/// past `MAX_WINDOWS × prefetch`, deliveries the domain keeps (held for
/// clients' acknowledgements) take window slots again (see `consumer.rs`).
pub(crate) const MAX_WINDOWS: usize = 10;

/// How `release` with a non-zero delay gives a message back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReleaseDelay {
    /// A confirmed copy goes to the delay queue `<queue>.delay` (declared
    /// by the source if missing) with a TTL of the delay, then the original
    /// is acknowledged; the broker dead-letters the copy back to the command
    /// queue when the TTL runs out.
    #[default]
    DelayQueue,
    /// The delivery stays unacknowledged for the delay (holding a prefetch
    /// slot), then is requeued with `basic.nack`.
    Hold,
}

/// How the queue is consumed and settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpSourceSettings {
    /// The queue to consume (declared beforehand, e.g. by [`crate::bootstrap::ensure`]).
    pub queue: String,
    /// The consumer's prefetch window (`basic.qos`): most deliveries the
    /// broker pushes ahead of what the bridge keeps, the flow-control knob.
    /// Deliveries kept unacknowledged for long (held for a client's
    /// acknowledgement) do not close it: once they fill half of it, the
    /// source opens a new window (a new consumer), up to
    /// `10 × prefetch` unsettled deliveries in all. Should exceed a few
    /// batches (pollers × `max_messages`).
    pub prefetch: u16,
    /// Most messages one `receive` returns.
    pub max_messages: usize,
    /// How long `receive` waits for a first message. Waiting costs nothing
    /// on the broker (deliveries are pushed); it bounds how long a poller
    /// takes to notice shutdown when the app abandons the wait.
    pub wait_time: Duration,
    /// How releases with a delay are done.
    pub release_delay: ReleaseDelay,
    /// The queue's dead-letter exchange (its `x-dead-letter-exchange`, e.g.
    /// [`crate::bootstrap::Topology::dead_letter_exchange`]): `dead_letter`
    /// publishes each given-up message there with its reason headers, then
    /// acknowledges it. `None`, or an exchange the broker does not have:
    /// the message is rejected instead, and the broker dead-letters it
    /// without the reason.
    pub dead_letter_exchange: Option<String>,
    /// How long the broker may take to confirm the copies of released and
    /// given-up messages.
    pub confirm_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// Pauses between reconnection attempts.
    pub reconnect: Reconnect,
    /// The consuming connection's name on the broker (`connection_name`
    /// client property); the one copies are published on is `<name>.publish`.
    pub connection_name: String,
}

impl Default for AmqpSourceSettings {
    fn default() -> Self {
        Self {
            queue: DEFAULT_COMMAND_QUEUE.to_owned(),
            prefetch: 100,
            max_messages: 10,
            wait_time: Duration::from_secs(5),
            release_delay: ReleaseDelay::DelayQueue,
            dead_letter_exchange: None,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            reconnect: Reconnect::default(),
            connection_name: "wsbridge-commands".to_owned(),
        }
    }
}

/// Receives Commands from one AMQP queue.
///
/// [`InboundMessage::message_id`] is the AMQP `message_id` property when the
/// publisher set one (it should: it is what de-duplicates a redelivery),
/// otherwise an id unique to this delivery. `sent_at` is the `timestamp`
/// property (whole seconds) when set. `receive_count` counts quorum queues'
/// `x-delivery-count` and the source's own releases; on a classic queue a
/// requeued message only says it is redelivered, which counts as 2.
#[derive(Debug)]
pub struct AmqpCommandSource {
    shared: Arc<Shared>,
    link: Supervisor<Arc<Live>>,
}

impl AmqpCommandSource {
    /// Starts consuming `settings.queue` at `url`, connecting in the
    /// background: `receive` answers `SourceError::Unavailable` until the
    /// connection is up, and again whenever it is lost. Must be called
    /// within a tokio runtime, which must outlive the source.
    pub fn spawn(url: AmqpUrl, settings: AmqpSourceSettings) -> Self {
        Self::spawn_with_metrics(url, settings, AmqpMetrics::default())
    }

    /// [`AmqpCommandSource::spawn`], counting into `metrics` (shared with
    /// the event sink, exported by the app, and asked for readiness).
    pub fn spawn_with_metrics(
        url: AmqpUrl,
        settings: AmqpSourceSettings,
        metrics: AmqpMetrics,
    ) -> Self {
        let prefetch = settings.prefetch.max(1);
        let (outbox, inbox) = mpsc::channel(usize::from(prefetch));
        let settings = AmqpSourceSettings {
            prefetch,
            max_messages: settings.max_messages.max(1),
            ..settings
        };
        let link_settings = LinkSettings {
            role: Role::Commands,
            target: settings.queue.clone(),
            connection_name: settings.connection_name.clone(),
            connect_timeout: settings.connect_timeout,
            reconnect: settings.reconnect,
        };
        let shared = Arc::new(Shared {
            settings,
            url: url.clone(),
            in_flight: Mutex::new(InFlight::default()),
            inbox: tokio::sync::Mutex::new(inbox),
            answered: AtomicU64::new(0),
            holds: Mutex::new(JoinSet::new()),
            instance: rand::random(),
            metrics: metrics.clone(),
            renew: tokio::sync::Notify::new(),
        });
        let session = Consuming {
            shared: shared.clone(),
            outbox,
        };
        let link = Supervisor::spawn(url, link_settings, session, metrics);
        Self { shared, link }
    }

    /// The queue this source consumes.
    pub fn queue(&self) -> &str {
        &self.shared.settings.queue
    }

    /// The metrics this source counts into.
    pub fn metrics(&self) -> &AmqpMetrics {
        &self.shared.metrics
    }

    /// Whether a consuming channel is open right now.
    pub fn is_connected(&self) -> bool {
        self.link.is_up()
    }

    /// Waits up to `timeout` for a consuming channel; says whether there is one.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.link.wait_up(timeout).await
    }

    /// Stops consuming and closes the connection. The broker takes back
    /// every delivery not acknowledged by then (they are received again,
    /// by this bridge or another). Settle what is in hand before calling it.
    pub async fn close(&self) {
        self.link.close().await;
        lock(&self.shared.holds).abort_all();
    }
}

impl Drop for AmqpCommandSource {
    fn drop(&mut self) {
        // Dropping the supervisor's handle ends it, which closes the connection.
        lock(&self.shared.holds).abort_all();
    }
}

/// What the source's handle, its consuming session and its settling share.
#[derive(Debug)]
struct Shared {
    settings: AmqpSourceSettings,
    url: AmqpUrl,
    in_flight: Mutex<InFlight>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Arrival>>,
    /// The generation whose first receive has been answered: the first
    /// receive of each generation does not wait, so readiness is known at
    /// once after a (re)connection instead of after a whole wait.
    answered: AtomicU64,
    /// Work on deliveries taken out of the in-flight set, off the callers'
    /// path: copies being published (released to the delay queue, given up
    /// to the dead-letter exchange) and releases in [`ReleaseDelay::Hold`]
    /// waiting out their delay. Aborted when the source closes: what they
    /// had not settled is unacknowledged, and the broker takes it back.
    holds: Mutex<JoinSet<()>>,
    /// Distinguishes this source's made-up message ids (and consumer
    /// tags) from another's.
    instance: u32,
    metrics: AmqpMetrics,
    /// Wakes the pump when its prefetch window may need renewing.
    renew: tokio::sync::Notify,
}

/// One consuming channel and what goes with it.
#[derive(Debug)]
struct Live {
    generation: u64,
    consume: Channel,
    /// Where copies are published, opened at first need.
    publisher: tokio::sync::Mutex<Publisher>,
}

impl Shared {
    /// Runs `work` in the background ([`Shared::holds`]).
    fn background(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = lock(&self.holds);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(work);
    }

    /// Most unsettled deliveries on the consuming channel ([`MAX_WINDOWS`]).
    fn most_unsettled(&self) -> usize {
        usize::from(self.settings.prefetch).saturating_mul(MAX_WINDOWS)
    }

    /// The generation of the consuming channel in `state`, or why there is none.
    fn generation(&self, state: &LinkState<Arc<Live>>) -> Result<u64, SourceError> {
        match state {
            LinkState::Up(live) => Ok(live.generation),
            LinkState::Connecting => Err(SourceError::Unavailable(format!(
                "not connected to {} yet",
                self.url
            ))),
            LinkState::Down(failure) => Err(failure.clone().into_source()),
            LinkState::Closed => Err(SourceError::Unavailable(
                "command source is closed".to_owned(),
            )),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl CommandSource for AmqpCommandSource {
    async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
        let metrics = &self.shared.metrics;
        let timer = metrics.time(crate::metrics::op::CONSUME_WAIT);
        let batch = consumer::receive(&self.shared, self.link.subscribe()).await;
        timer.stop();
        match &batch {
            Ok(_) => metrics.received(),
            Err(error) => metrics.receive_failed(error.to_string()),
        }
        batch
    }

    async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        self.shared.settle(Settle::Ack, receipts).await
    }

    async fn release(&self, receipts: Vec<Receipt>, delay: Duration) -> Result<(), SourceError> {
        if delay.is_zero() {
            self.shared.settle(Settle::Requeue, receipts).await
        } else {
            Shared::release_later(&self.shared, receipts, delay)
        }
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>) -> Result<(), SourceError> {
        Shared::dead_letter(&self.shared, letters)
    }

    async fn visibility_timeout(&self) -> Option<Duration> {
        // An unacknowledged delivery stays with its channel until it is
        // settled: nothing to extend.
        None
    }

    async fn extend(
        &self,
        _receipts: Vec<Receipt>,
        _visibility: Duration,
    ) -> Result<(), SourceError> {
        Ok(())
    }
}
