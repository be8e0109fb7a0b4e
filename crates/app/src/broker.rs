//! Choosing the message broker (`broker = "aws" | "amqp"`): the concrete
//! command source and event sink behind the domain's ports, and how each is
//! flushed and closed at shutdown.

use std::sync::Arc;
use std::time::Duration;

use adapters_amqp::{
    AmqpCommandSource, AmqpEventSink, AmqpSinkSettings, AmqpSourceSettings, AmqpUrl,
};
use adapters_aws::sdk::Clients;
use adapters_aws::{SnsEventSink, SnsSinkSettings, SqsCommandSource, SqsSourceSettings};
use domain::{CommandSource, EventSink, Stats};

use crate::config::{ConfigError, Settings};

/// How to reach the broker.
#[derive(Debug, Clone)]
pub enum Connection {
    /// SNS/SQS through these clients.
    Aws(Clients),
    /// RabbitMQ at `amqp_url` (from the settings).
    Amqp,
}

impl From<Clients> for Connection {
    fn from(clients: Clients) -> Self {
        Self::Aws(clients)
    }
}

/// The adapters of one broker, wired for the use cases.
pub struct Adapters {
    /// Where Commands come from.
    pub source: Arc<dyn CommandSource>,
    /// Where client events go.
    pub sink: Arc<dyn EventSink>,
    /// What shutdown must flush and close.
    pub closer: Closer,
}

/// The broker-specific part of a graceful shutdown.
pub enum Closer {
    /// SNS: answer every publish already queued.
    Aws(SnsEventSink),
    /// AMQP: settle and close the channels (unacknowledged deliveries go
    /// back to the queue).
    Amqp(Arc<AmqpCommandSource>, Arc<AmqpEventSink>),
}

impl Closer {
    /// Flushes pending publishes and closes connections.
    pub async fn close(&self) {
        match self {
            Closer::Aws(sink) => sink.flush().await,
            Closer::Amqp(source, sink) => {
                sink.close().await;
                source.close().await;
            }
        }
    }
}

/// Builds the source and sink the settings ask for.
pub fn connect(
    settings: &Settings,
    connection: Connection,
    stats: &Arc<Stats>,
) -> Result<Adapters, ConfigError> {
    match connection {
        Connection::Aws(clients) => {
            let queue_url = settings.required("command_queue_url", &settings.command_queue_url)?;
            let topic_arn = settings.required("events_topic_arn", &settings.events_topic_arn)?;
            let source = SqsCommandSource::new(
                clients.sqs,
                queue_url,
                SqsSourceSettings {
                    wait_time: Duration::from_secs(settings.receive_wait_secs),
                    ..SqsSourceSettings::default()
                },
            )
            .with_stats(stats.clone());
            let sink = SnsEventSink::spawn_with_stats(
                clients.sns,
                topic_arn,
                SnsSinkSettings {
                    linger: Duration::from_millis(settings.publish_linger_ms),
                    ..SnsSinkSettings::default()
                },
                &stats.calls,
            );
            Ok(Adapters {
                source: Arc::new(source),
                sink: Arc::new(sink.clone()),
                closer: Closer::Aws(sink),
            })
        }
        Connection::Amqp => {
            let url = amqp_url(settings)?;
            let source = Arc::new(AmqpCommandSource::spawn(
                url.clone(),
                AmqpSourceSettings {
                    queue: settings.amqp_command_queue.clone(),
                    wait_time: Duration::from_secs(settings.receive_wait_secs),
                    ..AmqpSourceSettings::default()
                },
            ));
            let sink = Arc::new(AmqpEventSink::spawn(
                url,
                AmqpSinkSettings {
                    exchange: settings.amqp_events_exchange.clone(),
                    ..AmqpSinkSettings::default()
                },
            ));
            Ok(Adapters {
                source: source.clone(),
                sink: sink.clone(),
                closer: Closer::Amqp(source, sink),
            })
        }
    }
}

/// The configured AMQP URL, parsed.
pub fn amqp_url(settings: &Settings) -> Result<AmqpUrl, ConfigError> {
    let raw = settings.required("amqp_url", &settings.amqp_url)?;
    AmqpUrl::parse(raw).map_err(|e| ConfigError {
        problems: vec![format!("amqp_url: {e}")],
    })
}
