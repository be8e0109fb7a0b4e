//! The typed configuration the code reads: [`Config`], in sections that
//! mirror what an operator decides (server, broker, scale, downlink, uplink,
//! connections, auth), made from validated [`Settings`]. A setting of another
//! broker or mode has no field to land in: the broker and the scale are enums.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::http::header::HeaderName;
use adapters_amqp::AmqpUrl;
use adapters_ws::{AbusePolicy, ConnectionLimits, MessageRate, SessionSettings};
use domain::{DownlinkSettings, RetryRule, ShardAssignment, Undeliverable};

use super::values::{
    normalize_origin, AuthMode, Broker, LogFormat, Mode, Secret, SqsClient, UndeliverablePolicy,
};
use super::{ConfigError, Settings, Sources, ENV_PREFIX};

/// The whole configuration of one bridge, valid by construction.
#[derive(Debug, Clone)]
pub struct Config {
    /// The HTTP listener and the process.
    pub server: Server,
    /// The message broker and its resources.
    pub broker: BrokerConfig,
    /// How replicas share the command stream.
    pub scale: Scale,
    /// What every replica of the fleet agrees on (also read by `gc`, `shards`).
    pub fleet: Fleet,
    /// Commands from the broker to the clients.
    pub downlink: Downlink,
    /// Client messages to the broker.
    pub uplink: Uplink,
    /// The limits and timers of every WebSocket session.
    pub session: SessionSettings,
    /// Who may connect.
    pub access: Access,
    /// Log output format.
    pub log_format: LogFormat,
    /// The flat settings this was made from (for `wsbridge config`).
    settings: Settings,
}

/// Where the admin API listens, and its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminListener {
    /// Address to listen on.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The bearer token every call must carry.
    pub token: Secret,
}

/// The HTTP listener and the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// HTTP worker threads (0: one per CPU core).
    pub workers: usize,
    /// Time a client has to send its request head.
    pub handshake_timeout: Duration,
    /// Deadline of a graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Whether the test-only `/__echo` route is mounted.
    pub echo_route: bool,
    /// The admin API's address and bearer token, when it is on.
    pub admin: Option<AdminListener>,
}

/// Which broker, and its resources.
#[derive(Debug, Clone)]
pub enum BrokerConfig {
    /// SNS/SQS.
    Aws(AwsResources),
    /// RabbitMQ.
    Amqp(AmqpResources),
}

/// The SNS/SQS resources, as configured. Each is needed by some commands
/// only (`serve` needs the queue and the events topic, `gc` the commands
/// topic), so each is checked by the command that needs it, before it starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsResources {
    /// The SQS queue Commands arrive on.
    pub command_queue_url: Option<String>,
    /// The SNS topic client messages are published to.
    pub events_topic_arn: Option<String>,
    /// The SNS topic backends publish Commands to.
    pub commands_topic_arn: Option<String>,
    /// Where given-up Commands go, instead of the queue's RedrivePolicy target.
    pub dead_letter_queue_url: Option<String>,
    /// Where delivery receipts are published (none when unset).
    pub receipts_topic_arn: Option<String>,
    /// The port of the embedded emulator `dev` starts without an endpoint
    /// (0: any free port).
    pub emulator_port: u16,
}

impl AwsResources {
    /// The command queue, or an error naming the setting.
    pub fn command_queue_url(&self) -> Result<&str, ConfigError> {
        required("command_queue_url", &self.command_queue_url)
    }

    /// The events topic, or an error naming the setting.
    pub fn events_topic_arn(&self) -> Result<&str, ConfigError> {
        required("events_topic_arn", &self.events_topic_arn)
    }

    /// The commands topic, or an error naming the setting.
    pub fn commands_topic_arn(&self) -> Result<&str, ConfigError> {
        required("commands_topic_arn", &self.commands_topic_arn)
    }

    /// What `serve` needs in `scale` mode (shared: the command queue and the
    /// events topic; fanout and sharded: the commands topic, which the
    /// replica's own queue is subscribed to, and the events topic), or one
    /// error naming each missing setting. There are no local defaults: only
    /// `dev` makes its own.
    pub fn required_for_serve(&self, scale: &Scale) -> Result<(), ConfigError> {
        let checks = [
            match scale {
                Scale::Shared => self.command_queue_url().err(),
                Scale::Fanout { .. } | Scale::Sharded(_) => self.commands_topic_arn().err(),
            },
            self.events_topic_arn().err(),
        ];
        let problems: Vec<String> = checks
            .into_iter()
            .flatten()
            .flat_map(|e| e.problems)
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }
}

/// The RabbitMQ broker and its names.
#[derive(Debug, Clone)]
pub struct AmqpResources {
    /// The broker (its password redacted in every display).
    pub url: AmqpUrl,
    /// The durable queue Commands arrive on.
    pub command_queue: String,
    /// The topic exchange client messages are published to.
    pub events_exchange: String,
    /// The topic exchange delivery receipts are published to (none when unset).
    pub receipts_exchange: Option<String>,
    /// Most unacknowledged deliveries the broker hands the bridge at once.
    pub prefetch: u16,
}

/// How replicas share the command stream (docs/scaling.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scale {
    /// Every replica consumes the one configured queue.
    Shared,
    /// Every replica consumes a queue of its own.
    Fanout {
        /// This instance's id (`None`: a random one per start).
        instance_id: Option<String>,
    },
    /// Every replica consumes the queue of the shards it owns.
    Sharded(ShardAssignment),
}

/// What the replicas of one fleet agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// Prefix of the replica queues and the tag `gc` looks for.
    pub bridge_name: String,
    /// The number of shards of the client-id space.
    pub shards: u32,
    /// How often a replica refreshes its queue's heartbeat tag.
    pub heartbeat: Duration,
    /// After how long without a heartbeat `gc` removes a replica's queue.
    pub gc_stale_after: Duration,
    /// Receives after which the dead-letter queue takes a message, on the
    /// queues the bridge creates.
    pub max_receive_count: u32,
}

/// The command consumer and the delivery rules.
#[derive(Debug, Clone, PartialEq)]
pub struct Downlink {
    /// Long-poll loops that always run.
    pub pollers: usize,
    /// Long-poll loops that may run under load.
    pub pollers_max: usize,
    /// How long a delete or release waits for others to share its call.
    pub settle_linger: Duration,
    /// With broker = "aws", the client of the receive path's SQS calls.
    pub sqs_client: SqsClient,
    /// Long-poll wait of each receive.
    pub receive_wait: Duration,
    /// The delivery rules of the downlink use case.
    pub delivery: DownlinkSettings,
}

/// The publishing of client messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplink {
    /// How long the first message of a batch waits for others.
    pub publish_linger: Duration,
    /// With presence events on, the instance id they name (`instance_id`,
    /// else a random one per start).
    pub presence_instance: Option<String>,
}

/// The checks made before an upgrade.
#[derive(Debug, Clone)]
pub struct Access {
    /// How clients authenticate.
    pub auth: AuthMode,
    /// The JWT keys and claims (a key is always there with `auth = "jwt"`).
    pub jwt: Jwt,
    /// Normalized allowed origins; empty: any.
    pub allowed_origins: Vec<String>,
    /// The header naming the client's address behind a trusted proxy.
    pub client_ip_header: Option<HeaderName>,
}

/// JWT verification (and `wsbridge token`'s signing).
#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    /// HS256 secret.
    pub secret: Option<Secret>,
    /// RS256 public key file (PEM or JWKS).
    pub public_key_file: Option<PathBuf>,
    /// RS256 keys from a JWKS URL.
    pub jwks_url: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Config {
    /// The port of the embedded emulator (`emulator_port`; with broker =
    /// "amqp", where it cannot be set, its default).
    pub fn emulator_port(&self) -> u16 {
        match &self.broker {
            BrokerConfig::Aws(resources) => resources.emulator_port,
            BrokerConfig::Amqp(_) => Settings::default().emulator_port,
        }
    }

    /// Loads the layers and validates them into a configuration.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        Self::new(Settings::load(sources)?)
    }

    /// Validates `settings` into a configuration.
    pub fn new(settings: Settings) -> Result<Self, ConfigError> {
        settings.validate()?;
        let s = &settings;
        let broker = match s.broker {
            Broker::Aws => BrokerConfig::Aws(AwsResources {
                command_queue_url: s.command_queue_url.clone(),
                events_topic_arn: s.events_topic_arn.clone(),
                commands_topic_arn: s.commands_topic_arn.clone(),
                dead_letter_queue_url: s.dead_letter_queue_url.clone(),
                receipts_topic_arn: s.receipts_topic_arn.clone(),
                emulator_port: s.emulator_port,
            }),
            Broker::Amqp => {
                let raw = required("amqp_url", &s.amqp_url)?;
                let mut url = AmqpUrl::parse(raw).map_err(|e| ConfigError {
                    problems: vec![format!("amqp_url: {e}")],
                })?;
                if let Some(path) = &s.amqp_ca_file {
                    url = url.with_ca_file(path).map_err(|e| ConfigError {
                        problems: vec![format!("amqp_ca_file: {e}")],
                    })?;
                }
                BrokerConfig::Amqp(AmqpResources {
                    url,
                    command_queue: s.amqp_command_queue.clone(),
                    events_exchange: s.amqp_events_exchange.clone(),
                    receipts_exchange: s.amqp_receipts_exchange.clone(),
                    prefetch: s.amqp_prefetch,
                })
            }
        };
        let scale = match s.mode {
            Mode::Shared => Scale::Shared,
            Mode::Fanout => Scale::Fanout {
                instance_id: s.instance_id.clone(),
            },
            Mode::Sharded => {
                let owned = s.owned_shards().ok().flatten().ok_or_else(|| ConfigError {
                    problems: vec!["shard_owner: sharded mode needs this replica's share".into()],
                })?;
                Scale::Sharded(ShardAssignment {
                    shards: s.shards,
                    owned,
                })
            }
        };
        let undeliverable = match s.undeliverable_policy() {
            UndeliverablePolicy::Retry => Undeliverable::Retry {
                delay: Duration::from_secs(s.retry_delay_secs),
                window: Duration::from_secs(s.retry_window_secs),
            },
            UndeliverablePolicy::Drop => Undeliverable::Drop,
        };
        Ok(Self {
            server: Server {
                host: s.host.clone(),
                port: s.port,
                workers: s.workers,
                handshake_timeout: Duration::from_millis(s.handshake_timeout_ms),
                shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs),
                echo_route: s.echo_route,
                admin: (s.admin_port != 0)
                    .then_some(s.admin_port)
                    .and_then(|port| {
                        s.admin_token.clone().map(|token| AdminListener {
                            host: s.admin_host.clone(),
                            port,
                            token,
                        })
                    }),
            },
            broker,
            scale,
            fleet: Fleet {
                bridge_name: s.bridge_name.clone(),
                shards: s.shards,
                heartbeat: Duration::from_secs(s.instance_heartbeat_secs),
                gc_stale_after: Duration::from_secs(s.gc_stale_after_secs),
                max_receive_count: s.max_receive_count,
            },
            downlink: Downlink {
                pollers: s.pollers,
                pollers_max: s.pollers_max.max(s.pollers),
                settle_linger: Duration::from_millis(s.settle_linger_ms),
                sqs_client: s.sqs_client,
                receive_wait: Duration::from_secs(s.receive_wait_secs),
                delivery: DownlinkSettings {
                    undeliverable,
                    dedup_capacity: s.dedup_capacity,
                    dedup_ttl: Duration::from_secs(s.dedup_ttl_secs),
                    ack_timeout: Duration::from_secs(s.ack_timeout_secs),
                    max_unacked_per_client: s.max_unacked_per_client,
                    after_release: RetryRule {
                        delay: Duration::from_secs(s.retry_delay_secs),
                        window: Duration::from_secs(s.retry_window_secs),
                    },
                },
            },
            uplink: Uplink {
                publish_linger: Duration::from_millis(s.publish_linger_ms),
                presence_instance: s.presence_events.then(|| {
                    s.instance_id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
                }),
            },
            session: SessionSettings {
                outbound_capacity: s.outbound_queue,
                max_frame_bytes: s.max_message_bytes,
                fragment_timeout: Duration::from_millis(s.fragment_timeout_ms),
                fragment_budget_bytes: s.fragment_budget_bytes,
                heartbeat_interval: Duration::from_secs(s.heartbeat_secs),
                client_timeout: Duration::from_secs(s.client_timeout_secs),
                message_rate: MessageRate {
                    per_sec: s.message_rate_per_sec,
                    burst: s.message_burst,
                },
                abuse: AbusePolicy {
                    strikes: s.rate_limit_strikes,
                    window: Duration::from_secs(s.rate_limit_window_secs),
                },
                limits: ConnectionLimits {
                    per_client: s.max_connections_per_client,
                    per_ip: s.max_connections_per_ip,
                    total: s.max_connections,
                },
            },
            access: Access {
                auth: s.auth,
                jwt: Jwt {
                    secret: s.jwt_secret.clone(),
                    public_key_file: s.jwt_public_key_file.clone(),
                    jwks_url: s.jwt_jwks_url.clone(),
                    audience: s.jwt_audience.clone(),
                    issuer: s.jwt_issuer.clone(),
                    leeway_secs: s.jwt_leeway_secs,
                },
                allowed_origins: s
                    .allowed_origins
                    .iter()
                    .filter_map(|o| normalize_origin(o))
                    .collect(),
                client_ip_header: s
                    .client_ip_header
                    .as_deref()
                    .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            },
            log_format: s.log_format,
            settings,
        })
    }

    /// The flat settings this configuration was made from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// In sharded mode, the shards this replica serves.
    pub fn shard_assignment(&self) -> Option<ShardAssignment> {
        match &self.scale {
            Scale::Sharded(assignment) => Some(*assignment),
            _ => None,
        }
    }
}

impl TryFrom<Settings> for Config {
    type Error = ConfigError;

    fn try_from(settings: Settings) -> Result<Self, ConfigError> {
        Self::new(settings)
    }
}

/// A setting a command needs, or an error naming it and its environment variable.
pub fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, ConfigError> {
    value.as_deref().ok_or_else(|| ConfigError {
        problems: vec![format!(
            "{field}: not set (config file, or {ENV_PREFIX}{})",
            field.to_uppercase()
        )],
    })
}
