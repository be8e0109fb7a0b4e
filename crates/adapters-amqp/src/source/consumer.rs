//! The consuming side of the source: the session the supervisor opens on
//! each connection (a channel with `basic.qos`, `basic.consume` with manual
//! acknowledgements), the pump that renders each delivery for the domain
//! and pushes it to the bounded inbox, and `receive`, which drains the
//! inbox into batches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain::{InboundMessage, SourceError};
use futures_util::stream::{BoxStream, SelectAll};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::debug;

use super::in_flight::Held;
use super::publisher::Publisher;
use super::{
    lock, now_ms, Live, Shared, DELIVERY_COUNT_HEADER, FIRST_RECEIVED_HEADER, RECEIVE_COUNT_HEADER,
};
use crate::link::{self, Failure};
use crate::receipt::DeliveryRef;
use crate::supervisor::{LinkState, Opened, Session};

/// A delivery on its way from the pump to `receive`.
#[derive(Debug)]
pub(super) struct Arrival {
    delivery: DeliveryRef,
    message: InboundMessage,
}

/// The source's session on a connection.
pub(super) struct Consuming {
    pub(super) shared: Arc<Shared>,
    pub(super) outbox: mpsc::Sender<Arrival>,
}

#[async_trait]
impl Session for Consuming {
    type Channels = Arc<Live>;

    async fn open(
        &self,
        connection: &Connection,
        generation: u64,
    ) -> Result<Opened<Arc<Live>>, Failure> {
        let settings = &self.shared.settings;
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
        let consumer = self
            .shared
            .consume(&consume, queue.clone(), generation, 0)
            .await?;
        let channel = consume.clone();
        let live = Arc::new(Live {
            generation,
            consume,
            publisher: tokio::sync::Mutex::new(Publisher::default()),
        });
        self.shared.begin(&live);
        debug!(queue = %settings.queue, generation, prefetch = settings.prefetch, "consuming commands");
        Ok(Opened {
            channels: live,
            work: Box::pin(pump(
                self.shared.clone(),
                Window {
                    generation,
                    channel,
                    queue,
                },
                consumer,
                self.outbox.clone(),
            )),
        })
    }

    fn healthy(&self, live: &Arc<Live>) -> bool {
        live.consume.status().connected()
    }

    async fn down(&self, live: &Arc<Live>) {
        self.shared.end();
        live.retire_publisher().await;
    }
}

/// The consuming channel of a pump, and what it needs to open a new
/// prefetch window on it.
struct Window {
    generation: u64,
    channel: Channel,
    queue: ShortString,
}

/// A consumer's deliveries, numbered by consumer, then `None` once the
/// consumer has ended (cancelled by the pump, or by the broker).
type Deliveries = BoxStream<'static, (u64, Option<lapin::Result<Delivery>>)>;

fn deliveries(serial: u64, consumer: Consumer) -> Deliveries {
    consumer
        .map(move |delivery| (serial, Some(delivery)))
        .chain(futures_util::stream::once(async move { (serial, None) }))
        .boxed()
}

/// Forwards deliveries to the inbox until the consumer ends; the supervisor
/// drops it when the source stops.
///
/// A delivery kept unacknowledged keeps its slot in the consumer's
/// prefetch window, and the domain keeps some for long (held for a client's
/// acknowledgement, up to `max_unacked_per_client` per client): enough
/// clients that never acknowledge would take the whole window and stall
/// every other client. So when half the window is taken by deliveries the
/// domain keeps, the pump opens a new window: a new consumer on the same
/// channel, then cancels the old one. RabbitMQ counts a consumer's prefetch
/// only over its own deliveries, and the old consumer's stay on the
/// channel, settled by delivery tag as before (a new `basic.qos` would not
/// do: RabbitMQ applies a per-consumer prefetch only to consumers started
/// after it, and quorum queues refuse channel-wide prefetch). Bounded: no
/// new window once the channel holds [`super::MAX_WINDOWS`] windows' worth
/// of unsettled deliveries.
async fn pump(
    shared: Arc<Shared>,
    window: Window,
    first: Consumer,
    outbox: mpsc::Sender<Arrival>,
) -> Failure {
    let mut current = 0;
    let mut consumers = SelectAll::new();
    consumers.push(deliveries(current, first));
    loop {
        let next = tokio::select! {
            next = consumers.next() => next,
            () = shared.renew.notified() => {
                if !lock(&shared.in_flight).renewal_due(shared.settings.prefetch, shared.most_unsettled()) {
                    continue;
                }
                let serial = current + 1;
                match shared.renew_window(&window, current, serial).await {
                    Ok(consumer) => {
                        consumers.push(deliveries(serial, consumer));
                        current = serial;
                        continue;
                    }
                    Err(failure) => return failure,
                }
            }
        };
        let delivery = match next {
            Some((serial, Some(Ok(delivery)))) => (serial, delivery),
            Some((_, Some(Err(error)))) => return Failure::from_lapin("consume", &error),
            // A consumer the pump cancelled has delivered all it had.
            Some((serial, None)) if serial != current => continue,
            Some((_, None)) | None => {
                return Failure::unavailable("the broker cancelled the consumer (queue deleted?)")
            }
        };
        let arrival = shared.admit(window.generation, delivery.0, delivery.1);
        // The inbox holds `prefetch` arrivals, more than the broker sends
        // unacknowledged, so this waits only on arrivals of a dead channel.
        // It lives in `shared`, held here: sending cannot fail.
        let _ = outbox.send(arrival).await;
    }
}

impl Shared {
    /// Consumes the queue on `channel` as consumer `serial` of the
    /// channel, with manual acknowledgements.
    async fn consume(
        &self,
        channel: &Channel,
        queue: ShortString,
        generation: u64,
        serial: u64,
    ) -> Result<Consumer, Failure> {
        let tag = format!("wsbridge-{:08x}-{generation}-{serial}", self.instance);
        channel
            .basic_consume(
                queue,
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Failure::from_lapin(&format!("consume {:?}", self.settings.queue), &e))
    }

    /// Opens window `serial` (a new consumer), then closes window `old`
    /// (cancels its consumer, whose unsettled deliveries stay on the
    /// channel).
    async fn renew_window(
        &self,
        window: &Window,
        old: u64,
        serial: u64,
    ) -> Result<Consumer, Failure> {
        let consumer = self
            .consume(
                &window.channel,
                window.queue.clone(),
                window.generation,
                serial,
            )
            .await?;
        lock(&self.in_flight).renewed(serial);
        let old_tag = format!("wsbridge-{:08x}-{}-{old}", self.instance, window.generation);
        window
            .channel
            .basic_cancel(old_tag.into(), BasicCancelOptions::default())
            .await
            .map_err(|e| Failure::from_lapin("basic.cancel", &e))?;
        self.metrics.window_renewed();
        debug!(queue = %self.settings.queue, consumer = serial, "prefetch window renewed");
        Ok(consumer)
    }
}

impl Shared {
    /// Registers a delivery as held and renders it for the domain.
    fn admit(&self, generation: u64, consumer: u64, delivery: Delivery) -> Arrival {
        let reference = DeliveryRef {
            generation,
            tag: delivery.delivery_tag,
        };
        let rendered = render(
            &delivery.properties,
            delivery.redelivered,
            &delivery.data,
            SystemTime::now(),
        );
        let message_id = rendered.message_id.unwrap_or_else(|| {
            format!(
                "amqp-{:08x}-{}-{}",
                self.instance, generation, delivery.delivery_tag
            )
        });
        let message = InboundMessage {
            message_id: message_id.clone(),
            body: rendered.body,
            receipt: reference.receipt(),
            sent_at: rendered.sent_at,
            receive_count: rendered.receive_count,
            ..InboundMessage::default()
        };
        let held = Held {
            message_id,
            body: delivery.data,
            properties: delivery.properties,
            routing_key: delivery.routing_key,
            receive_count: rendered.receive_count,
            received_at_ms: now_ms(),
            consumer,
            taken: false,
        };
        lock(&self.in_flight).hold(reference, held);
        Arrival {
            delivery: reference,
            message,
        }
    }
}

/// What a delivery says about itself, read from its properties and body
/// alone: every value there is the publisher's (or a previous bridge's),
/// so nothing in it may panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rendered {
    /// The `message_id` property, when set.
    pub(super) message_id: Option<String>,
    pub(super) body: String,
    pub(super) sent_at: Option<SystemTime>,
    pub(super) receive_count: u32,
}

/// Renders a delivery's properties, `redelivered` flag and body for the
/// domain, `now` being the time it arrived.
pub(super) fn render(
    properties: &BasicProperties,
    redelivered: bool,
    data: &[u8],
    now: SystemTime,
) -> Rendered {
    let headers = properties.headers().as_ref();
    let header = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(as_u64);
    let earlier = header(RECEIVE_COUNT_HEADER).unwrap_or(0);
    let this = match header(DELIVERY_COUNT_HEADER) {
        Some(previous) => previous.saturating_add(1),
        None if redelivered => 2,
        None => 1,
    };
    Rendered {
        message_id: properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        body: String::from_utf8_lossy(data).into_owned(),
        sent_at: sent_at(*properties.timestamp(), header(FIRST_RECEIVED_HEADER), now),
        receive_count: u32::try_from(earlier.saturating_add(this)).unwrap_or(u32::MAX),
    }
}

/// How far ahead of the bridge's clock a time on a message may lie and
/// still be believed: clocks drift by seconds, not by a day.
const CLOCK_SLACK: Duration = Duration::from_secs(24 * 60 * 60);

/// When a message was sent: its `timestamp` property (whole seconds since
/// the epoch) when that is a time the bridge can believe, else the first
/// receive time a released copy carries (milliseconds), else unknown (the
/// retry window then counts from the first receive, through that header).
///
/// A time beyond the representable range (`2^64-1` seconds) or more than a
/// day ahead of `now` — typically milliseconds where seconds belong, which
/// would put the Command thousands of years ahead and keep its retry
/// window open for ever — counts as no time at all.
pub(super) fn sent_at(
    timestamp_secs: Option<u64>,
    first_received_ms: Option<u64>,
    now: SystemTime,
) -> Option<SystemTime> {
    let believable = |at: Option<SystemTime>| {
        at.filter(|at| {
            now.checked_add(CLOCK_SLACK)
                .is_none_or(|limit| *at <= limit)
        })
    };
    timestamp_secs
        .and_then(|secs| believable(UNIX_EPOCH.checked_add(Duration::from_secs(secs))))
        .or_else(|| {
            first_received_ms
                .and_then(|ms| believable(UNIX_EPOCH.checked_add(Duration::from_millis(ms))))
        })
}

/// Whether a `timestamp` property is one [`sent_at`] believes: when it is
/// not, a released copy carries its first receive time instead.
pub(super) fn believable_timestamp(timestamp_secs: Option<u64>, now: SystemTime) -> bool {
    timestamp_secs.is_some() && sent_at(timestamp_secs, None, now).is_some()
}

/// One `receive`: waits for the first message of the current channel (no
/// longer than the wait time; not at all for the first receive of a new
/// channel), then takes what else is there up to the batch size.
pub(super) async fn receive(
    shared: &Shared,
    mut link: watch::Receiver<LinkState<Arc<Live>>>,
) -> Result<Vec<InboundMessage>, SourceError> {
    let started = Instant::now();
    let give_up = started + shared.settings.wait_time;

    // Connected first; only the very first connection is waited for.
    let generation = loop {
        let state = link.borrow_and_update().clone();
        match state {
            LinkState::Connecting => {
                if tokio::time::timeout_at(give_up, link.changed())
                    .await
                    .is_err()
                {
                    return shared.generation(&link.borrow()).map(|_| Vec::new());
                }
            }
            state => break shared.generation(&state)?,
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
                    return shared.generation(&link.borrow()).map(|_| Vec::new());
                }
                // Lost while waiting: say so now rather than at the deadline.
                shared.generation(&link.borrow())?;
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
        if shared.hand_out(arrival.delivery) {
            batch.push(arrival.message);
            break;
        }
    }
    while batch.len() < shared.settings.max_messages {
        match inbox.try_recv() {
            Ok(arrival) if shared.hand_out(arrival.delivery) => batch.push(arrival.message),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(batch)
}

/// A header value as a count or a time, whichever integer type it came in.
pub(super) fn as_u64(value: &AMQPValue) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable, ShortString};
    use proptest::prelude::*;

    use super::*;

    /// 2023-11-14T22:13:20Z.
    const NOW_SECS: u64 = 1_700_000_000;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW_SECS)
    }

    #[test]
    fn a_timestamp_in_seconds_is_when_the_message_was_sent() {
        let sent = NOW_SECS - 30;
        assert_eq!(
            sent_at(Some(sent), None, now()),
            Some(UNIX_EPOCH + Duration::from_secs(sent))
        );
        // Clocks drift: an hour ahead is still believed.
        assert_eq!(
            sent_at(Some(NOW_SECS + 3600), None, now()),
            Some(now() + Duration::from_secs(3600))
        );
        // The epoch itself is a time (a very old Command): taken as it is.
        assert_eq!(sent_at(Some(0), None, now()), Some(UNIX_EPOCH));
    }

    #[test]
    fn a_timestamp_beyond_any_time_is_unknown_rather_than_a_panic() {
        assert_eq!(sent_at(Some(u64::MAX), None, now()), None);
        assert_eq!(sent_at(None, Some(u64::MAX), now()), None);
        // The released copy's first receive time stands in for it.
        assert_eq!(
            sent_at(Some(u64::MAX), Some(NOW_SECS * 1000 - 5), now()),
            Some(now() - Duration::from_millis(5))
        );
        assert!(!believable_timestamp(Some(u64::MAX), now()));
    }

    #[test]
    fn milliseconds_where_seconds_belong_are_unknown_so_the_retry_window_still_ends() {
        let millis = NOW_SECS * 1000;
        assert_eq!(sent_at(Some(millis), None, now()), None);
        assert!(!believable_timestamp(Some(millis), now()));
        assert!(believable_timestamp(Some(NOW_SECS), now()));
        assert!(!believable_timestamp(None, now()));
    }

    #[test]
    fn render_counts_receives_and_keeps_the_publishers_id() {
        let mut headers = FieldTable::default();
        headers.insert(RECEIVE_COUNT_HEADER.into(), AMQPValue::LongLongInt(3));
        headers.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongInt(1));
        let properties = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_timestamp(NOW_SECS)
            .with_headers(headers);
        let rendered = render(&properties, true, b"{\"a\":1}", now());
        assert_eq!(rendered.message_id.as_deref(), Some("m-1"));
        assert_eq!(rendered.body, "{\"a\":1}");
        assert_eq!(rendered.sent_at, Some(now()));
        assert_eq!(rendered.receive_count, 5);
    }

    /// Any integer a header may carry, in any of AMQP's integer types.
    fn integer() -> impl Strategy<Value = AMQPValue> {
        prop_oneof![
            any::<u8>().prop_map(AMQPValue::ShortShortUInt),
            any::<u16>().prop_map(AMQPValue::ShortUInt),
            any::<u32>().prop_map(AMQPValue::LongUInt),
            any::<u64>().prop_map(AMQPValue::Timestamp),
            any::<i8>().prop_map(AMQPValue::ShortShortInt),
            any::<i16>().prop_map(AMQPValue::ShortInt),
            any::<i32>().prop_map(AMQPValue::LongInt),
            any::<i64>().prop_map(AMQPValue::LongLongInt),
            any::<bool>().prop_map(AMQPValue::Boolean),
            ".{0,20}".prop_map(|s: String| AMQPValue::LongString(s.into())),
        ]
    }

    proptest! {
        #[test]
        fn no_property_header_or_body_makes_rendering_panic(
            timestamp in proptest::option::of(any::<u64>()),
            counts in proptest::collection::vec(proptest::option::of(integer()), 3),
            message_id in proptest::option::of("[ -~]{0,255}"),
            redelivered in any::<bool>(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            now_secs in any::<u64>(),
        ) {
            let mut headers = FieldTable::default();
            let names = [RECEIVE_COUNT_HEADER, DELIVERY_COUNT_HEADER, FIRST_RECEIVED_HEADER];
            for (name, value) in names.into_iter().zip(counts) {
                if let Some(value) = value {
                    headers.insert(name.into(), value);
                }
            }
            let mut properties = BasicProperties::default().with_headers(headers);
            if let Some(timestamp) = timestamp {
                properties = properties.with_timestamp(timestamp);
            }
            if let Some(id) = message_id {
                properties = properties.with_message_id(ShortString::try_new(id).unwrap());
            }
            // Any clock too, up to the far end of what SystemTime holds.
            let now = UNIX_EPOCH
                .checked_add(Duration::from_secs(now_secs))
                .unwrap_or_else(SystemTime::now);
            let rendered = render(&properties, redelivered, &body, now);
            prop_assert!(rendered.receive_count >= 1);
            if let (Some(at), Some(limit)) = (rendered.sent_at, now.checked_add(CLOCK_SLACK)) {
                prop_assert!(at <= limit);
            }
            let _ = believable_timestamp(timestamp, now);
        }
    }
}
