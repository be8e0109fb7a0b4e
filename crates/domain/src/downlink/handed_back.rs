//! Whether a Command was handed back to the fleet by a replica that shut
//! down while its client held it unacknowledged: it carries the
//! [`RELEASED_ATTRIBUTE`] — as an SQS message attribute (raw delivery), or
//! inside the SNS envelope's `MessageAttributes`.
//!
//! Asked for every Command whose client is not here, so the body is parsed
//! only when it contains the attribute's name at all, and then only for the
//! envelope's `Type` and `MessageAttributes`.

use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::ports::{InboundMessage, RELEASED_ATTRIBUTE};

/// The parts of an SNS envelope that say whether it carries the marker.
#[derive(Deserialize)]
struct EnvelopeAttributes {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "MessageAttributes")]
    attributes: Option<HashMap<String, IgnoredAny>>,
}

/// Whether `message` was handed back by a replica at its shutdown.
pub(super) fn handed_back(message: &InboundMessage) -> bool {
    if message
        .attributes
        .iter()
        .any(|attribute| attribute.name == RELEASED_ATTRIBUTE)
    {
        return true;
    }
    if !message.body.contains(RELEASED_ATTRIBUTE) {
        return false;
    }
    serde_json::from_str::<EnvelopeAttributes>(&message.body)
        .ok()
        .filter(|envelope| envelope.kind.as_deref() == Some("Notification"))
        .and_then(|envelope| envelope.attributes)
        .is_some_and(|attributes| attributes.contains_key(RELEASED_ATTRIBUTE))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ports::{AttributeValue, MessageAttribute};

    fn with_body(body: String) -> InboundMessage {
        InboundMessage {
            body,
            ..InboundMessage::default()
        }
    }

    fn envelope(attributes: serde_json::Value, inner: &str) -> String {
        json!({
            "Type": "Notification",
            "MessageId": "m-1",
            "Message": inner,
            "MessageAttributes": attributes,
        })
        .to_string()
    }

    #[test]
    fn the_marker_is_found_as_an_attribute_or_in_the_envelope() {
        let mut raw = with_body(r#"{"client_id":"a"}"#.into());
        assert!(!handed_back(&raw));
        raw.attributes.push(MessageAttribute {
            name: RELEASED_ATTRIBUTE.into(),
            data_type: "String".into(),
            value: AttributeValue::Text("r1".into()),
        });
        assert!(handed_back(&raw));

        let marked = json!({RELEASED_ATTRIBUTE: {"Type": "String", "Value": "r1"}});
        assert!(handed_back(&with_body(envelope(marked, "{}"))));
        let other = json!({"client_id": {"Type": "String", "Value": "a"}});
        assert!(!handed_back(&with_body(envelope(other, "{}"))));
    }

    #[test]
    fn the_name_elsewhere_in_the_body_is_no_marker() {
        // In the Command itself, or in a bare Command that is no envelope.
        let inner = json!({"client_id": "a", RELEASED_ATTRIBUTE: true}).to_string();
        let other = json!({"client_id": {"Type": "String", "Value": "a"}});
        assert!(!handed_back(&with_body(envelope(other, &inner))));
        let bare = json!({
            "client_id": "a",
            "MessageAttributes": {RELEASED_ATTRIBUTE: {"Type": "String", "Value": "r1"}},
        });
        assert!(!handed_back(&with_body(bare.to_string())));
        assert!(!handed_back(&with_body(format!(
            "not json {RELEASED_ATTRIBUTE}"
        ))));
    }
}
