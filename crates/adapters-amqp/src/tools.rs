//! The operations behind `wsbridge send-command` and `wsbridge monitor` on
//! an AMQP broker: putting a Command on the command queue (or a commands
//! exchange) the way a backend would, and watching what the bridge
//! publishes to the events exchange.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, Consumer};

use crate::link::close_connection;
use crate::link::{self, Failure};
use crate::url::AmqpUrl;

/// How long a tool may take to connect, and the broker to confirm.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// A tool's call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(String);

impl From<Failure> for ToolError {
    fn from(failure: Failure) -> Self {
        Self(failure.text)
    }
}

/// Where `send_command` puts a Command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Straight into a queue (through the default exchange).
    Queue(String),
    /// To an exchange (e.g. the commands exchange of the bootstrap).
    Exchange {
        /// The exchange.
        name: String,
        /// The routing key (ignored by fanout exchanges).
        routing_key: String,
    },
}

/// Publishes `body` (a bare Command or an SNS-style envelope: the source
/// takes both) to `target`, persistent, with a fresh `message_id` and the
/// current `timestamp`, and waits for the broker's confirm. A message that
/// no queue takes is an error (it is published `mandatory`). Returns the
/// message id.
pub async fn send_command(url: &AmqpUrl, target: &Target, body: &str) -> Result<String, ToolError> {
    let connection = link::connect(url, "wsbridge-send-command", TOOL_TIMEOUT).await?;
    let result = publish_command(&connection, target, body).await;
    close_connection(&connection, "command sent").await;
    result
}

async fn publish_command(
    connection: &Connection,
    target: &Target,
    body: &str,
) -> Result<String, ToolError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Failure::from_lapin("open channel", &e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| Failure::from_lapin("confirm.select", &e))?;
    let (exchange, routing_key, described) = match target {
        Target::Queue(queue) => ("", queue.as_str(), format!("queue {queue:?}")),
        Target::Exchange { name, routing_key } => (
            name.as_str(),
            routing_key.as_str(),
            format!("exchange {name:?}"),
        ),
    };
    let message_id = format!("{:032x}", rand::random::<u128>());
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.clone().into())
        .with_timestamp(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        );
    let exchange = link::short(exchange).map_err(ToolError)?;
    let routing_key = link::short(routing_key).map_err(ToolError)?;
    let confirmed = tokio::time::timeout(TOOL_TIMEOUT, async {
        channel
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body.as_bytes(),
                properties,
            )
            .await?
            .await
    })
    .await
    .map_err(|_| {
        ToolError(format!(
            "no confirm from the broker within {TOOL_TIMEOUT:?}"
        ))
    })?
    .map_err(|e| Failure::from_lapin(&format!("publish to {described}"), &e))?;
    // Closed before the connection, or lapin reports the channel as broken.
    let _ = channel.close(200, "command sent".into()).await;
    match confirmed {
        Confirmation::Ack(None) => Ok(message_id),
        Confirmation::Ack(Some(_)) => Err(ToolError(format!(
            "publish to {described}: no queue took the command (unroutable)"
        ))),
        Confirmation::Nack(_) => Err(ToolError(format!(
            "publish to {described}: the broker refused the command (nack)"
        ))),
        Confirmation::NotRequested => Err(ToolError(
            "publisher confirms are off on the tool's channel".to_owned(),
        )),
    }
}

/// One event seen on the events exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    /// The AMQP `message_id` property (empty when there is none).
    pub message_id: String,
    /// The published ClientMessage JSON.
    pub message: String,
    /// The routing key (the event's action, as the bridge publishes).
    pub routing_key: String,
    /// The headers (`client_id`, `action`, …), as text.
    pub attributes: BTreeMap<String, String>,
}

/// A temporary queue bound to the events exchange: exclusive and
/// auto-delete, so the broker removes it when the monitor's connection
/// ends, however it ends.
#[derive(Debug)]
pub struct Monitor {
    connection: Connection,
    _channel: Channel,
    consumer: Consumer,
    queue: String,
}

impl Monitor {
    /// Binds a new server-named queue to `events_exchange` with
    /// `binding_key` (`#` takes everything from a topic exchange; `chat.*`
    /// only some actions) and starts consuming it.
    pub async fn start(
        url: &AmqpUrl,
        events_exchange: &str,
        binding_key: &str,
    ) -> Result<Self, ToolError> {
        let connection = link::connect(url, "wsbridge-monitor", TOOL_TIMEOUT).await?;
        match Self::bind(&connection, events_exchange, binding_key).await {
            Ok((channel, consumer, queue)) => Ok(Self {
                connection,
                _channel: channel,
                consumer,
                queue,
            }),
            Err(error) => {
                close_connection(&connection, "monitor setup failed").await;
                Err(error)
            }
        }
    }

    async fn bind(
        connection: &Connection,
        events_exchange: &str,
        binding_key: &str,
    ) -> Result<(Channel, Consumer, String), ToolError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| Failure::from_lapin("open channel", &e))?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| Failure::from_lapin("declare the monitor's queue", &e))?;
        let name = queue.name().clone();
        channel
            .queue_bind(
                name.clone(),
                link::short(events_exchange).map_err(ToolError)?,
                link::short(binding_key).map_err(ToolError)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                Failure::from_lapin(&format!("bind to exchange {events_exchange:?}"), &e)
            })?;
        let consumer = channel
            .basic_consume(
                name.clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| Failure::from_lapin("consume the monitor's queue", &e))?;
        Ok((channel, consumer, name.as_str().to_owned()))
    }

    /// The temporary queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Waits up to `wait` for a first event, then returns it with every
    /// event already arrived behind it.
    pub async fn next_events(&mut self, wait: Duration) -> Result<Vec<SeenEvent>, ToolError> {
        let mut seen = Vec::new();
        let first = match tokio::time::timeout(wait, self.consumer.next()).await {
            Err(_) => return Ok(seen),
            Ok(first) => first,
        };
        let mut next = first;
        loop {
            match next {
                Some(Ok(delivery)) => seen.push(SeenEvent {
                    message_id: delivery
                        .properties
                        .message_id()
                        .as_ref()
                        .map(|id| id.as_str().to_owned())
                        .unwrap_or_default(),
                    message: String::from_utf8_lossy(&delivery.data).into_owned(),
                    routing_key: delivery.routing_key.as_str().to_owned(),
                    attributes: delivery
                        .properties
                        .headers()
                        .as_ref()
                        .map(|headers| {
                            headers
                                .into_iter()
                                .map(|(k, v)| (k.as_str().to_owned(), header_text(v)))
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
                Some(Err(error)) => {
                    if seen.is_empty() {
                        return Err(Failure::from_lapin("monitor", &error).into());
                    }
                    break;
                }
                None => {
                    if seen.is_empty() {
                        return Err(ToolError("the monitor's consumer was cancelled".to_owned()));
                    }
                    break;
                }
            }
            // Whatever has arrived already, without waiting.
            match tokio::time::timeout(Duration::ZERO, self.consumer.next()).await {
                Ok(more) => next = more,
                Err(_) => break,
            }
        }
        Ok(seen)
    }

    /// Closes the connection; the broker deletes the temporary queue.
    pub async fn stop(self) -> Result<(), ToolError> {
        self.connection
            .close(200, "monitor stopped".into())
            .await
            .map_err(|e| Failure::from_lapin("close", &e).into())
    }
}

/// A header value as text: strings as they are, numbers and booleans
/// printed, anything else in its debug form.
fn header_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_render_as_text() {
        assert_eq!(header_text(&AMQPValue::LongString("c1".into())), "c1");
        assert_eq!(header_text(&AMQPValue::ShortString("a".into())), "a");
        assert_eq!(header_text(&AMQPValue::LongLongInt(-3)), "-3");
        assert_eq!(header_text(&AMQPValue::Boolean(true)), "true");
    }
}
