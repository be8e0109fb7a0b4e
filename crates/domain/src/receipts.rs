//! Delivery receipts (docs/control-plane.md): one event per Command outcome, so the
//! backend that sent a Command can learn what became of it — handed to
//! sockets, acknowledged by the client, undeliverable, malformed, or given
//! up to the dead-letter queue — by the SQS/SNS message ids and by the
//! Command's own `id` (a correlation id the backend chose).
//!
//! The use cases only [`ReceiptSink::record`] a receipt: recording never
//! waits and never fails. Publishing, batching, retrying and counting are
//! the sink's (an adapter's), so a slow or failing receipts topic never
//! holds up a delivery.

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::client_id::ClientId;
use crate::time::iso8601;

/// What became of a Command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Handed to at least one of its client's sockets.
    Delivered,
    /// Confirmed by its client (`ack=true` connections).
    Acknowledged,
    /// Deleted without a connection to take it (`undeliverable = "drop"`).
    Undeliverable,
    /// Not a Command; given up to the dead-letter queue.
    Malformed,
    /// Not delivered within the retry window; given up to the dead-letter
    /// queue.
    DeadLettered,
}

impl Outcome {
    /// The name receipts carry (body field and `outcome` attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Acknowledged => "acknowledged",
            Self::Undeliverable => "undeliverable",
            Self::Malformed => "malformed",
            Self::DeadLettered => "dead_lettered",
        }
    }
}

/// One Command's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// What became of it.
    pub outcome: Outcome,
    /// Its client, when the body named one.
    pub client_id: Option<ClientId>,
    /// The queue's message id (SQS `MessageId`).
    pub message_id: String,
    /// The SNS message id, when the Command came through SNS.
    pub sns_message_id: Option<String>,
    /// The Command's own `id` field, when it has one.
    pub command_id: Option<String>,
    /// Sockets it was handed to (delivered only).
    pub connections: Option<usize>,
    /// When it happened.
    pub at: SystemTime,
}

impl DeliveryReceipt {
    /// The published body: `{"outcome", "client_id", "message_id",
    /// "sns_message_id", "command_id", "at"}` (+ `"connections"` when
    /// delivered); unknown values are null.
    pub fn body(&self) -> String {
        let mut body = json!({
            "outcome": self.outcome.as_str(),
            "client_id": self.client_id.as_ref().map(ClientId::as_str),
            "message_id": self.message_id,
            "sns_message_id": self.sns_message_id,
            "command_id": self.command_id,
            "at": iso8601(self.at),
        });
        if let (Some(connections), Value::Object(fields)) = (self.connections, &mut body) {
            fields.insert("connections".into(), json!(connections));
        }
        body.to_string()
    }
}

/// Where the use cases record receipts. Must not block.
pub trait ReceiptSink: Send + Sync {
    /// Takes one receipt to publish.
    fn record(&self, receipt: DeliveryReceipt);

    /// Whether receipts of `outcome` are wanted at all: the use cases ask
    /// first, so that a receipt nobody publishes is never built (building
    /// one reads the Command's `id`).
    fn wants(&self, _outcome: Outcome) -> bool {
        true
    }
}

/// A [`ReceiptSink`] that passes on every receipt except those of one
/// outcome. A fanout replica wraps its sink in one that skips
/// `undeliverable`: every replica receives every Command, so all but the
/// ones holding its client would report it undeliverable each time.
pub struct SkipOutcome<S: ?Sized> {
    skipped: Outcome,
    inner: std::sync::Arc<S>,
}

impl<S: ReceiptSink + ?Sized> SkipOutcome<S> {
    /// Passes to `inner` every receipt whose outcome is not `skipped`.
    pub fn new(inner: std::sync::Arc<S>, skipped: Outcome) -> Self {
        Self { skipped, inner }
    }
}

impl<S: ReceiptSink + ?Sized> ReceiptSink for SkipOutcome<S> {
    fn record(&self, receipt: DeliveryReceipt) {
        if self.wants(receipt.outcome) {
            self.inner.record(receipt);
        }
    }

    fn wants(&self, outcome: Outcome) -> bool {
        outcome != self.skipped && self.inner.wants(outcome)
    }
}

/// Longest Command `id` a receipt carries, in bytes. A receipt is published
/// in a batch with others (SNS PublishBatch: 256 KiB for ten entries), so an
/// id from a publisher must not be able to make one receipt, or its batch,
/// too large. A longer id is not echoed: a cut one could match another's.
pub const COMMAND_ID_MAX_BYTES: usize = 256;

/// The `id` field of a Command's JSON, when it is a string or a number of
/// at most [`COMMAND_ID_MAX_BYTES`] bytes.
pub(crate) fn command_id(json: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: Option<Value>,
    }
    let id = match serde_json::from_str::<WithId>(json).ok()?.id? {
        Value::String(id) => id,
        Value::Number(id) => id.to_string(),
        _ => return None,
    };
    (id.len() <= COMMAND_ID_MAX_BYTES).then_some(id)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_receipt_names_the_outcome_both_message_ids_and_the_commands_own_id() {
        let receipt = DeliveryReceipt {
            outcome: Outcome::Delivered,
            client_id: Some(ClientId::parse("alice").unwrap()),
            message_id: "sqs-1".into(),
            sns_message_id: Some("sns-1".into()),
            command_id: Some("cmd-9".into()),
            connections: Some(2),
            at: UNIX_EPOCH + Duration::from_millis(1_714_611_246_655),
        };
        let body: Value = serde_json::from_str(&receipt.body()).unwrap();
        assert_eq!(
            body,
            json!({"outcome": "delivered", "client_id": "alice", "message_id": "sqs-1",
                   "sns_message_id": "sns-1", "command_id": "cmd-9",
                   "at": "2024-05-02T00:54:06.655Z", "connections": 2})
        );
        let malformed = DeliveryReceipt {
            outcome: Outcome::Malformed,
            client_id: None,
            sns_message_id: None,
            command_id: None,
            connections: None,
            ..receipt
        };
        let body: Value = serde_json::from_str(&malformed.body()).unwrap();
        assert_eq!(body["outcome"], "malformed");
        assert_eq!(body["client_id"], Value::Null);
        assert!(body.get("connections").is_none(), "{body}");
    }

    #[test]
    fn the_commands_id_is_read_when_it_is_a_string_or_a_number() {
        assert_eq!(
            command_id(r#"{"id":"a-1","command":"x"}"#),
            Some("a-1".into())
        );
        assert_eq!(command_id(r#"{"id":42}"#), Some("42".into()));
        assert_eq!(command_id(r#"{"id":{"nested":1}}"#), None);
        assert_eq!(command_id(r#"{"command":"x"}"#), None);
        assert_eq!(command_id("not json"), None);
    }

    #[test]
    fn a_skipping_sink_passes_on_every_other_outcome() {
        #[derive(Default)]
        struct Kept(std::sync::Mutex<Vec<Outcome>>);
        impl ReceiptSink for Kept {
            fn record(&self, receipt: DeliveryReceipt) {
                self.0.lock().unwrap().push(receipt.outcome);
            }
        }
        let kept = std::sync::Arc::new(Kept::default());
        let sink = SkipOutcome::new(kept.clone(), Outcome::Undeliverable);
        assert!(!sink.wants(Outcome::Undeliverable));
        assert!(sink.wants(Outcome::Delivered));
        for outcome in [
            Outcome::Delivered,
            Outcome::Undeliverable,
            Outcome::Acknowledged,
        ] {
            sink.record(DeliveryReceipt {
                outcome,
                client_id: None,
                message_id: "m".into(),
                sns_message_id: None,
                command_id: None,
                connections: None,
                at: UNIX_EPOCH,
            });
        }
        assert_eq!(
            *kept.0.lock().unwrap(),
            [Outcome::Delivered, Outcome::Acknowledged]
        );
    }

    #[test]
    fn outcome_names_are_the_documented_ones() {
        let names: Vec<_> = [
            Outcome::Delivered,
            Outcome::Acknowledged,
            Outcome::Undeliverable,
            Outcome::Malformed,
            Outcome::DeadLettered,
        ]
        .iter()
        .map(|o| o.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "delivered",
                "acknowledged",
                "undeliverable",
                "malformed",
                "dead_lettered"
            ]
        );
    }

    #[test]
    fn an_id_longer_than_the_limit_is_not_echoed_and_keeps_the_receipt_small() {
        let at_limit = "i".repeat(COMMAND_ID_MAX_BYTES);
        let json = format!(r#"{{"client_id":"a","command":"x","id":"{at_limit}"}}"#);
        assert_eq!(command_id(&json), Some(at_limit));

        let huge = "i".repeat(1024 * 1024);
        let json = format!(r#"{{"client_id":"a","command":"x","id":"{huge}"}}"#);
        assert_eq!(command_id(&json), None);
        let receipt = DeliveryReceipt {
            outcome: Outcome::Delivered,
            client_id: Some(ClientId::parse("a").unwrap()),
            message_id: "m".into(),
            sns_message_id: None,
            command_id: command_id(&json),
            connections: Some(1),
            at: std::time::UNIX_EPOCH,
        };
        assert!(receipt.body().len() < 512, "{}", receipt.body().len());
    }
}
