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
//! A supervisor task keeps one connection with one confirm-mode channel,
//! reconnects with backoff when the connection is lost, and reopens the
//! channel when the broker closed it (e.g. after a publish to a missing
//! exchange). While there is none, `publish` fails at once with
//! `PublishError::Unavailable`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use domain::{EventSink, OutboundEvent, PublishError};
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Event};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::bootstrap::DEFAULT_EVENTS_EXCHANGE;
use crate::link::{self, AmqpUrl, Backoff, Failure, Reconnect};
use crate::source::close_connection;

/// RabbitMQ's default `max_message_size` (128 MiB); larger messages close
/// the channel, so they are refused before they are sent.
const BROKER_MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;
/// How often the supervisor looks at the connection besides its events.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

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
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    settings: AmqpSinkSettings,
    url: AmqpUrl,
    link: watch::Sender<Link>,
    /// A publish failed: the supervisor checks the channel and the connection.
    repair: Notify,
}

#[derive(Debug, Clone)]
enum Link {
    Connecting,
    Up(Channel),
    Down(Failure),
    Closed,
}

impl AmqpEventSink {
    /// Starts publishing to `settings.exchange` at `url`, connecting in the
    /// background. Must be called within a tokio runtime, which must
    /// outlive the sink.
    pub fn spawn(url: AmqpUrl, settings: AmqpSinkSettings) -> Self {
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            settings,
            url,
            link: watch::Sender::new(Link::Connecting),
            repair: Notify::new(),
        });
        let supervisor = tokio::spawn(supervise(shared.clone(), stopped));
        Self {
            shared,
            stop,
            supervisor: Mutex::new(Some(supervisor)),
        }
    }

    /// The exchange events go to.
    pub fn exchange(&self) -> &str {
        &self.shared.settings.exchange
    }

    /// Whether a publishing channel is open right now.
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.link.borrow(), Link::Up(_))
    }

    /// Waits up to `timeout` for a publishing channel; says whether there is one.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut link = self.shared.link.subscribe();
        tokio::time::timeout(timeout, link.wait_for(|l| matches!(l, Link::Up(_))))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Closes the connection. Publishes still waiting for their confirm
    /// fail with `Unavailable`; call it after the last publish returned.
    pub async fn close(&self) {
        let _ = self.stop.send(true);
        let supervisor = self
            .supervisor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
    }

    /// The open channel, waiting (up to the confirm timeout) only for the
    /// very first connection.
    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut link = self.shared.link.subscribe();
        let state = {
            let wait = tokio::time::timeout(
                self.shared.settings.confirm_timeout,
                link.wait_for(|l| !matches!(l, Link::Connecting)),
            )
            .await;
            match wait {
                Ok(Ok(state)) => state.clone(),
                _ => Link::Connecting,
            }
        };
        match state {
            Link::Up(channel) => Ok(channel),
            Link::Connecting => Err(PublishError::Unavailable(format!(
                "not connected to {} yet",
                self.shared.url
            ))),
            Link::Down(failure) => Err(failure.into_publish()),
            Link::Closed => Err(PublishError::Unavailable("event sink is closed".to_owned())),
        }
    }
}

#[async_trait]
impl EventSink for AmqpEventSink {
    async fn publish(&self, event: OutboundEvent) -> Result<(), PublishError> {
        let settings = &self.shared.settings;
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
                self.shared.repair.notify_one();
                Err(Failure::from_lapin(
                    &format!("publish to exchange {:?}", settings.exchange),
                    &error,
                )
                .into_publish())
            }
            Err(_) => {
                self.shared.repair.notify_one();
                Err(PublishError::Unavailable(format!(
                    "no confirm from the broker within {:?}",
                    settings.confirm_timeout
                )))
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn open_channel(connection: &Connection) -> Result<Channel, Failure> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Failure::from_lapin("open channel", &e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| Failure::from_lapin("confirm.select", &e))?;
    Ok(channel)
}

async fn supervise(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let settings = &shared.settings;
    let mut backoff = Backoff::new(settings.reconnect);
    'connect: loop {
        let opened = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            opened = async {
                let connection = link::connect(&shared.url, &settings.connection_name, settings.connect_timeout).await?;
                match open_channel(&connection).await {
                    Ok(channel) => Ok((connection, channel)),
                    Err(failure) => {
                        close_connection(&connection, "setup failed").await;
                        Err(failure)
                    }
                }
            } => opened,
        };
        match opened {
            Err(failure) => {
                debug!(exchange = %settings.exchange, error = %failure, "broker unreachable; retrying");
                shared.link.send_replace(Link::Down(failure));
            }
            Ok((connection, channel)) => {
                backoff.reset();
                let mut events = connection.events_listener();
                shared.link.send_replace(Link::Up(channel.clone()));
                info!(exchange = %settings.exchange, broker = %shared.url, "publishing events");
                let mut channel = channel;
                let mut check = tokio::time::interval(HEALTH_CHECK);
                let lost = loop {
                    tokio::select! {
                        biased;
                        () = stopped(&mut stop) => {
                            shared.link.send_replace(Link::Closed);
                            close_connection(&connection, "wsbridge event sink closed").await;
                            break 'connect;
                        }
                        event = events.next() => match event {
                            Some(Event::Error(error)) => break Failure::from_lapin("connection", &error),
                            Some(_) => continue,
                            None => break Failure::unavailable("connection events ended"),
                        },
                        () = shared.repair.notified() => {}
                        _ = check.tick() => {}
                    }
                    if !connection.status().connected() {
                        break Failure::unavailable("connection closed");
                    }
                    if !channel.status().connected() {
                        match open_channel(&connection).await {
                            Ok(reopened) => {
                                debug!(exchange = %settings.exchange, "events channel reopened");
                                channel = reopened;
                                shared.link.send_replace(Link::Up(channel.clone()));
                            }
                            Err(failure) => break failure,
                        }
                    }
                };
                warn!(exchange = %settings.exchange, error = %lost, "event publishing connection lost; reconnecting");
                shared.link.send_replace(Link::Down(lost));
                close_connection(&connection, "connection lost").await;
            }
        }
        let pause = backoff.next_pause();
        tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    shared.link.send_replace(Link::Closed);
    debug!(exchange = %settings.exchange, "event sink stopped");
}
