//! What a call of the lean client can end in, and which of those are worth
//! another attempt (the SDK's standard retry rules).

use std::fmt;
use std::time::Duration;

use domain::SourceError;

use crate::classify::{classified, error_detail, reason_line};

/// Error codes of throttling, retried like server errors.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestLimitExceeded",
    "AWS.SimpleQueueService.RequestThrottled",
    "SlowDown",
];

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// SQS answered with an error.
    Service {
        status: u16,
        code: String,
        message: Option<String>,
    },
    /// No answer within the attempt's timeout.
    Timeout(Duration),
    /// No connection, or the connection failed (refused, reset, TLS).
    Transport(String),
    /// The request could not be made: no credentials, a bad URL.
    Request(String),
    /// An answer that is not what SQS answers.
    Decode(String),
}

impl CallError {
    /// Whether another attempt may succeed: transport failures, timeouts,
    /// server errors and throttling. A refused request (bad credentials,
    /// missing queue) fails the same way again.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Self::Service { status, code, .. } => {
                *status >= 500 || THROTTLING.contains(&code.as_str())
            }
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::Request(_) | Self::Decode(_) => false,
        }
    }

    /// `"<code>: <message>"` for a service error, else the failure's kind
    /// and cause.
    pub(crate) fn detail(&self) -> String {
        match self {
            Self::Service {
                code,
                status,
                message,
            } => {
                let code = if code.is_empty() {
                    format!("HTTP {status}")
                } else {
                    code.clone()
                };
                error_detail(&code, message.as_deref())
            }
            Self::Timeout(after) => format!("timeout: no answer within {after:?}"),
            Self::Transport(cause) => format!("dispatch failure: {cause}"),
            Self::Request(cause) => format!("request not made: {cause}"),
            Self::Decode(cause) => format!("unreadable answer: {cause}"),
        }
    }

    /// The domain's view: misconfigured for a missing queue or refused
    /// credentials, unavailable otherwise.
    pub(crate) fn source_error(&self, operation: &str) -> SourceError {
        let code = match self {
            Self::Service { code, .. } => Some(code.as_str()),
            _ => None,
        };
        classified(code, format!("{operation}: {}", self.detail()))
    }

    /// The one-line reason `/ready` gives.
    pub(crate) fn failure_reason(&self, operation: &str) -> String {
        reason_line("SQS", operation, &self.detail())
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str) -> CallError {
        CallError::Service {
            status,
            code: code.to_owned(),
            message: Some("why".to_owned()),
        }
    }

    #[test]
    fn server_errors_throttling_and_transport_failures_are_retried() {
        assert!(service(500, "InternalError").retryable());
        assert!(service(503, "ServiceUnavailable").retryable());
        assert!(service(400, "ThrottlingException").retryable());
        assert!(service(400, "AWS.SimpleQueueService.RequestThrottled").retryable());
        assert!(CallError::Timeout(Duration::from_secs(1)).retryable());
        assert!(CallError::Transport("connection refused".into()).retryable());
    }

    #[test]
    fn refusals_are_not_retried_and_name_their_code() {
        for code in [
            "AccessDenied",
            "InvalidClientTokenId",
            "ExpiredToken",
            "QueueDoesNotExist",
        ] {
            let err = service(403, code);
            assert!(!err.retryable(), "{code}");
            assert_eq!(
                err.failure_reason("ReceiveMessage"),
                format!("SQS ReceiveMessage: {code}: why")
            );
        }
        assert!(matches!(
            service(400, "AWS.SimpleQueueService.NonExistentQueue").source_error("ReceiveMessage"),
            SourceError::Misconfigured(_)
        ));
        assert!(matches!(
            service(500, "InternalError").source_error("ReceiveMessage"),
            SourceError::Unavailable(_)
        ));
        assert!(!CallError::Decode("not JSON".into()).retryable());
    }
}
