//! The one seam between the app and the message brokers: the broker section
//! of the configuration turned into the domain's ports (command source,
//! event sink), what shutdown must flush, the replica queue of fanout and
//! sharded mode, and the capabilities of the helper commands (`dev`'s
//! resources, `send-command`, `monitor`). Nothing else in the app matches on
//! the broker: [`aws`] and [`amqp`] hold each one's side.

pub mod amqp;
pub mod aws;
pub mod embedded;
pub mod relay;
pub mod replica;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use adapters_aws::sdk::Clients;
use adapters_aws::AwsMetrics;
use domain::{CommandSource, EventSink, ReceiptSink, Stats};

pub use self::relay::ControlRelay;
pub use self::status::BrokerStatus;
use crate::config::{BrokerConfig, Config, ConfigError};

/// How to reach the broker, for [`Application::build`](crate::startup::Application::build).
#[derive(Debug, Clone)]
pub enum Connection {
    /// SNS/SQS through these clients.
    Aws(Clients),
    /// RabbitMQ at the configured `amqp_url`.
    Amqp,
}

impl From<Clients> for Connection {
    fn from(clients: Clients) -> Self {
        Self::Aws(clients)
    }
}

/// The ports of one broker, wired for the use cases.
pub struct Ports {
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
    /// Where delivery receipts go, when they are on.
    pub receipts: Option<Arc<dyn ReceiptSink>>,
    /// Where the admin API sends a control message for a client not here.
    pub relay: Arc<ControlRelay>,
}

/// The broker-specific part of a graceful shutdown.
pub struct Closer(CloserKind);

enum CloserKind {
    Aws(aws::Closer),
    Amqp(amqp::Closer),
}

impl Closer {
    /// Flushes pending publishes and closes connections.
    pub async fn close(&self) {
        match &self.0 {
            CloserKind::Aws(closer) => closer.close().await,
            CloserKind::Amqp(closer) => closer.close().await,
        }
    }
}

/// Builds the source, sink and receipt sink `config` asks for over `connection`.
pub fn connect(
    config: &Config,
    connection: Connection,
    stats: &Arc<Stats>,
) -> Result<Ports, ConfigError> {
    match (&config.broker, connection) {
        (BrokerConfig::Aws(resources), Connection::Aws(clients)) => {
            aws::connect(config, resources, clients, stats)
        }
        (BrokerConfig::Amqp(resources), Connection::Amqp) => {
            Ok(amqp::connect(config, resources, stats))
        }
        (BrokerConfig::Aws(_), Connection::Amqp) | (BrokerConfig::Amqp(_), Connection::Aws(_)) => {
            Err(ConfigError {
                problems: vec![
                    "broker: the connection given is not the configured broker's".into(),
                ],
            })
        }
    }
}

/// A broker the `serve`/`dev` commands run against: connected, with `dev`'s
/// resources made when asked, and the replica's own queue joined in fanout
/// and sharded mode.
pub struct Serving {
    /// The configuration, with the resources actually used (those `dev`
    /// made, the replica's own queue).
    pub config: Config,
    /// How the bridge reaches the broker.
    pub connection: Connection,
    replica: Option<replica::Instance>,
    emulator: Option<emulator::Emulator>,
}

/// What `dev` adds to `serve`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dev {
    /// With broker = "aws": the SQS/SNS endpoint to use (`--endpoint`);
    /// unset, `AWS_ENDPOINT_URL`, and without it the embedded emulator.
    pub endpoint: Option<String>,
    /// The environment variables `dev` took from `.env` (not set in the
    /// shell it was started from), for the `export` lines it prints.
    pub from_dotenv: Vec<String>,
}

impl Serving {
    /// Connects; with `dev`, first makes sure the development resources
    /// exist (on SNS/SQS, starting the embedded emulator when no endpoint
    /// is given); then joins the replica queue of the configured mode.
    pub async fn start(config: Config, dev: Option<Dev>) -> anyhow::Result<Self> {
        match &config.broker {
            BrokerConfig::Amqp(resources) => {
                if dev.is_some() {
                    amqp::prepare_dev(resources).await?;
                }
                Ok(Self {
                    config,
                    connection: Connection::Amqp,
                    replica: None,
                    emulator: None,
                })
            }
            BrokerConfig::Aws(resources) => {
                let (clients, emulator, config) = match dev {
                    None => {
                        resources.required_for_serve(&config.scale)?;
                        (Clients::from_env().await, None, config)
                    }
                    Some(dev) => {
                        let (clients, emulator) =
                            aws::dev_clients(dev.endpoint.as_deref(), resources.emulator_port)
                                .await?;
                        let config = aws::prepare_dev(&clients, config).await?;
                        (clients, emulator, config)
                    }
                };
                let (config, replica) = replica::join(&clients, config).await?;
                Ok(Self {
                    config,
                    connection: Connection::Aws(clients),
                    replica,
                    emulator,
                })
            }
        }
    }

    /// The endpoint of the embedded emulator `dev` started, if it did.
    pub fn emulator_endpoint(&self) -> Option<&str> {
        self.emulator.as_ref().map(emulator::Emulator::endpoint)
    }

    /// Leaves the replica queue (fanout: removes it); after the drain. Then
    /// stops the embedded emulator, if `dev` started one.
    pub async fn leave(self) {
        if let Some(replica) = self.replica {
            replica.leave().await;
        }
        if let Some(emulator) = self.emulator {
            emulator.stop().await;
        }
    }
}

/// Where `send-command` puts a Command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendTarget {
    /// The command queue, wrapped as an SNS notification would be.
    QueueEnveloped,
    /// The command queue, the bare Command.
    QueueRaw,
    /// The commands topic (exchange), as a backend publishes.
    Topic,
}

/// `send-command`: puts `json` (a Command for `client_id`) where `target`
/// says; returns the broker's message id.
pub async fn send_command(
    config: &Config,
    json: &str,
    client_id: &domain::ClientId,
    target: SendTarget,
) -> anyhow::Result<String> {
    match &config.broker {
        BrokerConfig::Aws(resources) => {
            aws::send_command(config, resources, json, client_id, target).await
        }
        BrokerConfig::Amqp(resources) => amqp::send_command(resources, json, target).await,
    }
}

/// One event seen by the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    /// The broker's message id.
    pub message_id: String,
    /// The message body (a ClientMessage JSON).
    pub message: String,
    /// Its attributes (headers).
    pub attributes: BTreeMap<String, String>,
}

/// The `monitor` capability: a temporary subscription to the events.
pub struct Monitor {
    kind: MonitorKind,
    /// What is monitored, through what.
    what: String,
}

enum MonitorKind {
    Aws(adapters_aws::tools::Monitor),
    Amqp(Box<adapters_amqp::tools::Monitor>),
}

impl Monitor {
    /// Subscribes a temporary queue to the events topic (exchange).
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let (kind, what) = match &config.broker {
            BrokerConfig::Aws(resources) => {
                let (monitor, what) = aws::monitor(resources).await?;
                (MonitorKind::Aws(monitor), what)
            }
            BrokerConfig::Amqp(resources) => {
                let (monitor, what) = amqp::monitor(resources).await?;
                (MonitorKind::Amqp(Box::new(monitor)), what)
            }
        };
        Ok(Self { kind, what })
    }

    /// What is monitored, through what, for the operator.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// The events that arrived, waiting up to `wait` for the first.
    pub async fn next_events(&mut self, wait: Duration) -> anyhow::Result<Vec<SeenEvent>> {
        match &mut self.kind {
            MonitorKind::Aws(monitor) => aws::next_events(monitor, wait).await,
            MonitorKind::Amqp(monitor) => amqp::next_events(monitor.as_mut(), wait).await,
        }
    }

    /// Removes the temporary queue and its subscription.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self.kind {
            MonitorKind::Aws(monitor) => monitor.stop().await.map_err(Into::into),
            MonitorKind::Amqp(monitor) => monitor.stop().await.map_err(Into::into),
        }
    }
}
