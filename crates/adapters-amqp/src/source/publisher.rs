//! The connection the source publishes copies of its messages on: delayed
//! releases to the delay queue ([`super::release`]) and given-up messages
//! to the dead-letter exchange ([`super::dead_letter`]), with publisher
//! confirms. A connection of its own: a broker under a resource alarm
//! blocks connections that publish, reading nothing more from them, and
//! acknowledgements must keep flowing on the consuming one meanwhile
//! (RabbitMQ's advice: never publish and consume on one connection).
//!
//! Opened at first need. Each destination is checked once per consuming
//! channel before its first copy (the delay queue declared, the dead-letter
//! exchange looked up); one the broker refuses is not tried again until the
//! next consuming channel, and its callers fall back to what needs no copy.

use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use tokio::time::Instant;
use tracing::warn;

use super::{Live, Shared};
use crate::bootstrap;
use crate::link::{self, Failure};
use crate::metrics::op;

/// The publishing side of one consuming channel.
#[derive(Debug, Default)]
pub(super) struct Publisher {
    link: Option<Box<PublisherLink>>,
    /// The consuming channel is gone: nothing is opened for it any more.
    retired: bool,
    delay_queue: Check,
    dead_letter_exchange: Check,
}

#[derive(Debug)]
struct PublisherLink {
    connection: Connection,
    channel: Channel,
}

/// The channel copies go on, and whether the broker blocks its connection
/// right now (it says so once a publish has met a resource alarm).
pub(super) struct CopyChannel {
    pub(super) channel: Channel,
    pub(super) blocked: bool,
}

/// Whether a destination takes copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Check {
    #[default]
    Unknown,
    Usable,
    /// Refused by the broker (missing, declared differently, access
    /// refused) or not configured.
    Unusable,
}

/// Where copies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Destination {
    /// `<queue>.delay`, through the default exchange.
    DelayQueue,
    /// The dead-letter exchange of the settings.
    DeadLetterExchange,
}

/// Why a copy is not on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub(super) text: String,
    /// A matter of time (the broker blocks publishing under a resource
    /// alarm, no confirm in time, the channel failed), not of the copy:
    /// keep the original and try again later rather than settle for less.
    pub(super) later: bool,
}

impl Refusal {
    /// Refused for good: what the copy was for must be had another way.
    pub(super) fn now(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            later: false,
        }
    }

    fn later(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            later: true,
        }
    }
}

/// One copy to publish.
pub(super) struct Outgoing<'a> {
    pub(super) routing_key: ShortString,
    pub(super) body: &'a [u8],
    pub(super) properties: BasicProperties,
}

impl Publisher {
    fn check(&mut self, destination: Destination) -> &mut Check {
        match destination {
            Destination::DelayQueue => &mut self.delay_queue,
            Destination::DeadLetterExchange => &mut self.dead_letter_exchange,
        }
    }
}

impl Live {
    /// The consuming channel is gone: so is its publisher connection.
    pub(super) async fn retire_publisher(&self) {
        let mut publisher = self.publisher.lock().await;
        publisher.retired = true;
        if let Some(link) = publisher.link.take() {
            link::close_connection(&link.connection, "consumer gone").await;
        }
    }
}

impl Shared {
    /// The confirm-mode channel for copies to `destination`; `None` when
    /// it cannot be had now.
    pub(super) async fn publisher(
        &self,
        live: &Live,
        destination: Destination,
    ) -> Option<CopyChannel> {
        let mut publisher = live.publisher.lock().await;
        if publisher.retired || *publisher.check(destination) == Check::Unusable {
            return None;
        }
        if destination == Destination::DeadLetterExchange
            && self.settings.dead_letter_exchange.is_none()
        {
            *publisher.check(destination) = Check::Unusable;
            return None;
        }
        let channel = match &publisher.link {
            Some(link) if link.channel.status().connected() => link.channel.clone(),
            _ => {
                if let Some(link) = publisher.link.take() {
                    link::close_connection(&link.connection, "reopening").await;
                }
                let link = self.open_publisher().await?;
                let channel = link.channel.clone();
                publisher.link = Some(link);
                channel
            }
        };
        if *publisher.check(destination) == Check::Unknown {
            let connection = &publisher.link.as_ref()?.connection;
            match self.probe(connection, destination).await {
                Ok(()) => *publisher.check(destination) = Check::Usable,
                Err(failure) => {
                    warn!(queue = %self.settings.queue, ?destination, error = %failure, "destination for copies unusable");
                    if failure.misconfigured {
                        *publisher.check(destination) = Check::Unusable;
                    }
                    return None;
                }
            }
        }
        let blocked = publisher
            .link
            .as_ref()
            .is_some_and(|l| l.connection.status().blocked());
        Some(CopyChannel { channel, blocked })
    }

    async fn open_publisher(&self) -> Option<Box<PublisherLink>> {
        let name = format!("{}.publish", self.settings.connection_name);
        let timer = self.metrics.time(op::CONNECT);
        let connected = link::connect(&self.url, &name, self.settings.connect_timeout).await;
        timer.stop();
        let connection = match connected {
            Ok(connection) => connection,
            Err(failure) => {
                warn!(queue = %self.settings.queue, error = %failure, "no connection to publish copies on");
                return None;
            }
        };
        let timer = self.metrics.time(op::CHANNEL_OPEN);
        let opened = link::open_confirm_channel(&connection).await;
        timer.stop();
        match opened {
            Ok(channel) => Some(Box::new(PublisherLink {
                connection,
                channel,
            })),
            Err(failure) => {
                link::close_connection(&connection, "no confirm channel").await;
                warn!(queue = %self.settings.queue, error = %failure, "no channel to publish copies on");
                None
            }
        }
    }

    /// Checks `destination` on a channel of its own: a refusal closes the
    /// channel it happens on, and the confirm channel must stay open.
    async fn probe(
        &self,
        connection: &Connection,
        destination: Destination,
    ) -> Result<(), Failure> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Failure::from_lapin("open channel", &e))?;
        let checked = match destination {
            Destination::DelayQueue => {
                bootstrap::declare_delay_queue(&channel, &self.settings.queue).await
            }
            Destination::DeadLetterExchange => {
                let name = self.settings.dead_letter_exchange.as_deref().unwrap_or("");
                let exchange = link::short(name).map_err(|e| Failure {
                    misconfigured: true,
                    text: format!("dead-letter exchange name: {e}"),
                })?;
                // Passive: the exchange is the queue's, declared with it;
                // this only asks whether it exists.
                channel
                    .exchange_declare(
                        exchange,
                        ExchangeKind::Fanout,
                        ExchangeDeclareOptions {
                            passive: true,
                            ..ExchangeDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| {
                        Failure::from_lapin(&format!("look up dead-letter exchange {name:?}"), &e)
                    })
            }
        };
        if channel.status().connected() {
            let _ = channel.close(200, "checked".into()).await;
        }
        checked
    }

    /// Publishes each copy to `exchange` ("" = the default exchange), then
    /// waits for the broker's confirms; says for each, in order, whether
    /// the broker has it. `what` names the destination in the reasons.
    ///
    /// One deadline (`confirm_timeout`) for the publishes and the confirms:
    /// a broker under a memory or disk alarm stops reading from publishing
    /// connections, and a publish would wait for it without end. On a
    /// connection the broker has already said it blocks, nothing is tried.
    pub(super) async fn publish_confirmed(
        &self,
        channel: &Channel,
        blocked: bool,
        exchange: &str,
        copies: Vec<Outgoing<'_>>,
        what: &str,
        operation: &'static str,
    ) -> Vec<Result<(), Refusal>> {
        let exchange: ShortString = match link::short(exchange) {
            Ok(name) => name,
            Err(e) => {
                let refusal = Refusal::now(format!("{what}: {e}"));
                return copies.iter().map(|_| Err(refusal.clone())).collect();
            }
        };
        if blocked {
            let refusal = Refusal::later("the broker blocks publishing (resource alarm)");
            return copies.iter().map(|_| Err(refusal.clone())).collect();
        }
        let timeout = self.settings.confirm_timeout;
        let late = || Refusal::later(format!("the copy was not confirmed within {timeout:?}"));
        let timer = self.metrics.time(operation);
        let deadline = Instant::now() + timeout;
        let mut pending = Vec::with_capacity(copies.len());
        for copy in copies {
            let publish = channel.basic_publish(
                exchange.clone(),
                copy.routing_key,
                // Mandatory: a copy no queue takes comes back as a return
                // instead of vanishing.
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                copy.body,
                copy.properties,
            );
            let published = match tokio::time::timeout_at(deadline, publish).await {
                Ok(Ok(confirm)) => Ok(confirm),
                Ok(Err(e)) => Err(Refusal::later(format!("basic.publish to {what}: {e}"))),
                Err(_) => Err(late()),
            };
            pending.push(published);
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for published in pending {
            let outcome = match published {
                Err(refusal) => Err(refusal),
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Ok(Ok(Confirmation::Ack(None))) => Ok(()),
                    Ok(Ok(Confirmation::Ack(Some(_)))) => Err(Refusal::now(format!(
                        "no queue behind {what} took the copy"
                    ))),
                    Ok(Ok(Confirmation::Nack(_))) => {
                        Err(Refusal::now("the broker nacked the copy"))
                    }
                    Ok(Ok(Confirmation::NotRequested)) => Err(Refusal::now(
                        "publisher confirms are off on the publishing channel",
                    )),
                    Ok(Err(e)) => Err(Refusal::later(format!("confirm of the copy: {e}"))),
                    Err(_) => Err(late()),
                },
            };
            outcomes.push(outcome);
        }
        timer.stop();
        outcomes
    }
}
