//! The consuming side of the source: the session the supervisor opens on
//! each connection (a channel with `basic.qos`, `basic.consume` with manual
//! acknowledgements), the pump that renders each delivery for the domain
//! and pushes it to the bounded inbox, and `receive`, which drains the
//! inbox into batches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use domain::{InboundMessage, SourceError};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, Consumer};
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
        let consumer = consume
            .basic_consume(
                queue,
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| Failure::from_lapin(&format!("consume {:?}", settings.queue), &e))?;
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
                generation,
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

/// Forwards deliveries to the inbox until the consumer ends; the supervisor
/// drops it when the source stops.
async fn pump(
    shared: Arc<Shared>,
    generation: u64,
    mut consumer: Consumer,
    outbox: mpsc::Sender<Arrival>,
) -> Failure {
    loop {
        let delivery = match consumer.next().await {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Failure::from_lapin("consume", &error),
            None => {
                return Failure::unavailable("the broker cancelled the consumer (queue deleted?)")
            }
        };
        let arrival = shared.admit(generation, delivery);
        // The inbox holds `prefetch` arrivals, more than the broker sends
        // unacknowledged, so this waits only on arrivals of a dead channel.
        // It lives in `shared`, held here: sending cannot fail.
        let _ = outbox.send(arrival).await;
    }
}

impl Shared {
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
            ..InboundMessage::default()
        };
        let held = Held {
            message_id,
            body: delivery.data,
            properties: delivery.properties,
            routing_key: delivery.routing_key,
            receive_count,
            received_at_ms: now_ms(),
        };
        lock(&self.in_flight).hold(reference, held);
        Arrival {
            delivery: reference,
            message,
        }
    }
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
