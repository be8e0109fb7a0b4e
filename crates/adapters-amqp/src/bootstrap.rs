//! Idempotent declaration of what the bridge needs on the broker:
//!
//! ```text
//! commands exchange (fanout, optional) ──▶ command queue ──reject──▶ dead-letter exchange (fanout) ──▶ dead-letter queue
//!                                          ▲        │release(delay)
//!                                          │        ▼
//!                                          └──TTL── delay queue
//! bridge ──publish (routing key = action, headers client_id/action)──▶ events exchange (topic)
//! bridge ──publish (routing key = outcome, headers outcome/client_id)──▶ receipts exchange (topic, optional)
//! ```
//!
//! Safe to run on every start: declaring an exchange or queue that exists
//! with the same settings is a no-op for the broker. One that exists with
//! other settings (another type, other arguments) is refused by the broker
//! with `PRECONDITION_FAILED`; [`ensure`] reports which and leaves it alone.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};

use crate::link::{self, Failure};
use crate::url::AmqpUrl;

/// Default name of the queue the bridge consumes.
pub const DEFAULT_COMMAND_QUEUE: &str = "wsbridge.commands";
/// Default name of the exchange client events are published to.
pub const DEFAULT_EVENTS_EXCHANGE: &str = "wsbridge.events";
/// Name of the exchange delivery receipts are published to when none is
/// given (receipts themselves are off unless configured).
pub const DEFAULT_RECEIPTS_EXCHANGE: &str = "wsbridge.receipts";

/// The kind of the command and dead-letter queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueType {
    /// A classic queue: one node, lightest. Redeliveries are only flagged
    /// (`redelivered`), not counted.
    #[default]
    Classic,
    /// A quorum queue: replicated, and counts redeliveries in the
    /// `x-delivery-count` header, which the source reports as `receive_count`.
    Quorum,
}

/// Names and kinds of everything the bridge uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange client events are published to (routing key = action).
    pub events_exchange: String,
    /// Durable queue the bridge consumes.
    pub command_queue: String,
    /// Kind of the command queue and its dead-letter queue.
    pub queue_type: QueueType,
    /// Fanout exchange the command queue dead-letters rejected messages to.
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange, where poison messages wait.
    pub dead_letter_queue: String,
    /// Fanout exchange bound to the command queue, so that backends can
    /// publish Commands to an exchange (the analogue of the SNS commands
    /// topic); `None` to declare none.
    pub commands_exchange: Option<String>,
    /// Topic exchange delivery receipts are published to (routing key =
    /// outcome); `None` (receipts off) to declare none.
    pub receipts_exchange: Option<String>,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new(DEFAULT_COMMAND_QUEUE, DEFAULT_EVENTS_EXCHANGE)
    }
}

impl Topology {
    /// The topology around `command_queue`: dead-letter exchange
    /// `<queue>.dlx`, dead-letter queue `<queue>.dlq`, commands exchange
    /// `<queue>` (exchanges and queues have separate names on a broker).
    pub fn new(command_queue: &str, events_exchange: &str) -> Self {
        Self {
            events_exchange: events_exchange.to_owned(),
            command_queue: command_queue.to_owned(),
            queue_type: QueueType::Classic,
            dead_letter_exchange: format!("{command_queue}.dlx"),
            dead_letter_queue: format!("{command_queue}.dlq"),
            commands_exchange: Some(command_queue.to_owned()),
            receipts_exchange: None,
        }
    }

    /// The same topology, with a receipts exchange to declare.
    #[must_use]
    pub fn with_receipts_exchange(mut self, exchange: &str) -> Self {
        self.receipts_exchange = Some(exchange.to_owned());
        self
    }

    /// The queue where released messages wait out their delay
    /// (see [`delay_queue_name`]).
    pub fn delay_queue(&self) -> String {
        delay_queue_name(&self.command_queue)
    }
}

/// The delay queue of a command queue: `<queue>.delay`. Messages published
/// to it with a per-message TTL (`expiration`) are dead-lettered, when it
/// expires, through the default exchange back to the command queue.
pub fn delay_queue_name(command_queue: &str) -> String {
    format!("{command_queue}.delay")
}

/// A step of the bootstrap failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BootstrapError(String);

impl From<Failure> for BootstrapError {
    fn from(failure: Failure) -> Self {
        Self(failure.text)
    }
}

/// How long connecting may take during the bootstrap.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Declares every exchange, queue and binding of `topology` (creating what
/// is missing, leaving what exists), then closes its connection.
pub async fn ensure(url: &AmqpUrl, topology: &Topology) -> Result<(), BootstrapError> {
    let connection = link::connect(url, "wsbridge-bootstrap", CONNECT_TIMEOUT).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Failure::from_lapin("open channel", &e))?;
    let result = declare_all(&channel, topology).await;
    // A failed declaration has closed the channel; the connection goes either way.
    let _ = connection.close(200, "bootstrap done".into()).await;
    result
}

async fn declare_all(channel: &Channel, topology: &Topology) -> Result<(), BootstrapError> {
    declare_exchange(channel, &topology.events_exchange, ExchangeKind::Topic).await?;
    if let Some(exchange) = &topology.receipts_exchange {
        declare_exchange(channel, exchange, ExchangeKind::Topic).await?;
    }
    declare_exchange(
        channel,
        &topology.dead_letter_exchange,
        ExchangeKind::Fanout,
    )
    .await?;
    let mut queue_args = FieldTable::default();
    if topology.queue_type == QueueType::Quorum {
        queue_args.insert("x-queue-type".into(), text("quorum"));
    }
    declare_queue(channel, &topology.dead_letter_queue, queue_args.clone()).await?;
    bind(
        channel,
        &topology.dead_letter_queue,
        &topology.dead_letter_exchange,
    )
    .await?;

    queue_args.insert(
        "x-dead-letter-exchange".into(),
        text(&topology.dead_letter_exchange),
    );
    declare_queue(channel, &topology.command_queue, queue_args).await?;
    declare_delay_queue(channel, &topology.command_queue)
        .await
        .map_err(BootstrapError::from)?;
    if let Some(exchange) = &topology.commands_exchange {
        declare_exchange(channel, exchange, ExchangeKind::Fanout).await?;
        bind(channel, &topology.command_queue, exchange).await?;
    }
    Ok(())
}

/// Declares the delay queue of `command_queue` (classic whatever the command
/// queue's kind: it only holds messages until their TTL). Shared by the
/// bootstrap and the command source, so both declare it identically.
pub(crate) async fn declare_delay_queue(
    channel: &Channel,
    command_queue: &str,
) -> Result<(), Failure> {
    let name = delay_queue_name(command_queue);
    let mut args = FieldTable::default();
    // The default exchange routes by queue name.
    args.insert("x-dead-letter-exchange".into(), text(""));
    args.insert("x-dead-letter-routing-key".into(), text(command_queue));
    let queue = link::short(&name).map_err(|e| Failure {
        misconfigured: true,
        text: format!("delay queue name: {e}"),
    })?;
    channel
        .queue_declare(queue, QueueDeclareOptions::durable(), args)
        .await
        .map(drop)
        .map_err(|e| Failure::from_lapin(&format!("declare delay queue {name:?}"), &e))
}

async fn declare_exchange(
    channel: &Channel,
    name: &str,
    kind: ExchangeKind,
) -> Result<(), BootstrapError> {
    let what = format!("declare exchange {name:?} ({kind:?})");
    channel
        .exchange_declare(
            short_name(name)?,
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| declare_error(&what, &e))
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    args: FieldTable,
) -> Result<(), BootstrapError> {
    let what = format!("declare queue {name:?}");
    channel
        .queue_declare(short_name(name)?, QueueDeclareOptions::durable(), args)
        .await
        .map(drop)
        .map_err(|e| declare_error(&what, &e))
}

async fn bind(channel: &Channel, queue: &str, exchange: &str) -> Result<(), BootstrapError> {
    channel
        .queue_bind(
            short_name(queue)?,
            short_name(exchange)?,
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| declare_error(&format!("bind queue {queue:?} to {exchange:?}"), &e))
}

fn declare_error(what: &str, error: &lapin::Error) -> BootstrapError {
    let failure = Failure::from_lapin(what, error);
    if failure.text.contains("PRECONDITION_FAILED") {
        BootstrapError(format!(
            "{}: it exists with other settings; delete it or choose other names",
            failure.text
        ))
    } else {
        failure.into()
    }
}

fn short_name(name: &str) -> Result<lapin::types::ShortString, BootstrapError> {
    link::short(name).map_err(|e| BootstrapError(format!("name {name:?}: {e}")))
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names() {
        let topology = Topology::default();
        assert_eq!(topology.command_queue, "wsbridge.commands");
        assert_eq!(topology.events_exchange, "wsbridge.events");
        assert_eq!(topology.dead_letter_exchange, "wsbridge.commands.dlx");
        assert_eq!(topology.dead_letter_queue, "wsbridge.commands.dlq");
        assert_eq!(
            topology.commands_exchange.as_deref(),
            Some("wsbridge.commands")
        );
        assert_eq!(topology.delay_queue(), "wsbridge.commands.delay");
        assert_eq!(topology.receipts_exchange, None);
        let topology = topology.with_receipts_exchange(DEFAULT_RECEIPTS_EXCHANGE);
        assert_eq!(
            topology.receipts_exchange.as_deref(),
            Some("wsbridge.receipts")
        );
    }
}
