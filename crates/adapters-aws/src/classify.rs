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
    let detail = match err.code() {
        Some(code) => error_detail(code, err.message()),
        None => DisplayErrorContext(err).to_string(),
    };
    reason_line(service, operation, &detail)
}

/// `"<code>: <message>"`, and when the message says which IAM action was
/// denied (`… is not authorized to perform: sqs:ReceiveMessage on resource
/// …`), `"<code> for <action>: <message>"`: the action comes first, where a
/// cut reason still shows it.
pub(crate) fn error_detail(code: &str, message: Option<&str>) -> String {
    match message {
        Some(message) => match denied_action(message) {
            Some(action) => format!("{code} for {action}: {message}"),
            None => format!("{code}: {message}"),
        },
        None => code.to_owned(),
    }
}

/// The IAM action an access-denied message names, if it names one.
fn denied_action(message: &str) -> Option<&str> {
    let rest = message.split("authorized to perform:").nth(1)?;
    let action = rest
        .split_whitespace()
        .next()?
        .trim_end_matches(['.', ',', ';']);
    let (service, name) = action.split_once(':')?;
    (!service.is_empty() && !name.is_empty()).then_some(action)
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
    fn an_access_denied_reason_names_the_action_first() {
        // moto's wording, and AWS's (lower-case action, resource, reason).
        let err = service_error(
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/bridge is not authorized to perform: \
             sqs:ReceiveMessage",
        );
        assert_eq!(
            failure_reason("SQS", "ReceiveMessage", &err),
            "SQS ReceiveMessage: AccessDenied for sqs:ReceiveMessage: User: \
             arn:aws:iam::123456789012:user/bridge is not authorized to perform: sqs:ReceiveMessage"
        );
        let aws = "User: arn:aws:sts::123456789012:assumed-role/a-rather-long-role-name/\
                   i-0123456789abcdef0 is not authorized to perform: sqs:receivemessage on \
                   resource: arn:aws:sqs:us-east-1:123456789012:wsbridge-commands because no \
                   identity-based policy allows the sqs:receivemessage action";
        let reason = failure_reason("SQS", "ReceiveMessage", &service_error("AccessDenied", aws));
        assert!(
            reason.starts_with("SQS ReceiveMessage: AccessDenied for sqs:receivemessage: User:"),
            "{reason}"
        );
        assert_eq!(denied_action("not authorized to perform: nothing"), None);
        assert_eq!(
            error_detail("Throttling", Some("slow down")),
            "Throttling: slow down"
        );
        assert_eq!(error_detail("Throttling", None), "Throttling");
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
