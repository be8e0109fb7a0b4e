//! The SNS notification envelope that wraps a message delivered from an SNS
//! topic to an SQS queue with raw message delivery off.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Reads an SNS `Timestamp` (RFC 3339, e.g. `2012-05-02T00:54:06.655Z`, or
/// with a `±HH:MM` offset); `None` when it is not one.
pub fn parse_timestamp(text: &str) -> Option<SystemTime> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    if bytes.len() < 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !matches!(bytes[10], b'T' | b't' | b' ')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let end = fraction
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(fraction.len());
        if end == 0 {
            return None;
        }
        let digits = &fraction[..end.min(9)];
        nanos = digits.parse::<u32>().ok()? * 10u32.pow(9 - digits.len() as u32);
        rest = &fraction[end..];
    }
    let offset_secs = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            sign * (number(text.len() - 5..text.len() - 3)? * 3600
                + number(text.len() - 2..text.len())? * 60)
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn sns_timestamps_are_read() {
        let at =
            |s: &str| parse_timestamp(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap_or_default());
        // date -u -d 2012-05-02T00:54:06Z +%s
        assert_eq!(
            at("2012-05-02T00:54:06.655Z"),
            Some(Duration::new(1_335_920_046, 655_000_000))
        );
        assert_eq!(at("1970-01-01T00:00:00Z"), Some(Duration::ZERO));
        assert_eq!(
            at("2000-02-29T12:00:00Z"),
            Some(Duration::from_secs(951_825_600))
        );
        assert_eq!(
            at("2012-05-02T02:54:06.655+02:00"),
            Some(Duration::new(1_335_920_046, 655_000_000))
        );
        assert_eq!(
            at("2024-01-01T00:00:00.123456789123Z"),
            Some(Duration::new(1_704_067_200, 123_456_789))
        );
        for bad in [
            "",
            "2012-05-02",
            "2012-05-02T00:54:06",
            "2012-13-02T00:54:06Z",
            "2012-05-02T24:54:06Z",
            "2012-05-02T00:54:06.Z",
            "2012-05-02T00:54:06+0200",
            "1969-12-31T23:59:59Z",
            "x012-05-02T00:54:06Z",
            "2012-05-02T00:54:06Zjunk",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }

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
