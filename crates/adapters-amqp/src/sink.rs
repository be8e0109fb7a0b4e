//! `EventSink` over an AMQP exchange, with publisher confirms.
//!
//! Each event is published to the events exchange with routing key = its
//! action and headers `client_id` and `action` (so topic bindings filter on
//! the action, headers bindings on either), persistent, as
//! `application/json`. `publish` returns once the broker has confirmed it:
//! an ack to the client means the broker has the event.
//!
//! Not `mandatory`: an events exchange with no queue bound is normal (no
//! backend listening yet), and the broker confirms such an event at once.
//!
//! The connection, its supervision and the confirmed publish itself are
//! the publishing core's (`confirmed.rs`), shared with the receipt sink.

use std::time::Duration;

use async_trait::async_trait;
use domain::{EventSink, OutboundEvent, PublishError};
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::backoff::Reconnect;
use crate::bootstrap::DEFAULT_EVENTS_EXCHANGE;
use crate::confirmed::{ConfirmedPublisher, PublisherSettings};
use crate::link;
use crate::metrics::{op, AmqpMetrics, Role};
use crate::url::AmqpUrl;

/// RabbitMQ's default `max_message_size` (128 MiB); larger messages close
/// the channel, so they are refused before they are sent.
const BROKER_MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

/// How the sink publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpSinkSettings {
    /// The exchange events are published to (declared beforehand, e.g. by
    /// [`crate::bootstrap::ensure`]).
    pub exchange: String,
    /// How long the broker may take to confirm an event.
    pub confirm_timeout: Duration,
    /// Largest event body accepted; larger ones are `Rejected`.
    pub max_message_bytes: usize,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
    /// Pauses between reconnection attempts.
    pub reconnect: Reconnect,
    /// The connection's name on the broker.
    pub connection_name: String,
}

impl Default for AmqpSinkSettings {
    fn default() -> Self {
        Self {
            exchange: DEFAULT_EVENTS_EXCHANGE.to_owned(),
            confirm_timeout: Duration::from_secs(5),
            max_message_bytes: BROKER_MAX_MESSAGE_BYTES,
            connect_timeout: Duration::from_secs(10),
            reconnect: Reconnect::default(),
            connection_name: "wsbridge-events".to_owned(),
        }
    }
}

/// Publishes client events to one AMQP exchange.
///
/// Dropping it ends its supervisor, which closes the connection.
#[derive(Debug)]
pub struct AmqpEventSink {
    max_message_bytes: usize,
    publisher: ConfirmedPublisher,
}

impl AmqpEventSink {
    /// Starts publishing to `settings.exchange` at `url`, connecting in the
    /// background. Must be called within a tokio runtime, which must
    /// outlive the sink.
    pub fn spawn(url: AmqpUrl, settings: AmqpSinkSettings) -> Self {
        Self::spawn_with_metrics(url, settings, AmqpMetrics::default())
    }

    /// [`AmqpEventSink::spawn`], counting into `metrics` (shared with the
    /// command source and exported by the app).
    pub fn spawn_with_metrics(
        url: AmqpUrl,
        settings: AmqpSinkSettings,
        metrics: AmqpMetrics,
    ) -> Self {
        let publisher = ConfirmedPublisher::spawn(
            url,
            PublisherSettings {
                role: Role::Events,
                what: "event sink",
                exchange: settings.exchange,
                confirm_timeout: settings.confirm_timeout,
                connect_timeout: settings.connect_timeout,
                reconnect: settings.reconnect,
                connection_name: settings.connection_name,
                operation: op::PUBLISH,
            },
            metrics,
        );
        Self {
            max_message_bytes: settings.max_message_bytes,
            publisher,
        }
    }

    /// The exchange events go to.
    pub fn exchange(&self) -> &str {
        self.publisher.exchange()
    }

    /// The metrics this sink counts into.
    pub fn metrics(&self) -> &AmqpMetrics {
        self.publisher.metrics()
    }

    /// Whether a publishing channel is open right now.
    pub fn is_connected(&self) -> bool {
        self.publisher.is_connected()
    }

    /// Waits up to `timeout` for a publishing channel; says whether there is one.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.publisher.wait_connected(timeout).await
    }

    /// Closes the connection. Publishes still waiting for their confirm
    /// fail with `Unavailable`; call it after the last publish returned.
    pub async fn close(&self) {
        self.publisher.close().await;
    }
}

#[async_trait]
impl EventSink for AmqpEventSink {
    async fn publish(&self, event: OutboundEvent) -> Result<(), PublishError> {
        if event.body.len() > self.max_message_bytes {
            return Err(PublishError::Rejected(format!(
                "event is {} bytes, the sink takes at most {}",
                event.body.len(),
                self.max_message_bytes
            )));
        }
        let routing_key = link::short(&event.action)
            .map_err(|e| PublishError::Rejected(format!("action as a routing key: {e}")))?;
        let mut headers = FieldTable::default();
        headers.insert(
            "client_id".into(),
            AMQPValue::LongString(LongString::from(event.client_id.as_str())),
        );
        headers.insert(
            "action".into(),
            AMQPValue::LongString(LongString::from(event.action.as_str())),
        );
        self.publisher
            .publish(routing_key, headers, event.body.as_bytes())
            .await
    }
}
