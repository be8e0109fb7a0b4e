//! Errors of the emulated APIs, and how each protocol spells them.

use std::fmt;

/// What went wrong, independent of the protocol that reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The queue does not exist.
    QueueMissing,
    /// The topic does not exist.
    TopicMissing,
    /// The subscription does not exist.
    SubscriptionMissing,
    /// The resource a tagging call names does not exist.
    ResourceMissing,
    /// A parameter has an invalid value.
    InvalidParameter,
    /// A required parameter is missing.
    MissingParameter,
    /// A receipt handle that this server never issued.
    ReceiptInvalid,
    /// The message is not in flight (not received, or visible again).
    NotInflight,
    /// More than ten entries in a batch.
    TooManyEntries,
    /// A batch without entries.
    EmptyBatch,
    /// Two entries of a batch share an id.
    IdsNotDistinct,
    /// A batch whose messages add up to more than 256 KiB.
    BatchTooLong,
    /// A batch entry id with characters other than letters, digits, `-`, `_`.
    InvalidBatchId,
    /// A queue of that name exists with other attributes.
    QueueExists,
    /// An operation the emulator does not implement.
    UnknownOperation,
    /// Injected: a server-side failure (HTTP 500).
    Internal,
    /// Injected: throttling (HTTP 400, retried by the SDKs).
    Throttled,
    /// Injected: the service is unavailable (HTTP 503).
    Unavailable,
}

/// An API error: its kind and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable details.
    pub message: String,
}

impl ApiError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// An invalid parameter value.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameter, message)
    }

    /// A missing required parameter.
    pub fn missing(name: &str) -> Self {
        Self::new(
            ErrorKind::MissingParameter,
            format!("The request must contain the parameter {name}."),
        )
    }

    /// The queue a request names does not exist.
    pub fn queue_missing() -> Self {
        Self::new(
            ErrorKind::QueueMissing,
            "The specified queue does not exist.",
        )
    }

    /// The topic a request names does not exist.
    pub fn topic_missing() -> Self {
        Self::new(ErrorKind::TopicMissing, "Topic does not exist")
    }

    /// The subscription a request names does not exist.
    pub fn subscription_missing() -> Self {
        Self::new(
            ErrorKind::SubscriptionMissing,
            "Subscription does not exist",
        )
    }

    /// The resource a tagging call names does not exist.
    pub fn resource_missing() -> Self {
        Self::new(ErrorKind::ResourceMissing, "Resource does not exist")
    }

    /// An operation the emulator does not implement (`operation` as the
    /// client named it).
    pub fn unsupported(operation: &str) -> Self {
        Self::new(
            ErrorKind::UnknownOperation,
            format!("{operation} is not supported by the embedded emulator"),
        )
    }

    /// The SQS JSON protocol's spelling: (`__type` suffix, `x-amzn-query-error`
    /// code, HTTP status, sender's fault).
    pub fn sqs_codes(&self) -> (&'static str, &'static str, u16, bool) {
        use ErrorKind::*;
        match self.kind {
            QueueMissing | TopicMissing | SubscriptionMissing | ResourceMissing => (
                "QueueDoesNotExist",
                "AWS.SimpleQueueService.NonExistentQueue",
                400,
                true,
            ),
            InvalidParameter => ("InvalidParameterValue", "InvalidParameterValue", 400, true),
            MissingParameter => ("MissingParameter", "MissingParameter", 400, true),
            ReceiptInvalid => (
                "ReceiptHandleIsInvalid",
                "ReceiptHandleIsInvalid",
                400,
                true,
            ),
            NotInflight => (
                "MessageNotInflight",
                "AWS.SimpleQueueService.MessageNotInflight",
                400,
                true,
            ),
            TooManyEntries => (
                "TooManyEntriesInBatchRequest",
                "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                400,
                true,
            ),
            EmptyBatch => (
                "EmptyBatchRequest",
                "AWS.SimpleQueueService.EmptyBatchRequest",
                400,
                true,
            ),
            IdsNotDistinct => (
                "BatchEntryIdsNotDistinct",
                "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
                400,
                true,
            ),
            BatchTooLong => (
                "BatchRequestTooLong",
                "AWS.SimpleQueueService.BatchRequestTooLong",
                400,
                true,
            ),
            InvalidBatchId => (
                "InvalidBatchEntryId",
                "AWS.SimpleQueueService.InvalidBatchEntryId",
                400,
                true,
            ),
            QueueExists => ("QueueNameExists", "QueueAlreadyExists", 400, true),
            UnknownOperation => (
                "UnsupportedOperation",
                "AWS.SimpleQueueService.UnsupportedOperation",
                400,
                true,
            ),
            Internal => ("InternalError", "InternalError", 500, false),
            Throttled => ("RequestThrottled", "RequestThrottled", 400, false),
            Unavailable => ("ServiceUnavailable", "ServiceUnavailable", 503, false),
        }
    }

    /// The SNS query protocol's spelling: (`Code`, HTTP status, sender's fault).
    pub fn sns_codes(&self) -> (&'static str, u16, bool) {
        use ErrorKind::*;
        match self.kind {
            QueueMissing | TopicMissing | SubscriptionMissing => ("NotFound", 404, true),
            ResourceMissing => ("ResourceNotFound", 404, true),
            InvalidParameter | MissingParameter | ReceiptInvalid | NotInflight | QueueExists => {
                ("InvalidParameter", 400, true)
            }
            TooManyEntries => ("TooManyEntriesInBatchRequest", 400, true),
            EmptyBatch => ("EmptyBatchRequest", 400, true),
            IdsNotDistinct => ("BatchEntryIdsNotDistinct", 400, true),
            BatchTooLong => ("BatchRequestTooLong", 400, true),
            InvalidBatchId => ("InvalidBatchEntryId", 400, true),
            UnknownOperation => ("InvalidAction", 400, true),
            Internal => ("InternalError", 500, false),
            Throttled => ("Throttling", 400, false),
            Unavailable => ("ServiceUnavailable", 503, false),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Result of an emulated API call.
pub type ApiResult<T> = Result<T, ApiError>;
