//! Turning SDK and lean-client errors into the domain's decisions, in one
//! place.

use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use domain::SourceError;

/// Error codes that mean the queue itself is wrong, not the network.
const MISCONFIGURED: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAddress",
];

/// Classifies an SQS call's error.
pub(crate) fn source_error<E, R>(operation: &str, err: SdkError<E, R>) -> SourceError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = format!("{operation}: {}", DisplayErrorContext(&err));
    classified(err.code(), text)
}

/// [`SourceError::Misconfigured`] when AWS's error `code` says the queue or
/// the credentials are wrong, else [`SourceError::Unavailable`].
pub(crate) fn classified(code: Option<&str>, text: String) -> SourceError {
    match code {
        Some(code) if MISCONFIGURED.contains(&code) => SourceError::Misconfigured(text),
        _ => SourceError::Unavailable(text),
    }
}

/// An error with its cause chain, on one line.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    DisplayErrorContext(err).to_string()
}

/// A readable one-line rendering of any SDK error, with its cause chain.
pub(crate) fn describe<E: std::error::Error>(operation: &str, err: &E) -> String {
    format!("{operation}: {}", DisplayErrorContext(err))
}

/// Longest failure reason [`failure_reason`] gives.
const REASON_CHARS: usize = 200;

/// A short, classified account of a failed call, for `/ready`:
/// `"<service> <operation>: <code>: <AWS's message>"` when the service
/// answered with an error, else the kind of transport failure with its cause
/// chain. It names no request detail (no credentials, no receipts), keeps to
/// one line and to [`REASON_CHARS`] characters.
pub(crate) fn failure_reason<E, R>(service: &str, operation: &str, err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        (None, _) => DisplayErrorContext(err).to_string(),
    };
    reason_line(service, operation, &detail)
}

/// `"<service> <operation>: <detail>"` on one line, cut to [`REASON_CHARS`].
pub(crate) fn reason_line(service: &str, operation: &str, detail: &str) -> String {
    let line: String = format!("{service} {operation}: {detail}")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match line.char_indices().nth(REASON_CHARS) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::operation::receive_message::ReceiveMessageError;
    use aws_smithy_types::error::ErrorMetadata;

    use super::*;

    fn service_error(code: &str, message: &str) -> SdkError<ReceiveMessageError, ()> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        SdkError::service_error(ReceiveMessageError::generic(meta), ())
    }

    #[test]
    fn a_service_error_is_named_by_its_code_and_message() {
        let err = service_error("AccessDenied", "not authorized to\nReceiveMessage");
        assert_eq!(
            failure_reason("SQS", "ReceiveMessage", &err),
            "SQS ReceiveMessage: AccessDenied: not authorized to ReceiveMessage"
        );
    }

    #[test]
    fn a_long_reason_is_cut() {
        let err = service_error("InvalidSignature", &"é".repeat(500));
        let reason = failure_reason("SQS", "ReceiveMessage", &err);
        assert_eq!(reason.chars().count(), REASON_CHARS + 1, "{reason}");
        assert!(reason.ends_with('…'), "{reason}");
    }

    #[test]
    fn a_transport_failure_is_named_by_its_kind() {
        let err: SdkError<ReceiveMessageError, ()> =
            SdkError::timeout_error("attempt timeout occurred after 5s");
        let reason = failure_reason("SQS", "ReceiveMessage", &err);
        assert!(
            reason.starts_with("SQS ReceiveMessage: ") && reason.contains("timeout"),
            "{reason}"
        );
    }
}
