//! Reaching the broker: the URL (kept out of logs), opening a named
//! connection within a deadline, classifying lapin's errors into the
//! decisions the ports know, and the backoff between reconnection attempts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use domain::{PublishError, SourceError};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties, ErrorKind};

/// A broker URL (`amqp://user:password@host:port/vhost?heartbeat=10`).
///
/// It holds a password, so it never prints whole: `Display` and `Debug`
/// show `amqp://user@host:port/vhost`. Only plain `amqp://` is accepted:
/// this build carries no TLS stack.
///
/// Mind the vhost: `amqp://host` and `amqp://host/%2f` mean the default
/// vhost `/`, while `amqp://host/` means the vhost named "" (which usually
/// does not exist).
///
/// Query parameters: `heartbeat` (seconds; by default the broker's 60 s,
/// and a network that goes silent without closing is noticed after about
/// two heartbeats, so lower it where that matters), `connection_timeout`
/// (milliseconds), `channel_max`, `frame_max`.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    uri: AMQPUri,
    redacted: String,
}

/// Why a string is not a usable [`AmqpUrl`]. The text never repeats the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid AMQP URL: {0}")]
pub struct InvalidAmqpUrl(String);

impl AmqpUrl {
    /// Parses and checks a URL.
    pub fn parse(text: &str) -> Result<Self, InvalidAmqpUrl> {
        let uri = AMQPUri::from_str(text).map_err(|e| {
            // The parser may quote its input, and the input holds a password.
            if e.contains(text) || text.is_empty() {
                InvalidAmqpUrl("expected amqp://user:password@host:port/vhost".to_owned())
            } else {
                InvalidAmqpUrl(e)
            }
        })?;
        if uri.scheme == AMQPScheme::AMQPS {
            return Err(InvalidAmqpUrl(
                "amqps:// needs TLS, which this build does not include; use amqp://".to_owned(),
            ));
        }
        let vhost = if uri.vhost == "/" {
            String::new()
        } else {
            format!("/{}", uri.vhost)
        };
        let redacted = format!(
            "amqp://{}@{}:{}{}",
            uri.authority.userinfo.username, uri.authority.host, uri.authority.port, vhost
        );
        Ok(Self { uri, redacted })
    }

    /// The URL without its password, for logs and messages.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The host the URL points at.
    pub fn host(&self) -> &str {
        &self.uri.authority.host
    }

    /// The port the URL points at.
    pub fn port(&self) -> u16 {
        self.uri.authority.port
    }

    /// The virtual host.
    pub fn vhost(&self) -> &str {
        &self.uri.vhost
    }
}

impl FromStr for AmqpUrl {
    type Err = InvalidAmqpUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AmqpUrl").field(&self.redacted).finish()
    }
}

/// Pauses between reconnection attempts: exponential from `initial` to
/// `max`, each drawn in the upper half of its step (jitter, so replicas that
/// lost the broker together do not come back in lock-step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Pause after the first failure.
    pub initial: Duration,
    /// Largest pause.
    pub max: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// The running schedule of a [`Reconnect`] policy.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: Reconnect,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(policy: Reconnect) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// The link works again: the next failure starts from `initial`.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The pause before the next attempt.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let step = self
            .policy
            .initial
            .saturating_mul(2u32.saturating_pow(self.failures.min(20)))
            .min(self.policy.max.max(self.policy.initial));
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// A failed broker operation, classified once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The broker refused what was asked (no such queue or exchange, access
    /// refused, declared differently, unknown vhost): an operator must act.
    pub(crate) misconfigured: bool,
    /// What happened, for logs.
    pub(crate) text: String,
}

/// AMQP reply codes that mean "fix the configuration", not "try later":
/// ACCESS_REFUSED, NOT_FOUND, PRECONDITION_FAILED, INVALID_PATH, NOT_ALLOWED.
const MISCONFIGURED_CODES: &[u16] = &[403, 404, 406, 402, 530];

impl Failure {
    pub(crate) fn unavailable(text: impl Into<String>) -> Self {
        Self {
            misconfigured: false,
            text: text.into(),
        }
    }

    pub(crate) fn from_lapin(operation: &str, error: &lapin::Error) -> Self {
        let misconfigured = match error.kind() {
            ErrorKind::ProtocolError(amqp) => MISCONFIGURED_CODES.contains(&amqp.get_id()),
            _ => false,
        };
        Self {
            misconfigured,
            text: format!("{operation}: {error}"),
        }
    }

    pub(crate) fn into_source(self) -> SourceError {
        if self.misconfigured {
            SourceError::Misconfigured(self.text)
        } else {
            SourceError::Unavailable(self.text)
        }
    }

    pub(crate) fn into_publish(self) -> PublishError {
        PublishError::Unavailable(self.text)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Opens a connection named `name` (the name the broker shows in
/// `rabbitmqctl list_connections client_properties`), giving up after `timeout`.
pub(crate) async fn connect(
    url: &AmqpUrl,
    name: &str,
    timeout: Duration,
) -> Result<Connection, Failure> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(
        timeout,
        Connection::connect_uri(url.uri.clone(), properties),
    )
    .await
    {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(Failure::from_lapin(&format!("connect to {url}"), &error)),
        Err(_) => Err(Failure::unavailable(format!(
            "connect to {url}: no answer within {timeout:?}"
        ))),
    }
}

/// A short string for a protocol field (routing key, queue name, …):
/// AMQP limits them to 255 bytes, and lapin panics on longer ones.
pub(crate) fn short(text: &str) -> Result<lapin::types::ShortString, String> {
    lapin::types::ShortString::try_new(text).map_err(|_| {
        format!(
            "{} bytes do not fit an AMQP short string (at most 255)",
            text.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_their_password() {
        let url = AmqpUrl::parse("amqp://guest:s3cret@127.0.0.1:5673/%2f?heartbeat=5").unwrap();
        assert_eq!(url.to_string(), "amqp://guest@127.0.0.1:5673");
        assert_eq!(url.host(), "127.0.0.1");
        assert_eq!(url.port(), 5673);
        assert_eq!(url.vhost(), "/");
        assert!(!format!("{url:?}").contains("s3cret"));

        let named = AmqpUrl::parse("amqp://u:p@rabbit/prod").unwrap();
        assert_eq!(named.to_string(), "amqp://u@rabbit:5672/prod");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for text in ["", "nope", "http://u:pw@host", "amqp://u:pw@host:99999"] {
            let error = AmqpUrl::parse(text).unwrap_err().to_string();
            assert!(!error.contains("pw@"), "{text}: {error}");
        }
        let tls = AmqpUrl::parse("amqps://u:pw@host").unwrap_err();
        assert!(tls.to_string().contains("TLS"), "{tls}");
    }

    #[test]
    fn backoff_grows_to_its_cap_and_restarts() {
        let policy = Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut backoff = Backoff::new(policy);
        let first = backoff.next_pause();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..30 {
            let pause = backoff.next_pause();
            assert!(pause <= policy.max, "{pause:?}");
        }
        let late = backoff.next_pause();
        assert!(late >= policy.max / 2, "{late:?}");
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(100));
    }

    #[test]
    fn short_strings_are_checked_instead_of_panicking() {
        assert!(short(&"a".repeat(255)).is_ok());
        assert!(short(&"a".repeat(256)).is_err());
    }
}
