//! Layered configuration (SPEC §7), loaded once at start and passed down.
//!
//! Layers, later wins: built-in defaults, `config/default.toml`,
//! `config/<profile>.toml`, `.env` (loaded into the process environment by
//! `main`, never over a variable that is already set), environment variables
//! `BRIDGE_<FIELD>`, command-line flags. The environment is passed in rather
//! than read here, so tests never touch the process environment.

use std::path::PathBuf;
use std::time::Duration;

use domain::{DownlinkSettings, Undeliverable};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

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
    /// `shared` or `fanout`.
    pub mode: Mode,
    /// `retry` or `drop`; unset: `retry` in shared mode, `drop` in fanout mode.
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
    /// `aws` or `amqp`.
    pub broker: Broker,
    /// `text` or `json`.
    pub log_format: LogFormat,
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
            undeliverable: None,
            retry_delay_secs: 5,
            retry_window_secs: 60,
            pollers: 2,
            receive_wait_secs: 20,
            max_receive_count: 15,
            dedup_capacity: 100_000,
            dedup_ttl_secs: 600,
            max_message_bytes: 65_536,
            outbound_queue: 256,
            heartbeat_secs: 15,
            client_timeout_secs: 45,
            publish_linger_ms: 5,
            shutdown_timeout_secs: 10,
            auth: AuthMode::None,
            broker: Broker::Aws,
            log_format: LogFormat::Text,
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
        let settings: Settings = figment.extract().map_err(|e| ConfigError {
            problems: e.into_iter().map(describe_figment_error).collect(),
        })?;
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
        check(
            self.auth == AuthMode::None,
            "auth: \"jwt\" is not available in this version; use \"none\"".into(),
        );
        check(
            self.broker == Broker::Aws,
            "broker: \"amqp\" is not available in this version; use \"aws\"".into(),
        );
        check(
            self.mode == Mode::Shared,
            "mode: \"fanout\" is not available in this version; use \"shared\"".into(),
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
            Mode::Shared => UndeliverablePolicy::Retry,
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
        }
    }
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
