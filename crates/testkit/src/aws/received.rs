//! A message taken off a queue ([`Received`]) and how a test reads it
//! whether it arrived raw or in an SNS envelope.

use std::collections::BTreeMap;

/// A message taken off a queue by [`Aws::receive_all`] or [`Aws::receive_at_least`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// SQS message id.
    pub message_id: String,
    /// The body, byte for byte.
    pub body: String,
    /// SQS message attributes (String and Number values; with raw delivery
    /// these are the SNS message attributes).
    pub attributes: BTreeMap<String, String>,
    /// How many times SQS has handed this message out (`ApproximateReceiveCount`).
    pub receive_count: u32,
}

impl Received {
    /// The body parsed as JSON. Panics if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of {} is not JSON ({e}): {}",
                self.message_id, self.body
            )
        })
    }

    /// True when the body is an SNS notification envelope (raw delivery off).
    pub fn is_sns_envelope(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .is_some_and(|v| v.get("Type").and_then(|t| t.as_str()) == Some("Notification"))
    }

    /// The `Message` of an SNS envelope, or the body itself when it is not one.
    pub fn payload(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .filter(|v| v.get("Type").and_then(|t| t.as_str()) == Some("Notification"))
            .and_then(|v| v.get("Message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| self.body.clone())
    }

    /// The message attributes as published to SNS: from inside the envelope
    /// (`MessageAttributes.<name>.Value`) when the body is one, else the SQS
    /// message attributes (raw delivery).
    pub fn published_attributes(&self) -> BTreeMap<String, String> {
        let envelope = serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .filter(|v| v.get("Type").and_then(|t| t.as_str()) == Some("Notification"));
        let Some(envelope) = envelope else {
            return self.attributes.clone();
        };
        envelope
            .get("MessageAttributes")
            .and_then(|a| a.as_object())
            .map(|attrs| {
                attrs
                    .iter()
                    .filter_map(|(k, v)| {
                        let value = v.get("Value")?.as_str()?;
                        Some((k.clone(), value.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(body: &str) -> Received {
        Received {
            message_id: "m1".into(),
            body: body.into(),
            attributes: BTreeMap::from([("sqs_attr".to_owned(), "x".to_owned())]),
            receive_count: 1,
        }
    }

    #[test]
    fn envelope_payload_and_attributes() {
        let envelope = serde_json::json!({
            "Type": "Notification",
            "MessageId": "abc",
            "Message": "{\"command\":\"go\"}",
            "MessageAttributes": {"client_id": {"Type": "String", "Value": "c1"}},
        })
        .to_string();
        let r = received(&envelope);
        assert!(r.is_sns_envelope());
        assert_eq!(r.payload(), "{\"command\":\"go\"}");
        assert_eq!(
            r.published_attributes(),
            BTreeMap::from([("client_id".to_owned(), "c1".to_owned())])
        );
    }

    #[test]
    fn raw_payload_and_attributes() {
        let r = received("{\"command\":\"go\"}");
        assert!(!r.is_sns_envelope());
        assert_eq!(r.payload(), r.body);
        assert_eq!(r.published_attributes(), r.attributes);
        assert_eq!(r.json()["command"], "go");
        let not_json = received("plain text");
        assert!(!not_json.is_sns_envelope());
        assert_eq!(not_json.payload(), "plain text");
    }
}
