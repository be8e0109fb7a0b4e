//! The broker's URL: parsed and checked once, and kept out of logs (it
//! holds a password). Every connection the adapters open starts from one.

use std::fmt;
use std::str::FromStr;

use lapin::uri::{AMQPScheme, AMQPUri};

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
impl AmqpUrl {
    /// The parsed URI, for opening connections.
    pub(crate) fn uri(&self) -> &AMQPUri {
        &self.uri
    }
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
}
