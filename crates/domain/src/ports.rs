//! The ports: what the use cases need from the outside world, shaped around
//! the domain's decisions rather than around any SDK's calls.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::acks::DeliveryId;
use crate::client_id::ClientId;
use crate::client_message::OutboundEvent;
use crate::control::Control;

/// An opaque token with which a [`CommandSource`] settles one message
/// (an SQS receipt handle, an AMQP delivery tag, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
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

/// One message attribute as the source carries it (an SQS message attribute,
/// an AMQP header), kept so that a dead-lettered message keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageAttribute {
    /// The attribute's name.
    pub name: String,
    /// The transport's type name (`String`, `Number`, `Binary`, `String.x`…).
    pub data_type: String,
    /// The value: text for string and number types, bytes for binary ones.
    pub value: AttributeValue,
}

/// The value of a [`MessageAttribute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// A string or number value.
    Text(String),
    /// A binary value.
    Binary(Vec<u8>),
}

impl MessageAttribute {
    /// A `String` attribute.
    pub fn string(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            data_type: "String".into(),
            value: AttributeValue::Text(value.into()),
        }
    }
}

/// One message taken from the command source; it stays owned by the bridge
/// (invisible to other consumers) until it is acknowledged, released or
/// dead-lettered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The message's attributes, as received.
    pub attributes: Vec<MessageAttribute>,
    /// FIFO queues: the message group the message belongs to.
    pub group_id: Option<String>,
}

/// Why the bridge gives a Command up (docs/delivery.md, Given up): the `wsbridge_reason` a
/// dead-lettered message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The body is not a Command.
    Malformed,
    /// Its client was not connected anywhere within the retry window.
    Undeliverable,
}

impl GiveUpReason {
    /// The value of the `wsbridge_reason` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Undeliverable => "undeliverable",
        }
    }
}

/// Name of the attribute (AMQP: header) saying why a message was given up.
pub const REASON_ATTRIBUTE: &str = "wsbridge_reason";
/// Name of the attribute a Command carries when a replica that was shutting
/// down handed it back to the fleet unacknowledged (its value: that replica).
pub const RELEASED_ATTRIBUTE: &str = "wsbridge_released";
/// Name of the attribute (AMQP: header) with the error text.
pub const DETAIL_ATTRIBUTE: &str = "wsbridge_detail";
/// Longest `wsbridge_detail`, in bytes.
pub const DETAIL_MAX_BYTES: usize = 256;

/// A message the bridge gives up on, with what the dead-letter queue is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The message as received (body byte for byte, attributes, receipt).
    pub message: InboundMessage,
    /// Why it is given up.
    pub reason: GiveUpReason,
    /// The error text, at most [`DETAIL_MAX_BYTES`] bytes.
    pub detail: String,
}

impl DeadLetter {
    /// A dead letter whose detail is cut to [`DETAIL_MAX_BYTES`] on a
    /// character boundary.
    pub fn new(message: InboundMessage, reason: GiveUpReason, detail: &str) -> Self {
        Self {
            message,
            reason,
            detail: crate::text::truncate(detail, DETAIL_MAX_BYTES).to_owned(),
        }
    }
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

    /// The bridge gives the messages up: send each to the dead-letter queue
    /// with its reason, and remove it from the source only once that send
    /// succeeded; with no dead-letter queue known, remove it.
    async fn dead_letter(&self, letters: Vec<DeadLetter>) -> Result<(), SourceError>;

    /// The queue's visibility timeout, when the source hides a received
    /// message only for a while (SQS) rather than until it is settled (AMQP).
    /// Held deliveries are kept invisible with [`CommandSource::extend`]
    /// ahead of its expiry.
    async fn visibility_timeout(&self) -> Option<Duration>;

    /// Keeps the messages invisible for `visibility` from now on.
    async fn extend(&self, receipts: Vec<Receipt>, visibility: Duration)
        -> Result<(), SourceError>;

    /// Receives after which the source itself moves a message to a
    /// dead-letter queue (SQS: its RedrivePolicy's `maxReceiveCount`), when
    /// it does. A release is a receive there, so the bridge parks Commands
    /// that must wait rather than release them, and gives a message up
    /// itself, with its reason, rather than release it at that count.
    async fn max_receive_count(&self) -> Option<u32> {
        None
    }
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

    /// Carries out a control message on the connections of `client_id`
    /// here; says how many it reached.
    fn control(&self, client_id: &ClientId, control: &Control) -> usize {
        let _ = (client_id, control);
        0
    }

    /// How many connections are open.
    fn connection_count(&self) -> usize;
}
