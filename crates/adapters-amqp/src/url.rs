//! The broker's URL: parsed and checked once, and kept out of logs (it
//! holds a password). Every connection the adapters open starts from one,
//! with the TLS settings of an `amqps://` URL.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use lapin::tcp::OwnedTLSConfig;
use lapin::uri::{AMQPScheme, AMQPUri};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A broker URL (`amqp://user:password@host:port/vhost?heartbeat=10`, or
/// `amqps://…` for TLS).
///
/// It holds a password, so it never prints whole: `Display` and `Debug`
/// show `amqp://user@host:port/vhost`.
///
/// `amqps://` connects with TLS (rustls): the broker's certificate must
/// chain to the system's root certificates (Amazon MQ, CloudAMQP) or to a
/// CA added with [`AmqpUrl::with_ca_file`] (a private CA), and name the
/// URL's host. The default port is then 5671.
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
    /// Extra trusted CA certificates (PEM), beside the system's roots.
    ca_pem: Option<Arc<str>>,
}

/// Why a string is not a usable [`AmqpUrl`]. The text never repeats the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid AMQP URL: {0}")]
pub struct InvalidAmqpUrl(String);

/// Why a CA file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidCaFile(String);

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
        let vhost = if uri.vhost == "/" {
            String::new()
        } else {
            format!("/{}", uri.vhost)
        };
        let redacted = format!(
            "{}://{}@{}:{}{}",
            uri.scheme,
            uri.authority.userinfo.username,
            uri.authority.host,
            uri.authority.port,
            vhost
        );
        Ok(Self {
            uri,
            redacted,
            ca_pem: None,
        })
    }

    /// Trusts the CA certificates of the PEM file at `path` too, beside the
    /// system's roots. Fails when the file cannot be read or holds no
    /// certificate, or when the URL is not `amqps://`.
    pub fn with_ca_file(self, path: &Path) -> Result<Self, InvalidCaFile> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| InvalidCaFile(format!("cannot read {}: {e}", path.display())))?;
        self.with_ca_pem(&pem)
            .map_err(|InvalidCaFile(why)| InvalidCaFile(format!("{}: {why}", path.display())))
    }

    /// Trusts the CA certificates in `pem` too (see [`AmqpUrl::with_ca_file`]).
    pub fn with_ca_pem(mut self, pem: &str) -> Result<Self, InvalidCaFile> {
        if !self.is_tls() {
            return Err(InvalidCaFile(
                "a CA file is for amqps:// URLs; this one is amqp:// (no TLS)".to_owned(),
            ));
        }
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| InvalidCaFile(format!("not a PEM certificate file: {e}")))?;
        if certificates.is_empty() {
            return Err(InvalidCaFile(
                "no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)".to_owned(),
            ));
        }
        self.ca_pem = Some(pem.into());
        Ok(self)
    }

    /// Whether the connection is made with TLS (`amqps://`).
    pub fn is_tls(&self) -> bool {
        self.uri.scheme == AMQPScheme::AMQPS
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

    /// The TLS settings of its connections (used by `amqps://` only): the
    /// extra CA certificates, if any.
    pub(crate) fn tls_config(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: None,
            cert_chain: self.ca_pem.as_deref().map(str::to_owned),
        }
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
    }

    #[test]
    fn amqps_urls_are_tls_on_port_5671_by_default() {
        let url = AmqpUrl::parse("amqps://u:pw@broker.example/%2f").unwrap();
        assert!(url.is_tls());
        assert_eq!(url.port(), 5671);
        assert_eq!(url.to_string(), "amqps://u@broker.example:5671");
        assert!(!AmqpUrl::parse("amqp://u:pw@host").unwrap().is_tls());
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate_and_go_with_amqps() {
        let url = AmqpUrl::parse("amqps://u:pw@host").unwrap();
        let none = url.clone().with_ca_pem("just text").unwrap_err();
        assert!(none.to_string().contains("no certificate"), "{none}");
        let plain = AmqpUrl::parse("amqp://u:pw@host").unwrap();
        let error = plain.with_ca_pem(TEST_CA).unwrap_err();
        assert!(error.to_string().contains("amqps://"), "{error}");
        let with_ca = url.with_ca_pem(TEST_CA).unwrap();
        assert_eq!(with_ca.tls_config().cert_chain.as_deref(), Some(TEST_CA));
        let missing = AmqpUrl::parse("amqps://u:pw@host")
            .unwrap()
            .with_ca_file(Path::new("/nonexistent/ca.pem"))
            .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
    }

    /// A self-signed CA certificate (its key is not kept: only parsed here).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBizCCATGgAwIBAgIUFodgYTCL6TK7g8+nisP3k8CQFUcwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQd3NicmlkZ2UtdGVzdC1jYTAeFw0yNjEyMDYwMzIzMzZaFw0z
NjEyMDMwMzIzMzZaMBsxGTAXBgNVBAMMEHdzYnJpZGdlLXRlc3QtY2EwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAQlDM0A8YAQQXAJyPuiYRs4iR7odjbSkktZJPVb
Pz/ZWzsALlNrn1BNx3FRYHcoAvj31JGPyHnW5qFWRxUCUceXo1MwUTAdBgNVHQ4E
FgQUK+ueguIqZljRFy5SU+tMMiCGEcgwHwYDVR0jBBgwFoAUK+ueguIqZljRFy5S
U+tMMiCGEcgwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA1mTd
54kKwPlepSMoIMvZNvgxXZh0zt0WR9SVBINMXNgCIC6tsWTB7QWx2QF424JlCKDr
/o24/InRo2PEKHD23Ubq
-----END CERTIFICATE-----
";
}
