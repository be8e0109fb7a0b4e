//! The values the model takes and answers — messages to send, what a
//! receive asks for and gets, publications, subscription listings, queue
//! counts — independent of the SQS JSON and SNS query protocols that
//! `sqs.rs` and `sns.rs` translate them from and to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One message attribute, as the SQS JSON protocol writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageAttribute {
    /// `String`, `Number`, `Binary`, optionally with a `.custom` suffix.
    pub data_type: String,
    /// The value of a String or Number attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string_value: Option<String>,
    /// The value of a Binary attribute, base64 as on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
}

/// Message attributes by name.
pub type Attributes = BTreeMap<String, MessageAttribute>;

/// A message to put on a queue.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    /// The body.
    pub body: String,
    /// Message attributes.
    pub attributes: Attributes,
    /// Per-message delay in seconds (standard queues).
    pub delay_secs: Option<u32>,
    /// FIFO: the message group.
    pub group: Option<String>,
    /// FIFO: the de-duplication id.
    pub dedup_id: Option<String>,
}

/// What SQS counts of a message against its size limits (a message's
/// `MaximumMessageSize`, a batch's total): the body, and each attribute's
/// name, type and value (a binary value by its decoded bytes).
pub fn payload_bytes(body: &str, attributes: &Attributes) -> usize {
    attributes.iter().fold(body.len(), |total, (name, a)| {
        let value = match (&a.string_value, &a.binary_value) {
            (Some(text), _) => text.len(),
            (None, Some(base64)) => {
                let padding = base64.bytes().rev().take_while(|&b| b == b'=').count();
                (base64.len() / 4 * 3).saturating_sub(padding)
            }
            (None, None) => 0,
        };
        total
            .saturating_add(name.len())
            .saturating_add(a.data_type.len())
            .saturating_add(value)
    })
}

/// What a send answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The new message's id.
    pub message_id: String,
    /// MD5 of the body, hex.
    pub md5_of_body: String,
    /// FIFO: the sequence number.
    pub sequence_number: Option<String>,
}

/// Which system attributes and message attributes a receive asks for.
#[derive(Debug, Clone, Default)]
pub struct ReceiveRequest {
    /// Messages at most (1..=10).
    pub max_messages: usize,
    /// Long-poll wait.
    pub wait: Duration,
    /// Visibility timeout override, in seconds.
    pub visibility_secs: Option<u32>,
    /// System attribute names (`All` for all).
    pub system_attributes: Vec<String>,
    /// Message attribute names (`All`, `.*`, names, `prefix.*`).
    pub message_attributes: Vec<String>,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The message id.
    pub message_id: String,
    /// The receipt handle of this receive.
    pub receipt_handle: String,
    /// MD5 of the body, hex.
    pub md5_of_body: Arc<str>,
    /// The body.
    pub body: Arc<str>,
    /// The system attributes asked for.
    pub system_attributes: BTreeMap<&'static str, String>,
    /// The message attributes asked for.
    pub message_attributes: Attributes,
}

/// A message to publish to a topic.
#[derive(Debug, Clone, Default)]
pub struct Publication {
    /// The message.
    pub message: String,
    /// Optional subject (kept in the envelope).
    pub subject: Option<String>,
    /// Message attributes.
    pub attributes: Attributes,
    /// `json`: `message` holds one text per protocol (`default`, `sqs`).
    pub message_structure: Option<String>,
    /// FIFO topics: the message group.
    pub group: Option<String>,
    /// FIFO topics: the de-duplication id.
    pub dedup_id: Option<String>,
}

/// A subscription as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// Its ARN.
    pub arn: String,
    /// The topic's ARN.
    pub topic_arn: String,
    /// `sqs`, `http`, …
    pub protocol: String,
    /// The queue ARN (or URL, address …).
    pub endpoint: String,
    /// Every attribute.
    pub attributes: BTreeMap<String, String>,
}

/// A snapshot of a queue's message counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    /// Visible messages.
    pub visible: usize,
    /// Messages in flight (received, neither deleted nor visible again).
    pub in_flight: usize,
    /// Messages delayed (sent with a delay not yet over).
    pub delayed: usize,
}
