//! The SNS notification envelope that wraps a message delivered from an SNS
//! topic to an SQS queue with raw message delivery off.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One SNS message attribute as it appears inside the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeAttribute {
    /// `String`, `Number`, `Binary` or `String.Array`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The attribute's value, as SNS renders it.
    #[serde(rename = "Value")]
    pub value: String,
}

/// An SNS `Notification` envelope (the JSON body SNS puts on an SQS queue).
///
/// Only `message` and `message_id` matter to the downlink; the rest is kept so
/// tools such as `wsbridge monitor` can show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnsEnvelope {
    /// Always `Notification` for published messages.
    #[serde(rename = "Type")]
    pub kind: String,
    /// SNS's id of the published message; the de-duplication key.
    #[serde(rename = "MessageId")]
    pub message_id: String,
    /// The topic the message was published to.
    #[serde(rename = "TopicArn", default)]
    pub topic_arn: String,
    /// Optional subject line.
    #[serde(rename = "Subject", default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The published message, byte for byte.
    #[serde(rename = "Message")]
    pub message: String,
    /// When SNS accepted the message (ISO 8601).
    #[serde(rename = "Timestamp", default)]
    pub timestamp: String,
    /// Message attributes set by the publisher.
    #[serde(rename = "MessageAttributes", default)]
    pub message_attributes: BTreeMap<String, EnvelopeAttribute>,
}

impl SnsEnvelope {
    /// The value of a `String` attribute, if the publisher set it.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.message_attributes.get(name).map(|a| a.value.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The example notification from the AWS documentation ("Amazon SNS
    /// message and JSON formats"), with an attribute added.
    pub(crate) const AWS_DOC_EXAMPLE: &str = r#"{
      "Type" : "Notification",
      "MessageId" : "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
      "TopicArn" : "arn:aws:sns:us-west-2:123456789012:MyTopic",
      "Subject" : "My First Message",
      "Message" : "Hello world!",
      "Timestamp" : "2012-05-02T00:54:06.655Z",
      "SignatureVersion" : "1",
      "Signature" : "EXAMPLEw6JRN...",
      "SigningCertURL" : "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
      "UnsubscribeURL" : "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96",
      "MessageAttributes" : {"client_id": {"Type": "String", "Value": "c1"}}
    }"#;

    #[test]
    fn parses_the_aws_documentation_example() {
        let env: SnsEnvelope = serde_json::from_str(AWS_DOC_EXAMPLE).unwrap();
        assert_eq!(env.kind, "Notification");
        assert_eq!(env.message_id, "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324");
        assert_eq!(env.subject.as_deref(), Some("My First Message"));
        assert_eq!(env.message, "Hello world!");
        assert_eq!(env.timestamp, "2012-05-02T00:54:06.655Z");
        assert_eq!(env.attribute("client_id"), Some("c1"));
        assert_eq!(env.attribute("action"), None);
    }
}
