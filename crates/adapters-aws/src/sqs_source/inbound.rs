//! Received messages, from either client's answer, as the domain's
//! [`InboundMessage`].

use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_sqs::types::{Message, MessageAttributeValue, MessageSystemAttributeName};
use domain::{AttributeValue, InboundMessage, MessageAttribute, Receipt};
use tracing::warn;

use crate::sqs_http::WireMessage;

/// The system attributes a receive asks for.
pub(super) const SYSTEM_ATTRIBUTES: [&str; 3] =
    ["SentTimestamp", "ApproximateReceiveCount", "MessageGroupId"];

/// A message of the SDK's answer.
pub(super) fn inbound(message: Message) -> Option<InboundMessage> {
    let system = message.attributes.as_ref();
    let attr = |name: MessageSystemAttributeName| system.and_then(|a| a.get(&name));
    let attributes = message
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| attribute(name, value))
        .collect();
    assemble(Parts {
        message_id: message.message_id,
        receipt: message.receipt_handle,
        body: message.body,
        sent_ms: attr(MessageSystemAttributeName::SentTimestamp).map(String::as_str),
        receive_count: attr(MessageSystemAttributeName::ApproximateReceiveCount)
            .map(String::as_str),
        group_id: attr(MessageSystemAttributeName::MessageGroupId).cloned(),
        attributes,
    })
}

fn attribute(name: String, value: MessageAttributeValue) -> Option<MessageAttribute> {
    let value_of = match (value.string_value, value.binary_value) {
        (Some(text), _) => AttributeValue::Text(text),
        (None, Some(blob)) => AttributeValue::Binary(blob.into_inner()),
        (None, None) => return None,
    };
    Some(MessageAttribute {
        name,
        data_type: value.data_type,
        value: value_of,
    })
}

/// A message of the lean client's answer.
pub(super) fn from_wire(message: WireMessage) -> Option<InboundMessage> {
    let system = &message.attributes;
    let message_id = message.message_id.clone().unwrap_or_default();
    let attributes = message
        .message_attributes
        .into_iter()
        .filter_map(|(name, value)| {
            let value_of = match (value.string_value, value.binary_value) {
                (Some(text), _) => AttributeValue::Text(text),
                (None, Some(encoded)) => match aws_smithy_types::base64::decode(&encoded) {
                    Ok(bytes) => AttributeValue::Binary(bytes),
                    Err(_) => {
                        warn!(%message_id, attribute = %name, "binary attribute that is not base64, skipped");
                        return None;
                    }
                },
                (None, None) => return None,
            };
            Some(MessageAttribute {
                name,
                data_type: value.data_type,
                value: value_of,
            })
        })
        .collect();
    assemble(Parts {
        message_id: message.message_id,
        receipt: message.receipt_handle,
        body: message.body,
        sent_ms: system.get("SentTimestamp").map(String::as_str),
        receive_count: system.get("ApproximateReceiveCount").map(String::as_str),
        group_id: system.get("MessageGroupId").cloned(),
        attributes,
    })
}

/// What either client's answer says of one message.
struct Parts<'a> {
    message_id: Option<String>,
    receipt: Option<String>,
    body: Option<String>,
    sent_ms: Option<&'a str>,
    receive_count: Option<&'a str>,
    group_id: Option<String>,
    attributes: Vec<MessageAttribute>,
}

/// The domain's message; `None` (logged) without a receipt handle.
fn assemble(parts: Parts<'_>) -> Option<InboundMessage> {
    let message_id = parts.message_id.unwrap_or_default();
    let Some(receipt) = parts.receipt else {
        warn!(%message_id, "SQS message without a receipt handle, skipped");
        return None;
    };
    Some(InboundMessage {
        message_id,
        body: parts.body.unwrap_or_default(),
        receipt: Receipt::new(receipt),
        sent_at: parts
            .sent_ms
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        receive_count: parts
            .receive_count
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        attributes: parts.attributes,
        group_id: parts.group_id,
    })
}
