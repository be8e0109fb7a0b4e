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
    let sent_at = attr(MessageSystemAttributeName::SentTimestamp)
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let receive_count = attr(MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let group_id = attr(MessageSystemAttributeName::MessageGroupId).cloned();
    let attributes = message
        .message_attributes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| attribute(name, value))
        .collect();
    let message_id = message.message_id.unwrap_or_default();
    let Some(receipt) = message.receipt_handle else {
        warn!(%message_id, "SQS message without a receipt handle, skipped");
        return None;
    };
    Some(InboundMessage {
        message_id,
        body: message.body.unwrap_or_default(),
        receipt: Receipt::new(receipt),
        sent_at,
        receive_count,
        attributes,
        group_id,
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
    let sent_at = system
        .get("SentTimestamp")
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    let receive_count = system
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let group_id = system.get("MessageGroupId").cloned();
    let message_id = message.message_id.unwrap_or_default();
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
    let Some(receipt) = message.receipt_handle else {
        warn!(%message_id, "SQS message without a receipt handle, skipped");
        return None;
    };
    Some(InboundMessage {
        message_id,
        body: message.body.unwrap_or_default(),
        receipt: Receipt::new(receipt),
        sent_at,
        receive_count,
        attributes,
        group_id,
    })
}
