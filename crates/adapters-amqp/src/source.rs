//! `CommandSource` over an AMQP queue.
//!
//! A supervisor task owns the connection. It connects (with backoff), opens
//! a channel with a prefetch limit (`basic.qos`), consumes the queue with
//! manual acknowledgements, and forwards each delivery to a bounded inbox
//! that [`CommandSource::receive`] drains. Every consuming channel gets a
//! new *generation*; receipts carry it (see `receipt.rs`), and a receipt of
//! a channel that has died is never settled on its successor.
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
//! duplicates, never loses. The message leaves the consumer's window at
//! once, so Commands for absent clients neither hold prefetch slots nor
//! come back to the head of the queue over and over, and a delay survives a
//! restart of the bridge. [`ReleaseDelay::Hold`] (also the fallback when the
//! delay queue cannot be used) keeps the delivery unacknowledged for
//! `delay` and then requeues it: simpler, but each held message occupies a
//! prefetch slot, and a requeued message goes back near the head.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain::{CommandSource, InboundMessage, Receipt, SourceError};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer, PublisherConfirm};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::bootstrap::{self, DEFAULT_COMMAND_QUEUE};
use crate::link::{self, AmqpUrl, Backoff, Failure, Reconnect};
use crate::receipt::DeliveryRef;

/// Header in which a released copy carries how many times the message had
/// been received before it was released.
pub const RECEIVE_COUNT_HEADER: &str = "x-wsbridge-receive-count";
/// Header in which a released copy of a message without a `timestamp`
/// carries when the bridge first received it (milliseconds since the epoch),
/// so the retry window of the downlink still ends.
pub const FIRST_RECEIVED_HEADER: &str = "x-wsbridge-first-received-ms";
/// Header in which quorum queues count earlier deliveries.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

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
    /// The queue to consume (declared beforehand, e.g. by [`bootstrap::ensure`]).
    pub queue: String,
    /// Most unacknowledged deliveries the broker hands this source at once
    /// (`basic.qos`): the flow-control knob. Must cover every batch in
    /// process plus Commands waiting for a client's ack (and held releases).
    pub prefetch: u16,
    /// Most messages one `receive` returns.
    pub max_messages: usize,
    /// How long `receive` waits for a first message. Waiting costs nothing
    /// on the broker (deliveries are pushed); it bounds how long a poller
    /// takes to notice shutdown when the app abandons the wait.
    pub wait_time: Duration,
    /// How releases with a delay are done.
    pub release_delay: ReleaseDelay,
    /// How long the broker may take to confirm the copies of released messages.
    pub confirm_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// Pauses between reconnection attempts.
    pub reconnect: Reconnect,
    /// The consuming connection's name on the broker (`connection_name`
    /// client property); the one for delayed copies is `<name>.delay`.
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
    stop: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl AmqpCommandSource {
    /// Starts consuming `settings.queue` at `url`, connecting in the
    /// background: `receive` answers `SourceError::Unavailable` until the
    /// connection is up, and again whenever it is lost. Must be called
    /// within a tokio runtime, which must outlive the source.
    pub fn spawn(url: AmqpUrl, settings: AmqpSourceSettings) -> Self {
        let prefetch = settings.prefetch.max(1);
        let (outbox, inbox) = mpsc::channel(usize::from(prefetch));
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            settings: AmqpSourceSettings {
                prefetch,
                max_messages: settings.max_messages.max(1),
                ..settings
            },
            url,
            link: watch::Sender::new(Link::Connecting),
            in_flight: Mutex::new(InFlight::default()),
            inbox: tokio::sync::Mutex::new(inbox),
            answered: AtomicU64::new(0),
            holds: Mutex::new(JoinSet::new()),
            instance: rand::random(),
        });
        let supervisor = tokio::spawn(supervise(shared.clone(), outbox, stopped));
        Self {
            shared,
            stop,
            supervisor: Mutex::new(Some(supervisor)),
        }
    }

    /// The queue this source consumes.
    pub fn queue(&self) -> &str {
        &self.shared.settings.queue
    }

    /// Whether a consuming channel is open right now.
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.link.borrow(), Link::Up(_))
    }

    /// Waits up to `timeout` for a consuming channel; says whether there is one.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut link = self.shared.link.subscribe();
        tokio::time::timeout(timeout, link.wait_for(|l| matches!(l, Link::Up(_))))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Stops consuming and closes the connection. The broker takes back
    /// every delivery not acknowledged by then (they are received again,
    /// by this bridge or another). Settle what is in hand before calling it.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let supervisor = lock(&self.supervisor).take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
        lock(&self.shared.holds).abort_all();
    }
}

impl Drop for AmqpCommandSource {
    fn drop(&mut self) {
        // Dropping `stop` ends the supervisor, which closes the connection.
        lock(&self.shared.holds).abort_all();
    }
}

#[derive(Debug)]
struct Shared {
    settings: AmqpSourceSettings,
    url: AmqpUrl,
    link: watch::Sender<Link>,
    in_flight: Mutex<InFlight>,
    inbox: tokio::sync::Mutex<mpsc::Receiver<Arrival>>,
    /// The generation whose first receive has been answered: the first
    /// receive of each generation does not wait, so readiness is known at
    /// once after a (re)connection instead of after a whole wait.
    answered: AtomicU64,
    /// Releases in [`ReleaseDelay::Hold`], waiting out their delay.
    holds: Mutex<JoinSet<()>>,
    /// Distinguishes this source's made-up message ids from another's.
    instance: u32,
}

#[derive(Debug, Clone)]
enum Link {
    /// The first connection attempt is under way.
    Connecting,
    Up(Arc<Live>),
    Down(Failure),
    Closed,
}

/// One consuming channel and what goes with it.
#[derive(Debug)]
struct Live {
    generation: u64,
    connection: Connection,
    consume: Channel,
    /// Where copies go to the delay queue, opened at first need.
    publisher: tokio::sync::Mutex<Publisher>,
}

/// A connection of its own for the copies to the delay queue: a broker
/// under a resource alarm blocks connections that publish, reading nothing
/// more from them, and acknowledgements must keep flowing on the consuming
/// one meanwhile (RabbitMQ's advice: never publish and consume on one
/// connection).
#[derive(Debug)]
enum Publisher {
    Untried,
    Ready(Box<PublisherLink>),
    /// The delay queue cannot be used (declared differently, access
    /// refused): until the next consuming channel, releases hold instead.
    Unusable,
}

#[derive(Debug)]
struct PublisherLink {
    connection: Connection,
    channel: Channel,
}

/// The deliveries handed to this source and not yet settled, on the
/// current channel only.
#[derive(Debug, Default)]
struct InFlight {
    live: Option<Arc<Live>>,
    held: HashMap<u64, Held>,
}

/// What a release with a delay needs to publish a copy.
#[derive(Debug)]
struct Held {
    message_id: String,
    body: Vec<u8>,
    properties: BasicProperties,
    receive_count: u32,
    received_at_ms: u64,
}

#[derive(Debug)]
struct Arrival {
    delivery: DeliveryRef,
    message: InboundMessage,
}

enum Settle {
    Ack,
    Requeue,
    Reject,
}

impl Settle {
    fn name(&self) -> &'static str {
        match self {
            Settle::Ack => "basic.ack",
            Settle::Requeue => "basic.nack(requeue)",
            Settle::Reject => "basic.nack(dead-letter)",
        }
    }
}

/// Receipts sorted by what can be done with them.
struct Taken {
    live: Option<Arc<Live>>,
    held: Vec<(Receipt, DeliveryRef, Held)>,
    stale: Vec<Receipt>,
    refused: Vec<(Receipt, String)>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Shared {
    fn current(&self) -> Result<u64, SourceError> {
        match &*self.link.borrow() {
            Link::Up(live) => Ok(live.generation),
            Link::Connecting => Err(SourceError::Unavailable(format!(
                "not connected to {} yet",
                self.url
            ))),
            Link::Down(failure) => Err(failure.clone().into_source()),
            Link::Closed => Err(SourceError::Unavailable(
                "command source is closed".to_owned(),
            )),
        }
    }

    /// A new consuming channel: whatever was held on the previous one is gone.
    fn begin(&self, live: &Arc<Live>) {
        let mut in_flight = lock(&self.in_flight);
        in_flight.live = Some(live.clone());
        in_flight.held.clear();
    }

    fn end(&self) {
        let mut in_flight = lock(&self.in_flight);
        in_flight.live = None;
        in_flight.held.clear();
    }

    /// Registers a delivery as held and renders it for the domain.
    fn admit(&self, generation: u64, delivery: Delivery) -> Arrival {
        let reference = DeliveryRef {
            generation,
            tag: delivery.delivery_tag,
        };
        let properties = &delivery.properties;
        let headers = properties.headers().as_ref();
        let header = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(as_u64);
        let message_id = properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .unwrap_or_else(|| {
                format!(
                    "amqp-{:08x}-{}-{}",
                    self.instance, generation, delivery.delivery_tag
                )
            });
        let earlier = header(RECEIVE_COUNT_HEADER).unwrap_or(0);
        let this = match header(DELIVERY_COUNT_HEADER) {
            Some(previous) => previous.saturating_add(1),
            None if delivery.redelivered => 2,
            None => 1,
        };
        let receive_count = u32::try_from(earlier.saturating_add(this)).unwrap_or(u32::MAX);
        let sent_at = match properties.timestamp() {
            Some(seconds) => Some(UNIX_EPOCH + Duration::from_secs(*seconds)),
            None => header(FIRST_RECEIVED_HEADER).map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        };
        let body = String::from_utf8_lossy(&delivery.data).into_owned();
        let message = InboundMessage {
            message_id: message_id.clone(),
            body,
            receipt: reference.receipt(),
            sent_at,
            receive_count,
        };
        let held = Held {
            message_id,
            body: delivery.data,
            properties: delivery.properties,
            receive_count,
            received_at_ms: now_ms(),
        };
        let mut in_flight = lock(&self.in_flight);
        if in_flight
            .live
            .as_ref()
            .is_some_and(|l| l.generation == generation)
        {
            in_flight.held.insert(reference.tag, held);
        }
        Arrival {
            delivery: reference,
            message,
        }
    }

    fn is_held(&self, delivery: DeliveryRef) -> bool {
        let in_flight = lock(&self.in_flight);
        in_flight
            .live
            .as_ref()
            .is_some_and(|l| l.generation == delivery.generation)
            && in_flight.held.contains_key(&delivery.tag)
    }

    /// Takes the receipts' deliveries out of the in-flight set: each is
    /// settled at most once, and only on the channel that delivered it.
    fn take(&self, receipts: Vec<Receipt>) -> Taken {
        let mut seen = HashSet::new();
        let mut in_flight = lock(&self.in_flight);
        let mut taken = Taken {
            live: in_flight.live.clone(),
            held: Vec::new(),
            stale: Vec::new(),
            refused: Vec::new(),
        };
        let generation = taken.live.as_ref().map(|l| l.generation);
        for receipt in receipts {
            if !seen.insert(receipt.clone()) {
                continue;
            }
            let Some(delivery) = DeliveryRef::parse(&receipt) else {
                taken
                    .refused
                    .push((receipt, "not a receipt of an AMQP source".to_owned()));
                continue;
            };
            if Some(delivery.generation) != generation {
                taken.stale.push(receipt);
                continue;
            }
            match in_flight.held.remove(&delivery.tag) {
                Some(held) => taken.held.push((receipt, delivery, held)),
                None => taken.refused.push((
                    receipt,
                    "not held: already settled, or never received".to_owned(),
                )),
            }
        }
        taken
    }

    async fn settle(&self, how: Settle, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        let taken = self.take(receipts);
        let mut failed = taken.refused;
        if !taken.stale.is_empty() {
            let reason = "delivered on a channel that has closed since: the broker has taken the message back and delivers it again";
            match how {
                // Taking it back is what a release asks for.
                Settle::Requeue => {
                    debug!(count = taken.stale.len(), "stale receipts released")
                }
                Settle::Ack | Settle::Reject => {
                    failed.extend(taken.stale.into_iter().map(|r| (r, reason.to_owned())))
                }
            }
        }
        if let Some(live) = taken.live {
            for (receipt, delivery, _) in taken.held {
                let result = match how {
                    Settle::Ack => {
                        live.consume
                            .basic_ack(delivery.tag, BasicAckOptions::default())
                            .await
                    }
                    Settle::Requeue | Settle::Reject => {
                        live.consume
                            .basic_nack(
                                delivery.tag,
                                BasicNackOptions {
                                    multiple: false,
                                    requeue: matches!(how, Settle::Requeue),
                                },
                            )
                            .await
                    }
                };
                if let Err(error) = result {
                    failed.push((receipt, format!("{}: {error}", how.name())));
                }
            }
        }
        partial(failed)
    }

    async fn release_later(
        &self,
        receipts: Vec<Receipt>,
        delay: Duration,
    ) -> Result<(), SourceError> {
        let taken = self.take(receipts);
        let mut failed = taken.refused;
        if !taken.stale.is_empty() {
            debug!(count = taken.stale.len(), "stale receipts released");
        }
        let Some(live) = taken.live else {
            return partial(failed);
        };
        if taken.held.is_empty() {
            return partial(failed);
        }
        let mut to_hold = Vec::new();
        let publisher = match self.settings.release_delay {
            ReleaseDelay::DelayQueue => self.publisher(&live).await,
            ReleaseDelay::Hold => None,
        };
        match publisher {
            None => to_hold.extend(taken.held.into_iter().map(|(_, d, _)| d.tag)),
            Some(publisher) => {
                let copied = self
                    .copy_to_delay_queue(&publisher, taken.held, delay)
                    .await;
                for (receipt, delivery, outcome) in copied {
                    match outcome {
                        Ok(()) => {
                            // The copy is safe on the broker; a failed ack
                            // only means the original comes back as well.
                            if let Err(error) = live
                                .consume
                                .basic_ack(delivery.tag, BasicAckOptions::default())
                                .await
                            {
                                failed.push((
                                    receipt,
                                    format!("basic.ack after the delayed copy: {error}"),
                                ));
                            }
                        }
                        Err(reason) => {
                            warn!(queue = %self.settings.queue, %reason, "delayed copy not confirmed, holding the delivery instead");
                            to_hold.push(delivery.tag);
                        }
                    }
                }
            }
        }
        if !to_hold.is_empty() {
            self.hold(live, to_hold, delay);
        }
        partial(failed)
    }

    /// The confirm-mode channel for delayed copies, with the delay queue
    /// declared; `None` when it cannot be had now.
    async fn publisher(&self, live: &Live) -> Option<Channel> {
        let mut publisher = live.publisher.lock().await;
        match &*publisher {
            Publisher::Ready(link) if link.channel.status().connected() => {
                return Some(link.channel.clone())
            }
            Publisher::Unusable => return None,
            Publisher::Ready(_) | Publisher::Untried => {}
        }
        if let Publisher::Ready(link) = std::mem::replace(&mut *publisher, Publisher::Untried) {
            close_connection(&link.connection, "reopening").await;
        }
        let name = format!("{}.delay", self.settings.connection_name);
        let connection = match link::connect(&self.url, &name, self.settings.connect_timeout).await
        {
            Ok(connection) => connection,
            Err(failure) => {
                warn!(queue = %self.settings.queue, error = %failure, "no connection for delayed copies; holding the deliveries instead");
                return None;
            }
        };
        let opened = async {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| Failure::from_lapin("open channel", &e))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| Failure::from_lapin("confirm.select", &e))?;
            bootstrap::declare_delay_queue(&channel, &self.settings.queue).await?;
            Ok::<_, Failure>(channel)
        }
        .await;
        match opened {
            Ok(channel) => {
                *publisher = Publisher::Ready(Box::new(PublisherLink {
                    connection,
                    channel: channel.clone(),
                }));
                Some(channel)
            }
            Err(failure) => {
                close_connection(&connection, "delay queue unusable").await;
                warn!(queue = %self.settings.queue, error = %failure, "delay queue unusable; releases with a delay hold the delivery instead");
                if failure.misconfigured {
                    *publisher = Publisher::Unusable;
                }
                None
            }
        }
    }

    /// Publishes a copy of each message to the delay queue, then waits for
    /// the broker's confirms (one deadline for the whole batch).
    async fn copy_to_delay_queue(
        &self,
        channel: &Channel,
        held: Vec<(Receipt, DeliveryRef, Held)>,
        delay: Duration,
    ) -> Vec<(Receipt, DeliveryRef, Result<(), String>)> {
        let delay_queue = bootstrap::delay_queue_name(&self.settings.queue);
        let routing_key: ShortString = match link::short(&delay_queue) {
            Ok(key) => key,
            Err(e) => {
                return held
                    .into_iter()
                    .map(|(r, d, _)| (r, d, Err(format!("delay queue name: {e}"))))
                    .collect()
            }
        };
        let mut pending: Vec<(Receipt, DeliveryRef, Result<PublisherConfirm, String>)> =
            Vec::with_capacity(held.len());
        for (receipt, delivery, held) in held {
            let published = channel
                .basic_publish(
                    "".into(),
                    routing_key.clone(),
                    // Mandatory: a missing delay queue comes back as a
                    // return instead of the copy vanishing.
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &held.body,
                    delayed_copy(&held, delay),
                )
                .await
                .map_err(|e| format!("basic.publish to {delay_queue:?}: {e}"));
            pending.push((receipt, delivery, published));
        }
        let deadline = Instant::now() + self.settings.confirm_timeout;
        let mut outcomes = Vec::with_capacity(pending.len());
        for (receipt, delivery, published) in pending {
            let outcome = match published {
                Err(e) => Err(e),
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                    Ok(Ok(Confirmation::Ack(Some(_)))) => {
                        Err(format!("no queue {delay_queue:?} to take the copy"))
                    }
                    Ok(Ok(Confirmation::Nack(_))) => Err("the broker nacked the copy".to_owned()),
                    Ok(Ok(Confirmation::NotRequested)) => {
                        Err("publisher confirms are off on the delay channel".to_owned())
                    }
                    Ok(Err(e)) => Err(format!("confirm of the copy: {e}")),
                    Err(_) => Err(format!(
                        "no confirm of the copy within {:?}",
                        self.settings.confirm_timeout
                    )),
                },
            };
            outcomes.push((receipt, delivery, outcome));
        }
        outcomes
    }

    /// Keeps deliveries unacknowledged for `delay`, then requeues them. If
    /// the channel dies meanwhile the broker has requeued them already.
    fn hold(&self, live: Arc<Live>, tags: Vec<u64>, delay: Duration) {
        let mut holds = lock(&self.holds);
        while holds.try_join_next().is_some() {}
        holds.spawn(async move {
            tokio::time::sleep(delay).await;
            for tag in tags {
                let requeue = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if let Err(error) = live.consume.basic_nack(tag, requeue).await {
                    debug!(%error, tag, "held delivery not requeued: its channel is gone, the broker has it back");
                }
            }
        });
    }
}

/// The properties of the copy that waits out `delay` in the delay queue:
/// the original's, plus the expiration, the receive count so far, a stable
/// message id, and the first receive time when there is no timestamp.
fn delayed_copy(held: &Held, delay: Duration) -> BasicProperties {
    let headers = held.properties.headers().clone().unwrap_or_default();
    // The broker's count is of the original; the copy's starts anew and
    // adds to the count carried below.
    let mut headers: FieldTable = headers
        .inner()
        .iter()
        .filter(|(name, _)| name.as_str() != DELIVERY_COUNT_HEADER)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    headers.insert(
        RECEIVE_COUNT_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(held.receive_count)),
    );
    if held.properties.timestamp().is_none() && !headers.contains_key(FIRST_RECEIVED_HEADER) {
        headers.insert(
            FIRST_RECEIVED_HEADER.into(),
            AMQPValue::LongLongInt(i64::try_from(held.received_at_ms).unwrap_or(i64::MAX)),
        );
    }
    let millis = delay.as_millis().max(1);
    let mut properties = held
        .properties
        .clone()
        .with_headers(headers)
        .with_expiration(millis.to_string().into());
    if properties.message_id().is_none() {
        if let Ok(id) = link::short(&held.message_id) {
            properties = properties.with_message_id(id);
        }
    }
    properties
}

fn as_u64(value: &AMQPValue) -> Option<u64> {
    match value {
        AMQPValue::ShortShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(u64::from(*n)),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::Timestamp(n) => Some(*n),
        AMQPValue::ShortShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn partial(failed: Vec<(Receipt, String)>) -> Result<(), SourceError> {
    let Some((_, reason)) = failed.first() else {
        return Ok(());
    };
    let reason = reason.clone();
    Err(SourceError::Partial {
        failed: failed.into_iter().map(|(r, _)| r).collect(),
        reason,
    })
}

#[async_trait]
impl CommandSource for AmqpCommandSource {
    async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
        let shared = &self.shared;
        let started = Instant::now();
        let mut link = shared.link.subscribe();
        let give_up = started + shared.settings.wait_time;

        // Connected first; only the very first connection is waited for.
        let generation = loop {
            let state = link.borrow_and_update().clone();
            match state {
                Link::Connecting => {
                    if tokio::time::timeout_at(give_up, link.changed())
                        .await
                        .is_err()
                    {
                        return shared.current().map(|_| Vec::new());
                    }
                }
                _ => break shared.current()?,
            }
        };
        let first_of_generation = shared.answered.swap(generation, Ordering::Relaxed) != generation;
        let deadline = if first_of_generation {
            Instant::now()
        } else {
            give_up
        };
        let Ok(mut inbox) = tokio::time::timeout_at(deadline, shared.inbox.lock()).await else {
            return Ok(Vec::new());
        };

        let mut batch = Vec::new();
        // Wait for the first message of the current channel.
        loop {
            let arrival = tokio::select! {
                biased;
                arrival = inbox.recv() => arrival,
                changed = link.changed() => {
                    if changed.is_err() {
                        return shared.current().map(|_| Vec::new());
                    }
                    // Lost while waiting: say so now rather than at the deadline.
                    shared.current()?;
                    continue;
                }
                () = tokio::time::sleep_until(deadline) => return Ok(batch),
            };
            let Some(arrival) = arrival else {
                return Err(SourceError::Unavailable(
                    "command source is closed".to_owned(),
                ));
            };
            // Deliveries of a dead channel are dropped: the broker has them back.
            if shared.is_held(arrival.delivery) {
                batch.push(arrival.message);
                break;
            }
        }
        while batch.len() < shared.settings.max_messages {
            match inbox.try_recv() {
                Ok(arrival) if shared.is_held(arrival.delivery) => batch.push(arrival.message),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        self.shared.settle(Settle::Ack, receipts).await
    }

    async fn release(&self, receipts: Vec<Receipt>, delay: Duration) -> Result<(), SourceError> {
        if delay.is_zero() {
            self.shared.settle(Settle::Requeue, receipts).await
        } else {
            self.shared.release_later(receipts, delay).await
        }
    }

    async fn reject(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        // Not requeued: the queue's dead-letter exchange takes it, or, when
        // the queue has none, the broker drops it.
        self.shared.settle(Settle::Reject, receipts).await
    }
}

/// How a consuming channel ended.
enum End {
    Stopped,
    Lost(Failure),
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the source was dropped: stop as well.
    let _ = stop.wait_for(|s| *s).await;
}

async fn supervise(
    shared: Arc<Shared>,
    outbox: mpsc::Sender<Arrival>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = &shared.settings;
    let mut backoff = Backoff::new(settings.reconnect);
    let mut generation: u64 = 0;
    loop {
        generation += 1;
        let opened = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            opened = open(&shared, generation) => opened,
        };
        match opened {
            Ok((live, consumer)) => {
                backoff.reset();
                shared.begin(&live);
                shared.link.send_replace(Link::Up(live.clone()));
                info!(queue = %settings.queue, broker = %shared.url, generation, prefetch = settings.prefetch, "consuming commands");
                let end = pump(&shared, generation, consumer, &outbox, &mut stop).await;
                shared.end();
                retire_publisher(&live).await;
                match end {
                    End::Stopped => {
                        close_connection(&live.connection, "wsbridge command source closed").await;
                        break;
                    }
                    End::Lost(failure) => {
                        warn!(queue = %settings.queue, error = %failure, "command consumer lost; unacknowledged deliveries go back to the queue, reconnecting");
                        shared.link.send_replace(Link::Down(failure));
                        close_connection(&live.connection, "consumer lost").await;
                    }
                }
            }
            Err(failure) => {
                if failure.misconfigured {
                    warn!(queue = %settings.queue, error = %failure, "cannot consume commands; retrying");
                } else {
                    debug!(queue = %settings.queue, error = %failure, "broker unreachable; retrying");
                }
                shared.link.send_replace(Link::Down(failure));
            }
        }
        let pause = backoff.next_pause();
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    shared.end();
    shared.link.send_replace(Link::Closed);
    debug!(queue = %settings.queue, "command source stopped");
}

async fn retire_publisher(live: &Live) {
    let publisher = std::mem::replace(&mut *live.publisher.lock().await, Publisher::Unusable);
    if let Publisher::Ready(link) = publisher {
        close_connection(&link.connection, "consumer gone").await;
    }
}

async fn open(shared: &Shared, generation: u64) -> Result<(Arc<Live>, Consumer), Failure> {
    let settings = &shared.settings;
    let connection = link::connect(
        &shared.url,
        &settings.connection_name,
        settings.connect_timeout,
    )
    .await?;
    let opened = async {
        let consume = connection
            .create_channel()
            .await
            .map_err(|e| Failure::from_lapin("open channel", &e))?;
        consume
            .basic_qos(settings.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(|e| Failure::from_lapin("basic.qos", &e))?;
        let queue = link::short(&settings.queue).map_err(|e| Failure {
            misconfigured: true,
            text: format!("queue name: {e}"),
        })?;
        let consumer = consume
            .basic_consume(
                queue,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Failure::from_lapin(&format!("consume {:?}", settings.queue), &e))?;
        Ok::<_, Failure>((consume, consumer))
    }
    .await;
    match opened {
        Ok((consume, consumer)) => Ok((
            Arc::new(Live {
                generation,
                connection,
                consume,
                publisher: tokio::sync::Mutex::new(Publisher::Untried),
            }),
            consumer,
        )),
        Err(failure) => {
            close_connection(&connection, "setup failed").await;
            Err(failure)
        }
    }
}

/// Forwards deliveries to the inbox until the consumer ends or the source stops.
async fn pump(
    shared: &Shared,
    generation: u64,
    mut consumer: Consumer,
    outbox: &mpsc::Sender<Arrival>,
    stop: &mut watch::Receiver<bool>,
) -> End {
    loop {
        let next = tokio::select! {
            biased;
            () = stopped(stop) => return End::Stopped,
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return End::Lost(Failure::from_lapin("consume", &error)),
            None => {
                return End::Lost(Failure::unavailable(
                    "the broker cancelled the consumer (queue deleted?)",
                ))
            }
        };
        let arrival = shared.admit(generation, delivery);
        // The inbox holds `prefetch` arrivals, more than the broker sends
        // unacknowledged, so this waits only on arrivals of a dead channel.
        tokio::select! {
            biased;
            () = stopped(stop) => return End::Stopped,
            sent = outbox.send(arrival) => if sent.is_err() { return End::Stopped },
        }
    }
}

/// Closes a connection politely, not waiting long for a broker that is gone.
pub(crate) async fn close_connection(connection: &Connection, reason: &str) {
    if connection.status().connected() {
        let close = connection.close(200, reason.into());
        let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(properties: BasicProperties) -> Held {
        Held {
            message_id: "amqp-1-1-7".to_owned(),
            body: b"{}".to_vec(),
            properties,
            receive_count: 3,
            received_at_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn a_delayed_copy_keeps_the_original_and_carries_the_count() {
        let mut headers = FieldTable::default();
        headers.insert("trace".into(), AMQPValue::LongString("t-1".into()));
        headers.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(2));
        let original = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_delivery_mode(2)
            .with_headers(headers);
        let copy = delayed_copy(&held(original), Duration::from_millis(1500));
        assert_eq!(copy.expiration().as_ref().map(|e| e.as_str()), Some("1500"));
        assert_eq!(copy.message_id().as_ref().map(|e| e.as_str()), Some("m-1"));
        assert_eq!(*copy.timestamp(), Some(1_700_000_000));
        assert_eq!(*copy.delivery_mode(), Some(2));
        let headers = copy.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get(RECEIVE_COUNT_HEADER).and_then(as_u64),
            Some(3)
        );
        assert!(headers.contains_key("trace"));
        assert!(!headers.contains_key(DELIVERY_COUNT_HEADER));
        assert!(!headers.contains_key(FIRST_RECEIVED_HEADER));
    }

    #[test]
    fn a_copy_without_timestamp_or_id_gets_the_first_receive_time_and_a_stable_id() {
        let copy = delayed_copy(&held(BasicProperties::default()), Duration::from_micros(10));
        assert_eq!(copy.expiration().as_ref().map(|e| e.as_str()), Some("1"));
        assert_eq!(
            copy.message_id().as_ref().map(|e| e.as_str()),
            Some("amqp-1-1-7")
        );
        let headers = copy.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get(FIRST_RECEIVED_HEADER).and_then(as_u64),
            Some(1_700_000_000_123)
        );
    }

    #[test]
    fn partial_names_every_failed_receipt_and_the_first_reason() {
        assert_eq!(partial(Vec::new()), Ok(()));
        let failed = vec![
            (Receipt::new("a"), "first".to_owned()),
            (Receipt::new("b"), "second".to_owned()),
        ];
        assert_eq!(
            partial(failed),
            Err(SourceError::Partial {
                failed: vec![Receipt::new("a"), Receipt::new("b")],
                reason: "first".to_owned()
            })
        );
    }
}
