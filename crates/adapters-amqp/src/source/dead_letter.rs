//! Giving messages up (docs/delivery.md, Given up): a copy of each, body byte for byte with
//! the original's properties and headers, plus the headers
//! `wsbridge_reason` and `wsbridge_detail`, is published with confirms on
//! the publishing connection ([`super::publisher`]) to the queue's
//! dead-letter exchange; only once the broker has confirmed the copy is the
//! original acknowledged, so a failure in between duplicates a dead
//! letter, never loses one. When no copy can be had (no dead-letter
//! exchange configured or found, the copy refused or returned) the
//! original is rejected without requeue instead: the broker dead-letters
//! it itself, only without the reason. A copy the broker cannot take now
//! (it blocks publishing under a resource alarm, or does not confirm in
//! time) keeps the original, requeued after a pause and given up again
//! later with its reason. All of it runs in the background, off the
//! pollers' path.

use std::collections::HashMap;
use std::sync::Arc;

use domain::{DeadLetter, Receipt, SourceError, DETAIL_ATTRIBUTE, REASON_ATTRIBUTE};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use tracing::warn;

use super::in_flight::Held;
use super::publisher::{Destination, Outgoing};
use super::settle::Settle;
use super::Live;
use super::Shared;
use crate::metrics::op;
use crate::receipt::DeliveryRef;

impl Shared {
    /// Takes the letters' deliveries and gives them up in the background:
    /// the caller (a poller) never waits for the broker.
    pub(super) fn dead_letter(
        self: &Arc<Self>,
        letters: Vec<DeadLetter>,
    ) -> Result<(), SourceError> {
        let mut why: HashMap<Receipt, (&'static str, String)> = HashMap::new();
        let mut receipts = Vec::with_capacity(letters.len());
        for letter in letters {
            let receipt = letter.message.receipt;
            why.insert(receipt.clone(), (letter.reason.as_str(), letter.detail));
            receipts.push(receipt);
        }
        let taken = self.take(receipts);
        let mut failed = taken.refused;
        failed.extend(self.stale(&Settle::Reject, taken.stale));
        if let Some(live) = taken.live.filter(|_| !taken.held.is_empty()) {
            let shared = self.clone();
            self.background(async move {
                shared.give_up(live, taken.held, why).await;
            });
        }
        self.finish(failed)
    }

    /// Copies each delivery with its reason to the dead-letter exchange,
    /// then acknowledges it. A copy refused for good: the original is
    /// rejected (the broker dead-letters it, without the reason). A copy
    /// that cannot be made now (the broker blocks publishing, no confirm
    /// in time): the original is kept and requeued after a pause, to be
    /// given up again, with its reason, once the broker takes copies.
    async fn give_up(
        &self,
        live: Arc<Live>,
        held: Vec<(Receipt, DeliveryRef, Held)>,
        why: HashMap<Receipt, (&'static str, String)>,
    ) {
        let mut copied = Vec::new();
        let mut to_reject = Vec::new();
        let mut to_retry = Vec::new();
        match self.publisher(&live, Destination::DeadLetterExchange).await {
            None => to_reject.extend(held.into_iter().map(|(r, d, _)| (r, d))),
            Some(publisher) => {
                let exchange = self
                    .settings
                    .dead_letter_exchange
                    .clone()
                    .unwrap_or_default();
                let copies = held
                    .iter()
                    .map(|(receipt, _, held)| {
                        let (reason, detail) =
                            why.get(receipt).map_or(("", ""), |(r, d)| (*r, d.as_str()));
                        Outgoing {
                            routing_key: held.routing_key.clone(),
                            body: &held.body,
                            properties: dead_letter_copy(held, reason, detail),
                        }
                    })
                    .collect();
                let what = format!("dead-letter exchange {exchange:?}");
                let outcomes = self
                    .publish_confirmed(
                        &publisher.channel,
                        publisher.blocked,
                        &exchange,
                        copies,
                        &what,
                        op::PUBLISH_DEAD_LETTER,
                    )
                    .await;
                for ((receipt, delivery, held), outcome) in held.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(()) => copied.push((receipt, delivery)),
                        Err(refusal) if refusal.later => {
                            warn!(queue = %self.settings.queue, message_id = %held.message_id, reason = %refusal.text, "dead-letter copy not made now, keeping the message to give it up later");
                            to_retry.push(delivery.tag);
                        }
                        Err(refusal) => {
                            warn!(queue = %self.settings.queue, message_id = %held.message_id, reason = %refusal.text, "dead-letter copy refused, rejecting the message instead");
                            to_reject.push((receipt, delivery));
                        }
                    }
                }
            }
        }
        // The copy is safe on the broker; a failed ack only means the
        // original comes back and is given up again.
        let mut failed = self.settle_on(&live, &Settle::Ack, copied).await;
        failed.extend(self.settle_on(&live, &Settle::Reject, to_reject).await);
        if !failed.is_empty() {
            self.metrics.settle_failed(failed.len());
        }
        if !to_retry.is_empty() {
            self.hold(live, to_retry, self.settings.confirm_timeout);
        }
    }
}

/// The properties of the dead-letter copy of `held`: the original's, with
/// the reason headers, and without an expiration (as the broker's own
/// dead-lettering does, so the copy does not expire again in the
/// dead-letter queue) or a user id.
fn dead_letter_copy(held: &Held, reason: &str, detail: &str) -> BasicProperties {
    let mut headers: FieldTable = held.properties.headers().clone().unwrap_or_default();
    headers.insert(REASON_ATTRIBUTE.into(), text(reason));
    headers.insert(DETAIL_ATTRIBUTE.into(), text(detail));
    let mut properties = BasicProperties::default();
    let original = &held.properties;
    // Every property but two, field by field (lapin cannot unset one): the
    // expiration, and the user id, which the broker checks against the
    // publishing connection's user and would refuse, closing the channel.
    if let Some(v) = original.content_type() {
        properties = properties.with_content_type(v.clone());
    }
    if let Some(v) = original.content_encoding() {
        properties = properties.with_content_encoding(v.clone());
    }
    if let Some(v) = original.delivery_mode() {
        properties = properties.with_delivery_mode(*v);
    }
    if let Some(v) = original.priority() {
        properties = properties.with_priority(*v);
    }
    if let Some(v) = original.correlation_id() {
        properties = properties.with_correlation_id(v.clone());
    }
    if let Some(v) = original.reply_to() {
        properties = properties.with_reply_to(v.clone());
    }
    if let Some(v) = original.message_id() {
        properties = properties.with_message_id(v.clone());
    }
    if let Some(v) = original.timestamp() {
        properties = properties.with_timestamp(*v);
    }
    if let Some(v) = original.kind() {
        properties = properties.with_type(v.clone());
    }
    if let Some(v) = original.app_id() {
        properties = properties.with_app_id(v.clone());
    }
    if let Some(v) = original.cluster_id() {
        properties = properties.with_cluster_id(v.clone());
    }
    properties.with_headers(headers)
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(properties: BasicProperties) -> Held {
        Held {
            message_id: "m-1".to_owned(),
            body: b"not json".to_vec(),
            properties,
            routing_key: "q".into(),
            receive_count: 1,
            received_at_ms: 1_700_000_000_123,
            consumer: 0,
            taken: true,
        }
    }

    #[test]
    fn a_dead_letter_copy_keeps_the_original_adds_the_reason_and_never_expires() {
        let mut headers = FieldTable::default();
        headers.insert("trace".into(), text("t-1"));
        let original = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_expiration("60000".into())
            .with_headers(headers);
        let copy = dead_letter_copy(&held(original), "malformed", "expected value at line 1");
        assert_eq!(copy.message_id().as_ref().map(|v| v.as_str()), Some("m-1"));
        assert_eq!(*copy.timestamp(), Some(1_700_000_000));
        assert_eq!(*copy.delivery_mode(), Some(2));
        assert_eq!(
            copy.content_type().as_ref().map(|v| v.as_str()),
            Some("application/json")
        );
        assert_eq!(*copy.expiration(), None);
        let headers = copy.headers().clone().unwrap();
        let header = |name: &str| match headers.inner().get(name) {
            Some(AMQPValue::LongString(v)) => v.to_string(),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(header("trace"), "t-1");
        assert_eq!(header(REASON_ATTRIBUTE), "malformed");
        assert_eq!(header(DETAIL_ATTRIBUTE), "expected value at line 1");
    }
}
