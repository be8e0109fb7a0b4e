//! The embedded SQS/SNS emulator: an in-memory SQS and SNS server on
//! loopback HTTP, the backend `wsbridge dev` runs when no
//! `AWS_ENDPOINT_URL` is given, and `wsbridge emulator` alone.
//!
//! Outside the hexagon: a leaf that the app (`dev`, `emulator`), the tests
//! and the benchmarks (`crates/bench`) start; nothing of the bridge's
//! adapters knows it is there. Any AWS client runs against it unchanged —
//! the AWS SDKs, the AWS CLI, boto3 — pointed at [`Emulator::endpoint`]
//! through `AWS_ENDPOINT_URL`, with any region and credentials (signatures
//! are not checked). It answers in microseconds where moto takes 100 ms, so
//! throughput measured through it is the bridge's; [`Faults`] add a
//! per-call latency (AWS answers in 10–30 ms) and inject failures.
//!
//! Scope: the operations wsbridge uses, those of its helper commands
//! (`send-command`, `monitor`, `gc`, `dev`'s provisioning) and those of a
//! typical backend (create a queue, subscribe it to a topic, send, receive,
//! delete, publish). The integration tests of the app run the same
//! end-to-end suite against moto and against this emulator; where they
//! differ, moto's behaviour is the reference.
//!
//! - SQS, AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.*`): CreateQueue,
//!   GetQueueUrl, DeleteQueue, PurgeQueue, ListQueues, Get/SetQueueAttributes,
//!   Tag/Untag/ListQueueTags, SendMessage(Batch), ReceiveMessage (long
//!   polling that wakes when a message arrives, visibility timeouts, receipt
//!   handles, system and message attributes), DeleteMessage(Batch),
//!   ChangeMessageVisibility(Batch); redrive to a dead-letter queue
//!   (`maxReceiveCount`); FIFO queues (groups delivered in order, one batch
//!   in flight per group, de-duplication ids, content-based de-duplication).
//! - SNS, the query protocol (form bodies, XML answers): CreateTopic,
//!   DeleteTopic, ListTopics, Get/SetTopicAttributes, Subscribe, Unsubscribe,
//!   ListSubscriptions(ByTopic), Get/SetSubscriptionAttributes,
//!   TagResource, UntagResource, ListTagsForResource (topics), Publish,
//!   PublishBatch. Publishing fans out to `sqs` subscriptions: the SNS
//!   envelope (compact JSON in AWS field order, attributes inside) unless
//!   `RawMessageDelivery` is on, then the bare message with SQS message
//!   attributes; filter policies (attribute or body scope, common operators).
//! - Anything else is answered with an AWS-style error, HTTP 400, never a
//!   success: an SQS operation with `{"__type":
//!   "com.amazonaws.sqs#UnsupportedOperation", "message": "<Op> is not
//!   supported by the embedded emulator"}` and `x-amzn-query-error:
//!   AWS.SimpleQueueService.UnsupportedOperation;Sender`; an SNS action (or
//!   an SQS call in the older query protocol) with an `ErrorResponse` of code
//!   `InvalidAction` and the same message.
//! - Control routes, never delayed nor failed by the fault injection:
//!
//! | route | does |
//! |---|---|
//! | `GET /__stub/health` | `ok` |
//! | `GET /__stub/stats` | calls, errors and entries per operation; message counts per queue; fan-out counts |
//! | `POST /__stub/stats/reset` | zeroes the per-operation counts |
//! | `GET`, `POST /__stub/faults` | reads / replaces the latency and faults ([`Faults`] as JSON) |
//! | `POST /__stub/send` | bulk load: `{"queue": URL or name, "bodies": [..]}` puts messages on a queue; `{"topic_arn": ARN, "messages": [..], "attributes": {"name": "value"}}` publishes them (fan-out and envelopes as SNS); answers `{"sent": n}` |
//! | `POST /__stub/reset` | forgets every queue, topic and subscription, and the counts |
//!
//! What it does not do: persistence (everything is lost when it stops),
//! authentication and permissions (any credentials pass), message retention
//! expiry, KMS, the SQS query protocol (the AWS SDKs and CLIs of today speak
//! JSON to SQS), SQS permissions and message move tasks, SNS deliveries
//! other than to SQS (HTTP, e-mail, SMS, Lambda, platform applications) and
//! SNS data protection.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let emulator = emulator::Emulator::start(emulator::EmulatorConfig::default()).await?;
//! println!("export AWS_ENDPOINT_URL={}", emulator.endpoint());
//! emulator.set_faults(emulator::Faults { latency_ms: 20, ..emulator::Faults::default() });
//! emulator.stop().await;
//! # Ok(())
//! # }
//! ```

mod admin;
mod error;
mod filter;
mod md5;
mod model;
mod server;
mod sns;
mod sqs;
mod time;

pub use error::{ApiError, ErrorKind};
pub use filter::FilterPolicy;
pub use model::{
    Attributes, Delivered, MessageAttribute, Model, NewMessage, Publication, QueueCell,
    QueueCounts, ReceiveRequest, Sent, SubscriptionInfo, MAX_MESSAGE_BYTES,
};
pub use server::{Emulator, EmulatorConfig, FaultKind, Faults, OperationStats};
