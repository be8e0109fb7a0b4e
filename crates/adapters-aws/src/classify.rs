//! Turning SDK errors into the domain's decisions, in one place.

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
    let code = err.code().map(str::to_owned);
    let text = format!("{operation}: {}", DisplayErrorContext(&err));
    match code {
        Some(code) if MISCONFIGURED.contains(&code.as_str()) => SourceError::Misconfigured(text),
        _ => SourceError::Unavailable(text),
    }
}

/// A readable one-line rendering of any SDK error, with its cause chain.
pub(crate) fn describe<E: std::error::Error>(operation: &str, err: &E) -> String {
    format!("{operation}: {}", DisplayErrorContext(err))
}
