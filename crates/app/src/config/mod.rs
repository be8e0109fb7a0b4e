//! Configuration (docs/configuration.md), loaded and validated once at start, then passed
//! down as typed sections.
//!
//! - [`settings`]: every setting defined once (name, type, default, range,
//!   documentation), as the flat [`Settings`] operators write;
//! - [`layers`]: reading the layers (defaults, config files, environment,
//!   flags) into [`Settings`], reporting every unreadable value;
//! - [`validate`]: every rule, checked at load, each problem naming its setting;
//! - [`sections`]: the typed [`Config`] the code reads;
//! - [`docs`]: `config/default.toml` and the settings table of
//!   docs/configuration.md,
//!   generated from the settings table;
//! - [`values`]: the enums, secrets and lists settings are made of.

pub mod docs;
pub mod layers;
pub mod sections;
pub mod settings;
mod table;
pub mod validate;
pub mod values;

pub use layers::Sources;
pub use sections::{
    required, Access, AdminListener, AmqpResources, AwsResources, BrokerConfig, Config, Downlink,
    Fleet, Jwt, Scale, Server, Uplink,
};
pub use settings::{Settings, SETTINGS};
pub use table::SettingDoc;
pub use validate::MIN_JWT_SECRET_BYTES;
pub use values::{
    normalize_origin, AuthMode, Broker, LogFormat, Mode, Secret, SqsClient, UndeliverablePolicy,
};

/// Prefix of every wsbridge environment variable.
pub const ENV_PREFIX: &str = "BRIDGE_";
/// SNS's own limit on a message; no frame limit may exceed it.
pub const SNS_MAX_BYTES: usize = 262_144;

/// Invalid configuration: every problem found, each naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .problems.join("; "))]
pub struct ConfigError {
    /// One entry per problem, `field: what is wrong`.
    pub problems: Vec<String>,
}
