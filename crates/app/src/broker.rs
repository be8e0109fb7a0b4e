//! Choosing the message broker (`broker = "aws" | "amqp"`): the concrete
//! command source and event sink behind the domain's ports, the readiness
//! and metrics their adapters report, and how each is flushed and closed at
//! shutdown.

use std::sync::Arc;
use std::time::Duration;

use adapters_amqp::{
    AmqpCommandSource, AmqpEventSink, AmqpSinkSettings, AmqpSourceSettings, AmqpUrl,
};
use adapters_aws::sdk::Clients;
use adapters_aws::{
    AwsMetrics, SnsEventSink, SnsSinkSettings, SqsCommandSource, SqsSourceSettings,
};
use domain::{CommandSource, EventSink};

use crate::amqp_readiness::ReceiveWatch;
use crate::broker_status::BrokerStatus;
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
    /// Readiness and metrics, as the adapters report them.
    pub status: BrokerStatus,
    /// `broker = "aws"`: the metrics the SQS source and SNS sink record into.
    pub aws_metrics: Option<AwsMetrics>,
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
pub fn connect(settings: &Settings, connection: Connection) -> Result<Adapters, ConfigError> {
    match connection {
        Connection::Aws(clients) => {
            let metrics = AwsMetrics::new();
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
            .with_metrics(metrics.clone());
            let sink = SnsEventSink::spawn_with_metrics(
                clients.sns,
                topic_arn,
                SnsSinkSettings {
                    linger: Duration::from_millis(settings.publish_linger_ms),
                    ..SnsSinkSettings::default()
                },
                metrics.clone(),
            );
            let readiness = metrics.clone();
            Ok(Adapters {
                source: Arc::new(source),
                sink: Arc::new(sink.clone()),
                closer: Closer::Aws(sink),
                status: BrokerStatus::new(move || readiness.not_ready_reason())
                    .with_collector(metrics.clone()),
                aws_metrics: Some(metrics),
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
            // No AMQP series yet; readiness from the receives' outcomes.
            let watched = Arc::new(ReceiveWatch::new(source.clone()));
            let readiness = watched.clone();
            Ok(Adapters {
                source: watched,
                sink: sink.clone(),
                closer: Closer::Amqp(source, sink),
                status: BrokerStatus::new(move || readiness.not_ready_reason()),
                aws_metrics: None,
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
