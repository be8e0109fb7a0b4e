//! AWS adapters of wsbridge, on the outer ring of the hexagon.
//!
//! - [`SqsCommandSource`] implements `domain::CommandSource` over an SQS queue
//!   (long polling, batched deletes, visibility changes).
//!   Its three hot calls go through [`SqsHttpClient`], a lean client on the
//!   SDK's signing crate, when the bridge is so configured (the default).
//! - [`SnsEventSink`] implements `domain::EventSink` over an SNS topic
//!   (`PublishBatch` after a short linger, `client_id`/`action` attributes).
//! - [`SnsReceiptSink`] implements `domain::ReceiptSink` over an SNS topic
//!   (delivery receipts, batched in the background).
//! - [`AwsMetrics`] holds what both count and time of their calls and the
//!   outcome of the last receive: the `wsbridge_sqs_*` and
//!   `wsbridge_backend_call_duration_seconds` series, and `/ready`'s reason.
//! - [`bootstrap`] creates topics, queues, the subscription and the
//!   dead-letter queue, idempotently.
//! - [`fanout`] manages the per-instance queues of `fanout` mode, and
//!   [`sharded`] the shard-range queues of `sharded` mode.
//! - [`tools`] backs the `send-command` and `monitor` commands.
//!
//! Everything is built from one `aws_config::SdkConfig` ([`sdk::load`]), so
//! `AWS_ENDPOINT_URL` points every client at a local emulator.

pub mod bootstrap;
mod classify;
mod credentials;
pub mod fanout;
pub mod metrics;
mod receipt_sink;
pub mod sdk;
pub mod sharded;
mod sns_sink;
mod sqs_http;
mod sqs_source;
pub mod tools;

pub use metrics::AwsMetrics;
pub use receipt_sink::SnsReceiptSink;
pub use sns_sink::{SnsEventSink, SnsSinkSettings};
pub use sqs_http::SqsHttpClient;
pub use sqs_source::{SqsCommandSource, SqsSourceSettings};
