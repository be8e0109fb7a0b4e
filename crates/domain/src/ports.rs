//! The ports: what the use cases need from the outside world, shaped around
//! the domain's decisions rather than around any SDK's calls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::acks::DeliveryId;
use crate::client_id::ClientId;
use crate::client_message::OutboundEvent;

/// An opaque token with which a [`CommandSource`] settles one message
/// (an SQS receipt handle, an AMQP delivery tag, …).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(String);

impl Receipt {
    /// Wraps an adapter's token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The adapter's token.
    pub fn token(&self) -> &str {
        &self.0
    }
}

/// One message taken from the command source; it stays owned by the bridge
/// (invisible to other consumers) until it is acknowledged, released or rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The transport's id for the message (SQS `MessageId`).
    pub message_id: String,
    /// The raw body.
    pub body: String,
    /// How to settle the message.
    pub receipt: Receipt,
    /// When the message was first sent to the source, if known.
    pub sent_at: Option<SystemTime>,
    /// How many times the source has handed this message out, including now.
    pub receive_count: u32,
}

/// Why the command source could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// A transient failure (network, throttling, 5xx): retry with backoff.
    #[error("command source unavailable: {0}")]
    Unavailable(String),
    /// The source is misconfigured (queue missing, access denied): retrying
    /// is still right, but an operator must act.
    #[error("command source misconfigured: {0}")]
    Misconfigured(String),
    /// Some messages of a batch could not be settled; they will come back.
    #[error("{} message(s) could not be settled: {reason}", .failed.len())]
    Partial {
        /// The receipts that failed.
        failed: Vec<Receipt>,
        /// The first failure's reason.
        reason: String,
    },
}

/// Where Commands come from (an SQS queue, an AMQP queue).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait CommandSource: Send + Sync {
    /// Waits (long-polls) for the next batch; may return an empty batch.
    async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError>;

    /// The messages were handed off: remove them from the source for good.
    async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError>;

    /// The messages were not handed off: give them back to be received again
    /// after `delay` (by this or another consumer).
    async fn release(&self, receipts: Vec<Receipt>, delay: Duration) -> Result<(), SourceError>;

    /// The messages can never be processed: dead-letter them where the source
    /// has a dead-letter queue, otherwise remove them.
    async fn reject(&self, receipts: Vec<Receipt>) -> Result<(), SourceError>;
}

/// Why the event sink could not publish an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The event can never be published as it is (too large, invalid).
    #[error("event rejected: {0}")]
    Rejected(String),
    /// The sink could not take the event in time, after retries.
    #[error("event sink unavailable: {0}")]
    Unavailable(String),
}

/// Where client events go (an SNS topic, an AMQP exchange).
#[cfg_attr(feature = "mock", mockall::automock)]
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Publishes one event; returns once the sink has accepted it.
    async fn publish(&self, event: OutboundEvent) -> Result<(), PublishError>;
}

/// A text frame shared by every connection it is written to.
pub type Frame = Arc<str>;

/// How many connections took a delivered Command.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Handoff {
    /// Connections that took it with no acknowledgement to come (at-most-once
    /// from here on).
    pub immediate: usize,
    /// Connections that took it and will acknowledge it (`ack=true`).
    pub awaiting_ack: usize,
}

impl Handoff {
    /// Connections that took it, of either kind.
    pub fn taken(&self) -> usize {
        self.immediate + self.awaiting_ack
    }
}

/// The live WebSocket connections, by client id.
///
/// Deliberately synchronous: handing a frame to a connection is a `try_send`
/// into its bounded queue, so the downlink never waits on a slow client.
#[cfg_attr(feature = "mock", mockall::automock)]
pub trait ClientRegistry: Send + Sync {
    /// Queues `frame` on every connection of `client_id`; says how many
    /// took it. A connection that acknowledges deliveries gets the frame
    /// wrapped with `delivery` ([`crate::acks::ack_frame`]).
    fn deliver(&self, client_id: &ClientId, frame: &Frame, delivery: DeliveryId) -> Handoff;

    /// How many connections are open.
    fn connection_count(&self) -> usize;
}
