//! Talking to the broker, below the supervisor: opening a named
//! connection within a deadline, opening a confirm-mode channel, closing
//! politely, classifying lapin's errors into the decisions the ports know,
//! and checking protocol short strings.

use std::fmt;
use std::time::Duration;

use domain::{PublishError, SourceError};
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties, DefaultConnectionBuilder, ErrorKind};

use crate::url::AmqpUrl;

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
            ErrorKind::IOError(io) => untrusted_certificate(io),
            _ => false,
        };
        let hint = if misconfigured && matches!(error.kind(), ErrorKind::IOError(_)) {
            " (TLS: the broker's certificate must chain to the system's roots or to \
             amqp_ca_file, and name the URL's host)"
        } else {
            ""
        };
        Self {
            misconfigured,
            text: format!("{operation}: {error}{hint}"),
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

/// Whether a connection failed because the broker's TLS certificate was
/// refused: an operator must fix the CA or the host name, retrying alone
/// never helps.
fn untrusted_certificate(error: &std::io::Error) -> bool {
    let refused = |e: &rustls::Error| {
        matches!(
            e,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        )
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = error
        .get_ref()
        .map(|e| e as &(dyn std::error::Error + 'static));
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some_and(refused) {
            return true;
        }
        source = e.source();
    }
    false
}

/// Opens a connection named `name` (the name the broker shows in
/// `rabbitmqctl list_connections client_properties`), giving up after `timeout`.
pub(crate) async fn connect(
    url: &AmqpUrl,
    name: &str,
    timeout: Duration,
) -> Result<Connection, Failure> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let builder = DefaultConnectionBuilder::new()
        .map_err(|e| Failure::from_lapin("connect", &e))?
        .with_uri(url.uri().clone())
        .with_properties(properties)
        .with_tls_config(url.tls_config());
    match tokio::time::timeout(timeout, builder.connect()).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(error)) => Err(Failure::from_lapin(&format!("connect to {url}"), &error)),
        Err(_) => Err(Failure::unavailable(format!(
            "connect to {url}: no answer within {timeout:?}"
        ))),
    }
}

/// Opens a channel in confirm mode (`confirm.select`): every publish on it
/// is answered by the broker's ack or nack.
pub(crate) async fn open_confirm_channel(connection: &Connection) -> Result<Channel, Failure> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| Failure::from_lapin("open channel", &e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| Failure::from_lapin("confirm.select", &e))?;
    Ok(channel)
}

/// Closes a connection politely, not waiting long for a broker that is gone.
pub(crate) async fn close_connection(connection: &Connection, reason: &str) {
    if connection.status().connected() {
        let close = connection.close(200, reason.into());
        let _ = tokio::time::timeout(Duration::from_secs(2), close).await;
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
    fn short_strings_are_checked_instead_of_panicking() {
        assert!(short(&"a".repeat(255)).is_ok());
        assert!(short(&"a".repeat(256)).is_err());
    }
}
