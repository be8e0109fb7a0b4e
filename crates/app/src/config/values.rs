//! The value types of settings that are not plain numbers or strings: the
//! mode, policy and broker choices, secrets, comma-separated lists, origins.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How replicas share the command stream (docs/scaling.md).
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

/// Which client makes the SQS calls of the receive path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqsClient {
    /// The lean client: ReceiveMessage, DeleteMessageBatch and
    /// ChangeMessageVisibilityBatch signed and sent directly.
    Lean,
    /// The AWS SDK for every call.
    Sdk,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines when stderr is a terminal, else JSON (a log
    /// collector, a container runtime, a file).
    Auto,
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format to write: `Auto` decided by whether the log stream is a
    /// terminal.
    pub fn resolve(self, is_terminal: bool) -> Self {
        match self {
            LogFormat::Auto if is_terminal => LogFormat::Text,
            LogFormat::Auto => LogFormat::Json,
            explicit => explicit,
        }
    }
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

impl Eq for Secret {}

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
pub(crate) fn comma_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
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

/// `origin` as browsers send it, or `None` (defined by the HTTP adapter,
/// which checks each upgrade's `Origin` against the normalized list).
pub use adapters_http::normalize_origin;

/// Whether `value` can be part of an SQS queue name, at most `max` bytes.
pub(crate) fn is_name_part(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
