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
//! The connection supervisor (`supervisor.rs`) keeps one connection with one
//! confirm-mode channel, reconnects with backoff when the connection is
//! lost, and reopens the channel when the broker closed it (e.g. after a
//! publish to a missing exchange). While there is none, `publish` fails at
//! once with `PublishError::Unavailable`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain::{EventSink, OutboundEvent, PublishError};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::backoff::Reconnect;
use crate::bootstrap::DEFAULT_EVENTS_EXCHANGE;
use crate::link::{self, Failure};
use crate::metrics::{op, AmqpMetrics, Role};
use crate::supervisor::{LinkSettings, LinkState, Opened, Session, Supervisor};
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
    settings: AmqpSinkSettings,
    url: AmqpUrl,
    link: Supervisor<Channel>,
    metrics: AmqpMetrics,
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
        let link = Supervisor::spawn(
            url.clone(),
            LinkSettings {
                role: Role::Events,
                target: settings.exchange.clone(),
                connection_name: settings.connection_name.clone(),
                connect_timeout: settings.connect_timeout,
                reconnect: settings.reconnect,
            },
            Publishing,
            metrics.clone(),
        );
        Self {
            settings,
            url,
            link,
            metrics,
        }
    }

    /// The exchange events go to.
    pub fn exchange(&self) -> &str {
        &self.settings.exchange
    }

    /// The metrics this sink counts into.
    pub fn metrics(&self) -> &AmqpMetrics {
        &self.metrics
    }

    /// Whether a publishing channel is open right now.
    pub fn is_connected(&self) -> bool {
        self.link.is_up()
    }

    /// Waits up to `timeout` for a publishing channel; says whether there is one.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        self.link.wait_up(timeout).await
    }

    /// Closes the connection. Publishes still waiting for their confirm
    /// fail with `Unavailable`; call it after the last publish returned.
    pub async fn close(&self) {
        self.link.close().await;
    }

    /// The open channel, waiting (up to the confirm timeout) only for the
    /// very first connection.
    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut link = self.link.subscribe();
        let state = {
            let wait = tokio::time::timeout(
                self.settings.confirm_timeout,
                link.wait_for(|l| !matches!(l, LinkState::Connecting)),
            )
            .await;
            match wait {
                Ok(Ok(state)) => state.clone(),
                _ => LinkState::Connecting,
            }
        };
        match state {
            LinkState::Up(channel) => Ok(channel),
            LinkState::Connecting => Err(PublishError::Unavailable(format!(
                "not connected to {} yet",
                self.url
            ))),
            LinkState::Down(failure) => Err(failure.into_publish()),
            LinkState::Closed => Err(PublishError::Unavailable("event sink is closed".to_owned())),
        }
    }
}

/// The sink's session on a connection: one confirm-mode channel, which only
/// answers publishes.
struct Publishing;

#[async_trait]
impl Session for Publishing {
    type Channels = Channel;

    async fn open(&self, connection: &Connection, _: u64) -> Result<Opened<Channel>, Failure> {
        Ok(Opened {
            channels: link::open_confirm_channel(connection).await?,
            work: Box::pin(futures_util::future::pending()),
        })
    }

    fn healthy(&self, channel: &Channel) -> bool {
        channel.status().connected()
    }

    async fn down(&self, _: &Channel) {}
}

#[async_trait]
impl EventSink for AmqpEventSink {
    async fn publish(&self, event: OutboundEvent) -> Result<(), PublishError> {
        let settings = &self.settings;
        if event.body.len() > settings.max_message_bytes {
            return Err(PublishError::Rejected(format!(
                "event is {} bytes, the sink takes at most {}",
                event.body.len(),
                settings.max_message_bytes
            )));
        }
        let routing_key = link::short(&event.action)
            .map_err(|e| PublishError::Rejected(format!("action as a routing key: {e}")))?;
        let exchange = link::short(&settings.exchange)
            .map_err(|e| PublishError::Unavailable(format!("exchange name: {e}")))?;
        let channel = self.channel().await?;

        let mut headers = FieldTable::default();
        headers.insert(
            "client_id".into(),
            AMQPValue::LongString(LongString::from(event.client_id.as_str())),
        );
        headers.insert(
            "action".into(),
            AMQPValue::LongString(LongString::from(event.action.as_str())),
        );
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_headers(headers)
            .with_message_id(format!("{:032x}", rand::random::<u128>()).into())
            .with_timestamp(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            );

        let timer = self.metrics.time(op::PUBLISH);
        let confirmed = tokio::time::timeout(settings.confirm_timeout, async {
            channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions::default(),
                    event.body.as_bytes(),
                    properties,
                )
                .await?
                .await
        })
        .await;
        timer.stop();
        match confirmed {
            Ok(Ok(Confirmation::Ack(_))) => Ok(()),
            // RabbitMQ nacks when a queue could not take the message (a
            // bounded queue with overflow=reject-publish, a queue process
            // failing): a matter of time, not of the event.
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Unavailable(format!(
                "the broker did not take the event (nack) on exchange {:?}",
                settings.exchange
            ))),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Unavailable(
                "publisher confirms are off on the events channel".to_owned(),
            )),
            Ok(Err(error)) => {
                self.link.repair();
                Err(Failure::from_lapin(
                    &format!("publish to exchange {:?}", settings.exchange),
                    &error,
                )
                .into_publish())
            }
            Err(_) => {
                self.link.repair();
                Err(PublishError::Unavailable(format!(
                    "no confirm from the broker within {:?}",
                    settings.confirm_timeout
                )))
            }
        }
    }
}
