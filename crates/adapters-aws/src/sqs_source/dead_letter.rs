//! Sending given-up messages to the dead-letter queue (SPEC §3): the body
//! byte for byte, its message attributes, and `wsbridge_reason` /
//! `wsbridge_detail`; on a FIFO dead-letter queue the message group and a
//! deduplication id derived from the original message id.

use aws_sdk_sqs::primitives::Blob;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use domain::{AttributeValue, DeadLetter, MessageAttribute, DETAIL_ATTRIBUTE, REASON_ATTRIBUTE};
use tracing::warn;

/// SQS's limit on message attributes per message.
const MAX_ATTRIBUTES: usize = 10;
/// SQS's longest MessageDeduplicationId.
const MAX_DEDUP_ID: usize = 128;

/// The entry that sends `letter` to the dead-letter queue, with entry id `id`.
pub(super) fn entry(
    id: &str,
    letter: &DeadLetter,
    fifo: bool,
) -> Result<SendMessageBatchRequestEntry, String> {
    let message = &letter.message;
    let ours = [
        MessageAttribute::string(REASON_ATTRIBUTE, letter.reason.as_str()),
        MessageAttribute::string(DETAIL_ATTRIBUTE, non_empty(&letter.detail)),
    ];
    // Ours first: SQS takes ten attributes at most, and the reason is what
    // whoever reads the dead-letter queue needs above all.
    let theirs = message
        .attributes
        .iter()
        .filter(|a| a.name != REASON_ATTRIBUTE && a.name != DETAIL_ATTRIBUTE);
    let mut builder = SendMessageBatchRequestEntry::builder()
        .id(id)
        .message_body(&message.body);
    let mut kept = 0;
    for attribute in ours.iter().chain(theirs) {
        if kept == MAX_ATTRIBUTES {
            warn!(
                message_id = %message.message_id,
                dropped = %attribute.name,
                "dead-lettered message keeps only {MAX_ATTRIBUTES} attributes"
            );
            continue;
        }
        builder = builder.message_attributes(&attribute.name, value(attribute)?);
        kept += 1;
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

    #[test]
    fn a_standard_queue_gets_no_fifo_fields() {
        let entry = entry("3", &letter(1), false).unwrap();
        assert_eq!(entry.message_attributes().unwrap().len(), 3);
        assert_eq!(entry.message_group_id(), None);
        assert_eq!(entry.message_deduplication_id(), None);
    }
}
