//! Layered configuration (SPEC §7), loaded once at start and passed down.
//!
//! Layers, later wins: built-in defaults, `config/default.toml`,
//! `config/<profile>.toml`, `.env` (loaded into the process environment by
//! `main`, never over a variable that is already set), environment variables
//! `BRIDGE_<FIELD>`, command-line flags. The environment is passed in rather
//! than read here, so tests never touch the process environment.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use adapters_ws::{AbusePolicy, ConnectionLimits, MessageRate, SessionSettings};
use domain::{DownlinkSettings, ShardAssignment, ShardRange, Undeliverable, MAX_SHARDS};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of every wsbridge environment variable.
pub const ENV_PREFIX: &str = "BRIDGE_";
/// SNS's own limit on a message; no frame limit may exceed it.
pub const SNS_MAX_BYTES: usize = 262_144;

/// How replicas share the command stream (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every instance consumes the one configured command queue.
    Shared,
    /// Every instance consumes a queue of its own, subscribed to the commands topic.
    Fanout,
    /// Every instance owns a range of shards of the client-id space and
    /// consumes the range's queue, subscribed with a filter on `shard`.
    Sharded,
}

/// What happens to a Command whose client is not connected here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UndeliverablePolicy {
    /// Make it visible again after `retry_delay_secs`, until `retry_window_secs`.
    Retry,
    /// Delete it at once.
    Drop,
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// The client id is taken from the URL (development).
    None,
    /// A signed JWT whose `sub` is the client id.
    Jwt,
}

/// Which message broker the bridge talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Broker {
    /// AWS SNS/SQS (or an emulator at `AWS_ENDPOINT_URL`).
    Aws,
    /// RabbitMQ over AMQP 0-9-1.
    Amqp,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A secret setting (the JWT secret): zeroed when dropped, and never shown —
/// `Debug` and `Serialize` render `[redacted]`.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret itself: for the code that uses it, never for display.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Any scalar is taken as text, so a value never fails with an error
        // message that would quote it.
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Reads a list of strings given as a list or as one comma-separated string
/// (`BRIDGE_ALLOWED_ORIGINS=https://a.example,https://b.example`).
fn comma_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    let items = match Either::deserialize(deserializer)? {
        Either::One(text) => text.split(',').map(str::to_owned).collect(),
        Either::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

/// Minimum length of `jwt_secret`: HS256 wants a key as long as its hash.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Every setting of the bridge. Each field `x` is also `BRIDGE_X` in the environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// HTTP worker threads (0: one per CPU core).
    pub workers: usize,
    /// URL of the SQS queue Commands arrive on.
    pub command_queue_url: Option<String>,
    /// ARN of the SNS topic client messages are published to.
    pub events_topic_arn: Option<String>,
    /// ARN of the SNS topic backends publish Commands to.
    pub commands_topic_arn: Option<String>,
    /// `shared`, `fanout` or `sharded`.
    pub mode: Mode,
    /// Sharded mode: the fleet's number of shards (1..=32768), the same for
    /// every replica and every publisher (they set `shard` from it).
    pub shards: u32,
    /// Sharded mode: this replica as `INDEX/REPLICAS` (0-based, e.g. a
    /// StatefulSet ordinal): it owns the INDEX-th of REPLICAS near-equal
    /// contiguous ranges of shards.
    pub shard_owner: Option<String>,
    /// Sharded mode: the shards this replica owns as `START..END` (end
    /// excluded), instead of `shard_owner` (for uneven splits and resizes).
    pub shard_range: Option<String>,
    /// `retry` or `drop`; unset: `drop` in fanout mode, else `retry`.
    pub undeliverable: Option<UndeliverablePolicy>,
    /// Delay before a Command for an absent client is received again.
    pub retry_delay_secs: u64,
    /// Age after which a Command for an absent client is given up.
    pub retry_window_secs: u64,
    /// Concurrent long-poll loops.
    pub pollers: usize,
    /// Long-poll wait of each receive (0..=20).
    pub receive_wait_secs: u64,
    /// Receives after which the dead-letter queue takes a message (used by
    /// `dev`). Releases of Commands for absent clients count as receives, so
    /// keep it above `retry_window_secs / retry_delay_secs`.
    pub max_receive_count: u32,
    /// Forwarded message ids remembered for de-duplication.
    pub dedup_capacity: usize,
    /// How long a forwarded message id is remembered.
    pub dedup_ttl_secs: u64,
    /// How long a Command delivered to an `ack=true` connection waits for the
    /// client's acknowledgement before it is released and delivered again;
    /// keep it below the queue's visibility timeout.
    pub ack_timeout_secs: u64,
    /// Largest client frame accepted, in bytes (≤ 262144).
    pub max_message_bytes: usize,
    /// Frames queued per connection before the client counts as too slow.
    pub outbound_queue: usize,
    /// Interval between pings to each client.
    pub heartbeat_secs: u64,
    /// A client silent for this long is disconnected.
    pub client_timeout_secs: u64,
    /// How long the first client message of a batch waits for others.
    pub publish_linger_ms: u64,
    /// Deadline for a graceful shutdown.
    pub shutdown_timeout_secs: u64,
    /// `none` or `jwt`.
    pub auth: AuthMode,
    /// HS256 shared secret (`auth = "jwt"`, and `wsbridge token`); at least 32 bytes.
    pub jwt_secret: Option<Secret>,
    /// RS256 public key: a PEM file, or a JWKS (JSON) file (`auth = "jwt"`).
    pub jwt_public_key_file: Option<PathBuf>,
    /// When set, tokens must carry this `aud`.
    pub jwt_audience: Option<String>,
    /// When set, tokens must carry this `iss`.
    pub jwt_issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Origins (`scheme://host[:port]`) whose pages may open a WebSocket;
    /// empty: any (development). A comma-separated string in the environment.
    #[serde(deserialize_with = "comma_list")]
    pub allowed_origins: Vec<String>,
    /// Open connections allowed per client id.
    pub max_connections_per_client: usize,
    /// Open connections allowed per client IP address.
    pub max_connections_per_ip: usize,
    /// Open connections allowed on this instance.
    pub max_connections: usize,
    /// Header whose LAST entry is the client's IP, as appended by a trusted
    /// proxy (e.g. `X-Forwarded-For`); unset: the TCP peer's address.
    pub client_ip_header: Option<String>,
    /// Client messages per second per connection, on average.
    pub message_rate_per_sec: u32,
    /// Client messages accepted at once per connection.
    pub message_burst: u32,
    /// Rate-limited messages within `rate_limit_window_secs` that close the
    /// connection with 1008.
    pub rate_limit_strikes: u32,
    /// The window of `rate_limit_strikes`.
    pub rate_limit_window_secs: u64,
    /// Time a client has to send its request head (slow-loris guard).
    pub handshake_timeout_ms: u64,
    /// Mounts the test-only `/__echo` route (for RFC 6455 conformance runs).
    pub echo_route: bool,
    /// `aws` or `amqp`.
    pub broker: Broker,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// RabbitMQ URL (`amqp://user:password@host:5672/vhost`) with broker = "amqp".
    pub amqp_url: Option<String>,
    /// The durable queue Commands arrive on (broker = "amqp").
    pub amqp_command_queue: String,
    /// The topic exchange client messages are published to (broker = "amqp").
    pub amqp_events_exchange: String,
    /// Name of this bridge: prefix of the per-instance queues in fanout mode
    /// and the tag `wsbridge gc` looks for.
    pub bridge_name: String,
    /// This instance's id in fanout mode (unset: a random one per start).
    pub instance_id: Option<String>,
    /// How often a fanout instance refreshes its queue's heartbeat tag.
    pub instance_heartbeat_secs: u64,
    /// `wsbridge gc` removes instance queues whose heartbeat is older than this.
    pub gc_stale_after_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            workers: 0,
            command_queue_url: None,
            events_topic_arn: None,
            commands_topic_arn: None,
            mode: Mode::Shared,
            shards: 4096,
            shard_owner: None,
            shard_range: None,
            undeliverable: None,
            retry_delay_secs: 5,
            retry_window_secs: 60,
            pollers: 2,
            receive_wait_secs: 20,
            max_receive_count: 15,
            dedup_capacity: 100_000,
            dedup_ttl_secs: 600,
            ack_timeout_secs: 15,
            max_message_bytes: 65_536,
            outbound_queue: 256,
            heartbeat_secs: 15,
            client_timeout_secs: 45,
            publish_linger_ms: 5,
            shutdown_timeout_secs: 10,
            auth: AuthMode::None,
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_leeway_secs: 30,
            allowed_origins: Vec::new(),
            max_connections_per_client: 16,
            max_connections_per_ip: 1000,
            max_connections: 20_000,
            client_ip_header: None,
            message_rate_per_sec: 20,
            message_burst: 50,
            rate_limit_strikes: 50,
            rate_limit_window_secs: 10,
            handshake_timeout_ms: 5000,
            echo_route: false,
            broker: Broker::Aws,
            log_format: LogFormat::Text,
            amqp_url: None,
            amqp_command_queue: "wsbridge.commands".into(),
            amqp_events_exchange: "wsbridge.events".into(),
            bridge_name: "wsbridge".into(),
            instance_id: None,
            instance_heartbeat_secs: 60,
            gc_stale_after_secs: 300,
        }
    }
}

/// Where the layers come from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Folder holding `default.toml` and `<profile>.toml`.
    pub config_dir: PathBuf,
    /// The profile whose file is layered over `default.toml`.
    pub profile: Option<String>,
    /// The environment (name, value) pairs; only `BRIDGE_*` ones are read.
    pub env: Vec<(String, String)>,
    /// Command-line overrides, as (field, value) pairs.
    pub overrides: Vec<(String, Value)>,
}

/// Invalid configuration: every problem found, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    /// One entry per problem, `field: what is wrong`.
    pub problems: Vec<String>,
}

impl Settings {
    /// Loads and validates the layers.
    pub fn load(sources: &Sources) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()))
            .merge(Toml::file(sources.config_dir.join("default.toml")));
        if let Some(profile) = &sources.profile {
            let file = sources.config_dir.join(format!("{profile}.toml"));
            // A misspelt profile must not silently fall back to the defaults.
            if !file.is_file() {
                return Err(ConfigError {
                    problems: vec![format!("profile: no file {}", file.display())],
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(EnvVars::new(&sources.env));
        for (field, value) in &sources.overrides {
            figment = figment.merge(Serialized::global(field, value.clone()));
        }
        let settings = extract_reporting_every_field(&figment)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: String| {
            if !ok {
                problems.push(problem);
            }
        };
        check(!self.host.is_empty(), "host: must not be empty".into());
        check(
            (1..=SNS_MAX_BYTES).contains(&self.max_message_bytes),
            format!(
                "max_message_bytes: {} is outside 1..={SNS_MAX_BYTES} (SNS's message limit)",
                self.max_message_bytes
            ),
        );
        check(
            (1..=64).contains(&self.pollers),
            format!("pollers: {} is outside 1..=64", self.pollers),
        );
        check(
            self.receive_wait_secs <= 20,
            format!(
                "receive_wait_secs: {} is above SQS's maximum of 20",
                self.receive_wait_secs
            ),
        );
        check(
            self.outbound_queue >= 1,
            "outbound_queue: must be at least 1".into(),
        );
        check(
            self.dedup_capacity >= 1,
            "dedup_capacity: must be at least 1".into(),
        );
        check(
            self.heartbeat_secs >= 1,
            "heartbeat_secs: must be at least 1".into(),
        );
        check(
            self.client_timeout_secs > self.heartbeat_secs,
            format!(
                "client_timeout_secs: {} must be longer than heartbeat_secs ({})",
                self.client_timeout_secs, self.heartbeat_secs
            ),
        );
        check(
            (1..=1000).contains(&self.max_receive_count),
            format!(
                "max_receive_count: {} is outside 1..=1000",
                self.max_receive_count
            ),
        );
        check(
            self.retry_delay_secs <= 43_200,
            format!(
                "retry_delay_secs: {} is above SQS's 12 h maximum",
                self.retry_delay_secs
            ),
        );
        self.validate_security(&mut check);
        if self.broker == Broker::Amqp {
            match &self.amqp_url {
                None => check(
                    false,
                    "amqp_url: required with broker = \"amqp\" (BRIDGE_AMQP_URL)".into(),
                ),
                Some(url) => {
                    if let Err(e) = adapters_amqp::AmqpUrl::parse(url) {
                        check(false, format!("amqp_url: {e}"));
                    }
                }
            }
            check(
                self.mode == Mode::Shared,
                "mode: fanout and sharded need SNS; with broker = \"amqp\" bind one queue per \
                 instance instead"
                    .into(),
            );
        }
        for (field, value) in [
            ("amqp_command_queue", &self.amqp_command_queue),
            ("amqp_events_exchange", &self.amqp_events_exchange),
        ] {
            check(!value.is_empty(), format!("{field}: must not be empty"));
        }
        check(
            self.mode == Mode::Shared || self.commands_topic_arn.is_some(),
            "commands_topic_arn: required in fanout and sharded mode (each instance subscribes \
             its queue to it)"
                .into(),
        );
        self.validate_shards(&mut check);
        check(
            is_name_part(&self.bridge_name, 40),
            format!(
                "bridge_name: {:?} must be 1..=40 letters, digits, '-' or '_' (it prefixes queue names)",
                self.bridge_name
            ),
        );
        if let Some(instance) = &self.instance_id {
            check(
                instance != "dlq",
                "instance_id: \"dlq\" would name the bridge's dead-letter queue".into(),
            );
            check(
                is_name_part(instance, 36),
                format!("instance_id: {instance:?} must be 1..=36 letters, digits, '-' or '_'"),
            );
        }
        check(
            self.instance_heartbeat_secs >= 1,
            "instance_heartbeat_secs: must be at least 1".into(),
        );
        check(
            self.gc_stale_after_secs > self.instance_heartbeat_secs,
            format!(
                "gc_stale_after_secs: {} must be longer than instance_heartbeat_secs ({})",
                self.gc_stale_after_secs, self.instance_heartbeat_secs
            ),
        );
        for (field, value) in [
            ("command_queue_url", &self.command_queue_url),
            ("events_topic_arn", &self.events_topic_arn),
            ("commands_topic_arn", &self.commands_topic_arn),
        ] {
            if let Some(value) = value {
                check(
                    !value.trim().is_empty(),
                    format!("{field}: must not be empty when set"),
                );
            }
        }
        if let Some(arn) = &self.events_topic_arn {
            check(
                adapters_aws::bootstrap::topic_name_from_arn(arn).is_some(),
                format!("events_topic_arn: {arn:?} is not a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"),
            );
        }
        if let Some(arn) = &self.commands_topic_arn {
            check(
                adapters_aws::bootstrap::topic_name_from_arn(arn).is_some(),
                format!("commands_topic_arn: {arn:?} is not a topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)"),
            );
        }
        if let Some(url) = &self.command_queue_url {
            check(
                url.starts_with("http://") || url.starts_with("https://"),
                format!(
                    "command_queue_url: {url:?} is not a queue URL (http(s)://HOST/ACCOUNT/NAME)"
                ),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    fn validate_shards(&self, check: &mut impl FnMut(bool, String)) {
        if !(1..=MAX_SHARDS).contains(&self.shards) {
            check(
                false,
                format!("shards: {} is outside 1..={MAX_SHARDS}", self.shards),
            );
            return;
        }
        match (&self.shard_owner, &self.shard_range) {
            (Some(_), Some(_)) => check(
                false,
                "shard_range: set either shard_owner or shard_range, not both".into(),
            ),
            (None, None) if self.mode == Mode::Sharded => check(
                false,
                "shard_owner: sharded mode needs this replica's share, as shard_owner = \
                 \"INDEX/REPLICAS\" (BRIDGE_SHARD_OWNER) or shard_range = \"START..END\""
                    .into(),
            ),
            _ => {
                if let Err(problem) = self.owned_shards() {
                    check(false, problem);
                }
            }
        }
    }

    /// The range named by `shard_owner` or `shard_range` (`None` when
    /// neither is set), or the problem with it, naming the field.
    fn owned_shards(&self) -> Result<Option<ShardRange>, String> {
        if let Some(range) = &self.shard_range {
            return ShardRange::parse(range, self.shards)
                .map(Some)
                .map_err(|e| format!("shard_range: {e}"));
        }
        let Some(owner) = &self.shard_owner else {
            return Ok(None);
        };
        let parsed = owner
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        let Some((index, replicas)) = parsed else {
            return Err(format!(
                "shard_owner: {owner:?} is not INDEX/REPLICAS (e.g. \"0/3\")"
            ));
        };
        ShardRange::of_replica(index, replicas, self.shards)
            .map(Some)
            .map_err(|e| format!("shard_owner: {e}"))
    }

    /// In sharded mode, the shards this replica serves.
    pub fn shard_assignment(&self) -> Option<ShardAssignment> {
        if self.mode != Mode::Sharded {
            return None;
        }
        let owned = self.owned_shards().ok().flatten()?;
        Some(ShardAssignment {
            shards: self.shards,
            owned,
        })
    }

    fn validate_security(&self, check: &mut impl FnMut(bool, String)) {
        if self.auth == AuthMode::Jwt {
            check(
                self.jwt_secret.is_some() || self.jwt_public_key_file.is_some(),
                "jwt_secret: auth = \"jwt\" needs jwt_secret (HS256, BRIDGE_JWT_SECRET) \
                 or jwt_public_key_file (RS256, BRIDGE_JWT_PUBLIC_KEY_FILE)"
                    .into(),
            );
            check(
                self.jwt_secret.is_none() || self.jwt_public_key_file.is_none(),
                "jwt_public_key_file: set either jwt_secret (HS256) or jwt_public_key_file \
                 (RS256), not both"
                    .into(),
            );
        }
        if let Some(secret) = &self.jwt_secret {
            check(
                secret.expose().len() >= MIN_JWT_SECRET_BYTES,
                format!(
                    "jwt_secret: must be at least {MIN_JWT_SECRET_BYTES} bytes \
                     (e.g. `openssl rand -base64 48`)"
                ),
            );
        }
        for (field, value) in [
            ("jwt_audience", &self.jwt_audience),
            ("jwt_issuer", &self.jwt_issuer),
        ] {
            if let Some(value) = value {
                check(
                    !value.trim().is_empty(),
                    format!("{field}: must not be empty when set"),
                );
            }
        }
        check(
            self.jwt_leeway_secs <= 300,
            format!(
                "jwt_leeway_secs: {} is above 300 (a leeway is for clock skew)",
                self.jwt_leeway_secs
            ),
        );
        for origin in &self.allowed_origins {
            check(
                normalize_origin(origin).is_some(),
                format!(
                    "allowed_origins: {origin:?} is not an origin (scheme://host[:port], no path)"
                ),
            );
        }
        for (field, value) in [
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_connections", self.max_connections),
            ("message_rate_per_sec", self.message_rate_per_sec as usize),
            ("message_burst", self.message_burst as usize),
            ("rate_limit_strikes", self.rate_limit_strikes as usize),
            (
                "rate_limit_window_secs",
                self.rate_limit_window_secs as usize,
            ),
        ] {
            check(value >= 1, format!("{field}: must be at least 1"));
        }
        check(
            self.handshake_timeout_ms >= 100,
            format!(
                "handshake_timeout_ms: {} is below 100",
                self.handshake_timeout_ms
            ),
        );
        if let Some(header) = &self.client_ip_header {
            check(
                actix_web::http::header::HeaderName::from_bytes(header.as_bytes()).is_ok(),
                format!("client_ip_header: {header:?} is not a header name"),
            );
        }
    }

    /// The limits and timers of every WebSocket session.
    pub fn session(&self) -> SessionSettings {
        SessionSettings {
            outbound_capacity: self.outbound_queue,
            max_frame_bytes: self.max_message_bytes,
            heartbeat_interval: Duration::from_secs(self.heartbeat_secs),
            client_timeout: Duration::from_secs(self.client_timeout_secs),
            message_rate: MessageRate {
                per_sec: self.message_rate_per_sec,
                burst: self.message_burst,
            },
            abuse: AbusePolicy {
                strikes: self.rate_limit_strikes,
                window: Duration::from_secs(self.rate_limit_window_secs),
            },
            limits: ConnectionLimits {
                per_client: self.max_connections_per_client,
                per_ip: self.max_connections_per_ip,
                total: self.max_connections,
            },
        }
    }

    /// How long a client has to send its request head.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// A required setting, or an error naming it and its environment variable.
    pub fn required<'a>(
        &self,
        field: &str,
        value: &'a Option<String>,
    ) -> Result<&'a str, ConfigError> {
        value.as_deref().ok_or_else(|| ConfigError {
            problems: vec![format!(
                "{field}: not set (config file, or {ENV_PREFIX}{})",
                field.to_uppercase()
            )],
        })
    }

    /// The downlink's settings derived from these.
    pub fn downlink(&self) -> DownlinkSettings {
        let policy = self.undeliverable.unwrap_or(match self.mode {
            // Only fanout has another copy of each Command elsewhere; in
            // sharded mode a Command for an absent client waits for it to
            // reconnect (to this replica: the load balancer sends it here).
            Mode::Shared | Mode::Sharded => UndeliverablePolicy::Retry,
            Mode::Fanout => UndeliverablePolicy::Drop,
        });
        DownlinkSettings {
            undeliverable: match policy {
                UndeliverablePolicy::Retry => Undeliverable::Retry {
                    delay: Duration::from_secs(self.retry_delay_secs),
                    window: Duration::from_secs(self.retry_window_secs),
                },
                UndeliverablePolicy::Drop => Undeliverable::Drop,
            },
            dedup_capacity: self.dedup_capacity,
            dedup_ttl: Duration::from_secs(self.dedup_ttl_secs),
            ack_timeout: Duration::from_secs(self.ack_timeout_secs),
        }
    }
}

/// `origin` as browsers send it (`scheme://host[:port]`, lower case, no
/// trailing slash), or `None` when it is not an origin.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let valid_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let valid_rest = !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' ', ','])
        && !rest.starts_with(':');
    (valid_scheme && valid_rest).then_some(origin)
}

/// Extracts the settings. Deserialization stops at the first field it cannot
/// read, so when it fails each field is tried alone over the defaults: every
/// unreadable field is reported (naming the layer its value came from),
/// together with what [`Settings::validate`] finds wrong with the others.
fn extract_reporting_every_field(figment: &Figment) -> Result<Settings, ConfigError> {
    let first = match figment.extract::<Settings>() {
        Ok(settings) => return Ok(settings),
        Err(e) => e,
    };
    let all_of = |e: figment::Error| ConfigError {
        problems: e.into_iter().map(describe_figment_error).collect(),
    };
    // Fails only when a layer cannot be read at all (a TOML syntax error).
    let merged: Dict = match figment.extract() {
        Ok(merged) => merged,
        Err(_) => return Err(all_of(first)),
    };
    let defaults = || Figment::from(Serialized::defaults(Settings::default()));
    let mut readable = defaults();
    let mut problems = Vec::new();
    let mut unreadable = std::collections::BTreeSet::new();
    for (field, value) in merged {
        let alone = defaults().merge(Serialized::global(&field, value.clone()));
        match alone.extract::<Settings>() {
            Ok(_) => readable = readable.merge(Serialized::global(&field, value)),
            Err(errors) => {
                for mut error in errors {
                    // Name the layer the value came from, not the probe.
                    error.metadata = figment.find_metadata(&field).cloned();
                    error.profile = Some(Profile::Default);
                    if error.path.is_empty() {
                        error.path = vec![field.clone()];
                    }
                    problems.push(describe_figment_error(error));
                }
                unreadable.insert(field);
            }
        }
    }
    if problems.is_empty() {
        return Err(all_of(first));
    }
    match readable.extract::<Settings>() {
        Err(more) => problems.extend(more.into_iter().map(describe_figment_error)),
        Ok(settings) => {
            if let Err(more) = settings.validate() {
                // A field already reported unreadable holds its default here:
                // what validation says about it would only confuse.
                problems.extend(more.problems.into_iter().filter(|problem| {
                    let field = problem.split(':').next().unwrap_or_default();
                    !unreadable.contains(field)
                }));
            }
        }
    }
    Err(ConfigError { problems })
}

fn describe_figment_error(error: figment::Error) -> String {
    let field = if error.path.is_empty() {
        "configuration".to_owned()
    } else {
        error.path.join(".")
    };
    // "from environment variable BRIDGE_PORT", "from TOML file config/x.toml".
    let source = error
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(source) => format!(" (from {} {source})", m.name),
            None if !error.path.is_empty() => {
                let profile = error.profile.clone().unwrap_or_default();
                format!(
                    " (from {} {})",
                    m.name,
                    m.interpolate(&profile, &error.path)
                )
            }
            None => format!(" (from {})", m.name),
        })
        .unwrap_or_default();
    format!("{field}: {}{source}", error.kind)
}

/// The `BRIDGE_*` variables of a given environment, as a figment provider.
struct EnvVars {
    dict: Dict,
}

impl EnvVars {
    fn new(env: &[(String, String)]) -> Self {
        // Only variables naming a setting are read: the environment also holds
        // `BRIDGE_PROFILE` and variables of settings other versions know.
        // A value is parsed as a number or boolean only where the setting is
        // one, so `BRIDGE_HOST=1234` stays the string it was meant to be.
        let defaults = match serde_json::to_value(Settings::default()) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => serde_json::Map::new(),
        };
        let dict = env
            .iter()
            .filter_map(|(name, value)| {
                let field = name.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
                let value = match defaults.get(&field)? {
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                        value.parse().unwrap_or_else(|_| Value::from(value.clone()))
                    }
                    _ => Value::from(value.clone()),
                };
                Some((field, value))
            })
            .collect();
        Self { dict }
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
            .interpolater(|_, path| format!("{ENV_PREFIX}{}", path.join("_").to_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Whether `value` can be part of an SQS queue name, at most `max` bytes.
fn is_name_part(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
