//! The publishing core both AMQP sinks share: one exchange, one supervised
//! connection with a confirm-mode channel, and [`ConfirmedPublisher::publish`],
//! which returns once the broker has confirmed the message. The event sink
//! (`sink.rs`) sends client events through it, the receipt sink
//! (`receipt_sink.rs`) delivery receipts; each chooses the routing key and
//! headers and decides what a failure means for its callers.
//!
//! The connection supervisor (`supervisor.rs`) keeps the connection and its
//! channel, reconnects with backoff when the connection is lost, and reopens
//! the channel when the broker closed it (e.g. after a publish to a missing
//! exchange). While there is none, `publish` fails at once with
//! `PublishError::Unavailable`.
//!
//! Messages are persistent `application/json` with a fresh `message_id`
//! and the current `timestamp`, and not `mandatory`: an exchange with no
//! queue bound is normal (nobody listening yet), and the broker confirms
//! such a message at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain::PublishError;
use lapin::options::BasicPublishOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::backoff::Reconnect;
use crate::link::{self, Failure};
use crate::metrics::{AmqpMetrics, Role};
use crate::supervisor::{LinkSettings, LinkState, Opened, Session, Supervisor};
use crate::url::AmqpUrl;

/// What a [`ConfirmedPublisher`] publishes to, and how it connects.
#[derive(Debug, Clone)]
pub(crate) struct PublisherSettings {
    /// Which link this is (logs, metrics).
    pub(crate) role: Role,
    /// What the publisher serves, for errors ("event sink").
    pub(crate) what: &'static str,
    /// The exchange messages go to.
    pub(crate) exchange: String,
    /// How long the broker may take to confirm a message.
    pub(crate) confirm_timeout: Duration,
    /// How long opening a connection may take.
    pub(crate) connect_timeout: Duration,
    /// Pauses between reconnection attempts.
    pub(crate) reconnect: Reconnect,
    /// The connection's name on the broker.
    pub(crate) connection_name: String,
    /// The `operation` label its publishes are timed under (one of `op`).
    pub(crate) operation: &'static str,
}

/// Publishes to one exchange with publisher confirms.
///
/// Dropping it ends its supervisor, which closes the connection.
#[derive(Debug)]
pub(crate) struct ConfirmedPublisher {
    settings: PublisherSettings,
    url: AmqpUrl,
    link: Supervisor<Channel>,
    metrics: AmqpMetrics,
}

impl ConfirmedPublisher {
    /// Starts connecting in the background. Must be called within a tokio
    /// runtime, which must outlive the publisher.
    pub(crate) fn spawn(url: AmqpUrl, settings: PublisherSettings, metrics: AmqpMetrics) -> Self {
        let link = Supervisor::spawn(
            url.clone(),
            LinkSettings {
                role: settings.role,
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

    /// The exchange messages go to.
    pub(crate) fn exchange(&self) -> &str {
        &self.settings.exchange
    }

    /// The metrics it counts into.
    pub(crate) fn metrics(&self) -> &AmqpMetrics {
        &self.metrics
    }

    /// Whether a publishing channel is open right now.
    pub(crate) fn is_connected(&self) -> bool {
        self.link.is_up()
    }

    /// Waits up to `timeout` for a publishing channel; says whether there is one.
    pub(crate) async fn wait_connected(&self, timeout: Duration) -> bool {
        self.link.wait_up(timeout).await
    }

    /// Closes the connection. Publishes still waiting for their confirm
    /// fail with `Unavailable`.
    pub(crate) async fn close(&self) {
        self.link.close().await;
    }

    /// Publishes `body` with `routing_key` and `headers`; `Ok` once the
    /// broker confirmed it. Every failure is `Unavailable` (a matter of
    /// time, not of the message): the callers refuse what can never be
    /// published before they get here.
    pub(crate) async fn publish(
        &self,
        routing_key: ShortString,
        headers: FieldTable,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let settings = &self.settings;
        let exchange = link::short(&settings.exchange)
            .map_err(|e| PublishError::Unavailable(format!("exchange name: {e}")))?;
        let channel = self.channel().await?;
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

        let timer = self.metrics.time(settings.operation);
        let confirmed = tokio::time::timeout(settings.confirm_timeout, async {
            channel
                .basic_publish(
                    exchange,
                    routing_key,
                    BasicPublishOptions::default(),
                    body,
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
            // failing): a matter of time, not of the message.
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Unavailable(format!(
                "the broker did not take the message (nack) on exchange {:?}",
                settings.exchange
            ))),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Unavailable(format!(
                "publisher confirms are off on the {}'s channel",
                settings.what
            ))),
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
            LinkState::Closed => Err(PublishError::Unavailable(format!(
                "{} is closed",
                self.settings.what
            ))),
        }
    }
}

/// A publisher's session on a connection: one confirm-mode channel, which
/// only answers publishes.
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
