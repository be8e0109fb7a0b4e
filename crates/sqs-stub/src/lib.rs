//! Development only: an in-memory SQS and SNS server on loopback HTTP, for
//! benchmarks (`crates/bench`) and fault tests.
//!
//! Outside the hexagon: nothing in the product depends on it. The bridge
//! runs against it unchanged — point `AWS_ENDPOINT_URL` at
//! [`StubServer::endpoint`]. It answers in microseconds where moto takes
//! 100 ms, so throughput measured through it is the bridge's, not the
//! emulator's; [`Faults`] add a per-call latency (AWS answers in 10–30 ms)
//! and inject failures.
//!
//! What it speaks:
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
//!   ListSubscriptions(ByTopic), Get/SetSubscriptionAttributes, Publish,
//!   PublishBatch. Publishing fans out to `sqs` subscriptions: the SNS
//!   envelope (compact JSON in AWS field order, attributes inside) unless
//!   `RawMessageDelivery` is on, then the bare message with SQS message
//!   attributes; filter policies (attribute or body scope, common operators).
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
//! What it does not: authentication (any credentials pass, signatures are
//! not checked), message retention expiry, KMS, permissions, the SQS query
//! protocol, SNS deliveries other than to SQS.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let stub = sqs_stub::StubServer::start(sqs_stub::StubConfig::default()).await?;
//! println!("AWS_ENDPOINT_URL={}", stub.endpoint());
//! stub.set_faults(sqs_stub::Faults { latency_ms: 20, ..sqs_stub::Faults::default() });
//! stub.stop().await;
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
pub use server::{FaultKind, Faults, OperationStats, StubConfig, StubServer};
