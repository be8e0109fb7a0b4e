//! Sending given-up messages to the dead-letter queue (docs/delivery.md, Given up): the body
//! byte for byte, its message attributes, and `wsbridge_reason` /
//! `wsbridge_detail`; on a FIFO dead-letter queue the message group and a
//! deduplication id derived from the original message id.
//!
//! SendMessageBatch refuses a whole call whose payload (every entry's body
//! plus its attribute names, types and values) passes [`MAX_BATCH_BYTES`],
//! so letters go out in batches bounded by size as well as by count. One
//! letter alone can pass it too: the source message was within the limit,
//! but the bridge adds `wsbridge_reason` and `wsbridge_detail`. Such a
//! letter loses first its detail's tail, then its own attributes, last
//! first (each dropped one logged); the body and the reason are always
//! kept. A letter whose body and reason still pass the limit (a queue that
//! takes messages above 256 KiB) goes out alone, judged by the queue's own
//! limit; if SQS refuses it, it stays in the source and is given up again
//! (or redriven by SQS after `maxReceiveCount`).

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use domain::{AttributeValue, DeadLetter, MessageAttribute, DETAIL_ATTRIBUTE, REASON_ATTRIBUTE};
use tracing::warn;

use super::BATCH_LIMIT;

/// SQS's limit on message attributes per message.
const MAX_ATTRIBUTES: usize = 10;
/// SQS's longest MessageDeduplicationId.
const MAX_DEDUP_ID: usize = 128;
/// The largest SendMessageBatch payload sent: the sum of the entries' bodies
/// and attribute names, types and values, as SQS counts it. 256 KiB is the
/// limit of every SQS queue (those that take 1 MiB messages take 1 MiB
/// batches), so a batch within it is never refused for its size.
pub(super) const MAX_BATCH_BYTES: usize = 262_144;

/// `letters` split, in order, into the batches of at most [`BATCH_LIMIT`]
/// letters and [`MAX_BATCH_BYTES`] bytes that SendMessageBatch accepts
/// (a letter larger on its own goes alone).
pub(super) fn batches(letters: &[DeadLetter]) -> Vec<&[DeadLetter]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (at, letter) in letters.iter().enumerate() {
        let size = payload_size(&letter.message.body, &attributes(letter));
        let full = at - start == BATCH_LIMIT || bytes.saturating_add(size) > MAX_BATCH_BYTES;
        if at > start && full {
            batches.push(&letters[start..at]);
            (start, bytes) = (at, 0);
        }
        bytes = bytes.saturating_add(size);
    }
    if start < letters.len() {
        batches.push(&letters[start..]);
    }
    batches
}

/// The entry that sends `letter` to the dead-letter queue, with entry id `id`.
pub(super) fn entry(
    id: &str,
    letter: &DeadLetter,
    fifo: bool,
) -> Result<SendMessageBatchRequestEntry, String> {
    let message = &letter.message;
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(id)
        .message_body(&message.body);
    for attribute in attributes(letter) {
        builder = builder.message_attributes(&attribute.name, value(&attribute)?);
    }
    if fifo {
        let group = message
            .group_id
            .as_deref()
            .unwrap_or("wsbridge-dead-letters");
        builder = builder
            .message_group_id(group)
            .message_deduplication_id(dedup_id(&message.message_id));
    }
    builder.build().map_err(|e| e.to_string())
}

/// The attributes `letter` is sent with: ours first (SQS takes ten at most,
/// and the reason is what whoever reads the dead-letter queue needs above
/// all), then the message's own, cut until the entry fits in a batch.
fn attributes(letter: &DeadLetter) -> Vec<MessageAttribute> {
    let message = &letter.message;
    let ours = [
        MessageAttribute::string(REASON_ATTRIBUTE, letter.reason.as_str()),
        MessageAttribute::string(DETAIL_ATTRIBUTE, non_empty(&letter.detail)),
    ];
    let theirs = message
        .attributes
        .iter()
        .filter(|a| a.name != REASON_ATTRIBUTE && a.name != DETAIL_ATTRIBUTE)
        .cloned();
    let mut kept: Vec<_> = ours.into_iter().chain(theirs).collect();
    for dropped in kept.drain(MAX_ATTRIBUTES.min(kept.len())..) {
        warn!(
            message_id = %message.message_id,
            dropped = %dropped.name,
            "dead-lettered message keeps only {MAX_ATTRIBUTES} attributes"
        );
    }
    fit(&message.body, &message.message_id, kept)
}

/// `attributes` cut until body and attributes fit in [`MAX_BATCH_BYTES`]:
/// the detail's tail first, then the message's own attributes, last first.
/// The reason (the first) is never cut.
fn fit(
    body: &str,
    message_id: &str,
    mut attributes: Vec<MessageAttribute>,
) -> Vec<MessageAttribute> {
    let excess = |attributes: &[MessageAttribute]| {
        payload_size(body, attributes).saturating_sub(MAX_BATCH_BYTES)
    };
    let over = excess(&attributes);
    if over == 0 {
        return attributes;
    }
    if let Some(AttributeValue::Text(detail)) = attributes.get_mut(1).map(|a| &mut a.value) {
        let keep = floor_char_boundary(detail, detail.len().saturating_sub(over));
        detail.truncate(keep);
        if detail.is_empty() {
            detail.push('-');
        }
    }
    while excess(&attributes) > 0 && attributes.len() > 2 {
        if let Some(dropped) = attributes.pop() {
            warn!(
                %message_id,
                dropped = %dropped.name,
                "dead-lettered message too large for SQS with all its attributes"
            );
        }
    }
    attributes
}

/// What SQS counts of a message towards its size limits: the body and each
/// attribute's name, type and value.
fn payload_size(body: &str, attributes: &[MessageAttribute]) -> usize {
    attributes.iter().fold(body.len(), |total, a| {
        let value = match &a.value {
            AttributeValue::Text(text) => text.len(),
            AttributeValue::Binary(bytes) => bytes.len(),
        };
        total
            .saturating_add(a.name.len())
            .saturating_add(a.data_type.len())
            .saturating_add(value)
    })
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

fn value(attribute: &MessageAttribute) -> Result<MessageAttributeValue, String> {
    let builder = MessageAttributeValue::builder().data_type(&attribute.data_type);
    let builder = match &attribute.value {
        AttributeValue::Text(text) => builder.string_value(text),
        AttributeValue::Binary(bytes) => builder.binary_value(Blob::new(bytes.clone())),
    };
    builder.build().map_err(|e| e.to_string())
}

/// SQS refuses an empty attribute value.
fn non_empty(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

/// A deduplication id derived from the original message id: the same
/// message given up twice (a retried send) is stored once.
fn dedup_id(message_id: &str) -> String {
    let id: String = format!("wsbridge-dlq-{message_id}")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~".contains(*c))
        .take(MAX_DEDUP_ID)
        .collect();
    id
}

#[cfg(test)]
mod tests {
    use domain::{GiveUpReason, InboundMessage};

    use super::*;

    fn letter(attributes: usize) -> DeadLetter {
        let message = InboundMessage {
            message_id: "m-1".into(),
            body: "{not json".into(),
            group_id: Some("g".into()),
            attributes: (0..attributes)
                .map(|n| MessageAttribute::string(format!("a{n}"), "v"))
                .collect(),
            ..InboundMessage::default()
        };
        DeadLetter::new(message, GiveUpReason::Malformed, "expected value")
    }

    #[test]
    fn the_entry_keeps_the_body_and_adds_the_reason_first() {
        let entry = entry("0", &letter(12), true).unwrap();
        assert_eq!(entry.message_body(), "{not json");
        let attrs = entry.message_attributes().unwrap();
        assert_eq!(attrs.len(), MAX_ATTRIBUTES);
        assert_eq!(attrs[REASON_ATTRIBUTE].string_value(), Some("malformed"));
        assert_eq!(
            attrs[DETAIL_ATTRIBUTE].string_value(),
            Some("expected value")
        );
        assert_eq!(entry.message_group_id(), Some("g"));
        assert_eq!(entry.message_deduplication_id(), Some("wsbridge-dlq-m-1"));
    }

    /// A letter with a body of `body_bytes` and `own` attributes of
    /// `value_bytes` each.
    fn sized(body_bytes: usize, own: usize, value_bytes: usize) -> DeadLetter {
        let message = InboundMessage {
            message_id: "m-big".into(),
            body: "b".repeat(body_bytes),
            attributes: (0..own)
                .map(|n| MessageAttribute::string(format!("a{n}"), "v".repeat(value_bytes)))
                .collect(),
            ..InboundMessage::default()
        };
        DeadLetter::new(message, GiveUpReason::Malformed, &"d".repeat(300))
    }

    /// The payload of an entry as SQS counts it, read from the entry sent.
    fn entry_bytes(entry: &SendMessageBatchRequestEntry) -> usize {
        let attributes = entry.message_attributes().cloned().unwrap_or_default();
        entry.message_body().len()
            + attributes
                .iter()
                .map(|(name, v)| {
                    name.len()
                        + v.data_type().len()
                        + v.string_value().map_or(0, str::len)
                        + v.binary_value().map_or(0, |b| b.as_ref().len())
                })
                .sum::<usize>()
    }

    fn batch_bytes(batch: &[DeadLetter]) -> usize {
        batch
            .iter()
            .map(|l| entry_bytes(&entry("0", l, false).unwrap()))
            .sum()
    }

    #[test]
    fn batches_are_bounded_by_count_and_by_payload() {
        assert!(batches(&[]).is_empty());
        let small: Vec<_> = (0..25).map(|_| letter(2)).collect();
        let sizes: Vec<_> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);

        // Ten 100 KiB letters: two per call (three would pass 256 KiB).
        let large: Vec<_> = (0..10).map(|_| sized(100 * 1024, 1, 10)).collect();
        let split = batches(&large);
        assert_eq!(split.iter().map(|b| b.len()).collect::<Vec<_>>(), [2; 5]);
        for batch in &split {
            assert!(
                batch_bytes(batch) <= MAX_BATCH_BYTES,
                "{}",
                batch_bytes(batch)
            );
        }
        // In order, none lost.
        let rejoined: Vec<_> = split.concat();
        assert_eq!(rejoined, large);
    }

    #[test]
    fn a_letter_too_large_with_its_attributes_loses_detail_then_its_own_attributes() {
        // 256 KiB with its own attributes at the source; over it with ours.
        let body = MAX_BATCH_BYTES - 3 * (2 + 6 + 40);
        let crowded = sized(body, 3, 40);
        let sent = entry("0", &crowded, false).unwrap();
        assert!(
            entry_bytes(&sent) <= MAX_BATCH_BYTES,
            "{}",
            entry_bytes(&sent)
        );
        assert_eq!(sent.message_body(), crowded.message.body);
        let attrs = sent.message_attributes().unwrap();
        assert_eq!(attrs[REASON_ATTRIBUTE].string_value(), Some("malformed"));
        assert!(attrs.contains_key(DETAIL_ATTRIBUTE));
        assert!(attrs.contains_key("a0"), "the first attributes are kept");
        assert!(!attrs.contains_key("a2"), "the last is dropped first");

        // Just over by a few bytes: only the detail's tail goes.
        let just_over = sized(MAX_BATCH_BYTES - 300, 0, 0);
        let sent = entry("0", &just_over, false).unwrap();
        assert_eq!(entry_bytes(&sent), MAX_BATCH_BYTES);
        let detail = sent.message_attributes().unwrap()[DETAIL_ATTRIBUTE].string_value();
        assert!(
            detail.is_some_and(|d| !d.is_empty() && d.len() < 256),
            "{detail:?}"
        );

        // A body the limit cannot hold with a reason goes alone, whole.
        let huge = [letter(1), sized(MAX_BATCH_BYTES, 2, 5), letter(1)];
        let split = batches(&huge);
        assert_eq!(split.iter().map(|b| b.len()).collect::<Vec<_>>(), [1, 1, 1]);
        let sent = entry("0", &huge[1], false).unwrap();
        assert_eq!(sent.message_body().len(), MAX_BATCH_BYTES);
        let attrs = sent.message_attributes().unwrap();
        assert_eq!(attrs.len(), 2, "{attrs:?}");
        assert_eq!(attrs[DETAIL_ATTRIBUTE].string_value(), Some("-"));
    }

    #[test]
    fn a_standard_queue_gets_no_fifo_fields() {
        let entry = entry("3", &letter(1), false).unwrap();
        assert_eq!(entry.message_attributes().unwrap().len(), 3);
        assert_eq!(entry.message_group_id(), None);
        assert_eq!(entry.message_deduplication_id(), None);
    }
}
