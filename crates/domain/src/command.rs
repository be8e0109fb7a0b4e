//! The Command (backend → client) and the decoding of an SQS message body
//! into one.
//!
//! A body is either an SNS notification envelope whose `Message` holds the
//! Command JSON, or the bare Command JSON. A Command may carry any field, so
//! it may carry `Type` or `Message` too: a body is read as an envelope only
//! when it has what every SNS notification has (`Type` `Notification`, a
//! string `MessageId`, a `TopicArn`, a string `Message`) and none of
//! a Command's own fields (`command`, or a target). Decoding reads the body once,
//! validates only what routing needs (`client_id`, `command`), and keeps the
//! Command's JSON text exactly as the backend wrote it, so the client gets
//! every field — known or not — without a re-serialization.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::client_id::{ClientId, ClientIdError};

/// A Command as a typed value; fields the bridge does not know are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The client the Command is for.
    pub client_id: ClientId,
    /// The Command's name.
    pub command: String,
    /// The Command's payload; `Some(Value::Null)` for an explicit `"data": null`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub data: Option<Value>,
    /// Every other field, forwarded unchanged.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A field that is present, whatever its value (`null` included): absent
/// fields are `None` through `#[serde(default)]`, so `"data": null` survives
/// a round trip instead of vanishing.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// A Command decoded from an SQS body, ready to be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedCommand {
    /// Where the Command goes.
    pub client_id: ClientId,
    /// The Command JSON object exactly as published: the text frame to send.
    pub json: Arc<str>,
    /// The SNS `MessageId` when the body was an envelope.
    pub sns_message_id: Option<String>,
    /// The SNS `Timestamp` when the body was an envelope.
    pub sns_timestamp: Option<String>,
}

/// Every way an SQS body can fail to be a Command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON at all.
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// The body is JSON but not an object.
    #[error("body is JSON but not an object")]
    NotAnObject,
    /// An SNS envelope of a type other than `Notification`.
    #[error("SNS envelope of type {0:?} carries no Command")]
    UnsupportedEnvelopeType(String),
    /// A `Notification` without a Command field of its own that lacks what
    /// every SNS notification has (a string `MessageId` and `TopicArn`):
    /// neither a Command nor an envelope.
    #[error("body is neither a Command (no command, no client_id) nor an SNS envelope (no MessageId or TopicArn)")]
    NotAnEnvelope,
    /// An SNS `Notification` without a `Message`.
    #[error("SNS envelope has no Message")]
    EnvelopeWithoutMessage,
    /// The envelope's `Message` is not a string.
    #[error("SNS envelope Message is not a string")]
    EnvelopeMessageNotString,
    /// The envelope's `Message` is not JSON.
    #[error("SNS envelope Message is not valid JSON: {0}")]
    MessageNotJson(String),
    /// The envelope's `Message` is JSON but not an object.
    #[error("SNS envelope Message is JSON but not an object")]
    MessageNotAnObject,
    /// The Command has no `client_id`.
    #[error("Command has no client_id")]
    MissingClientId,
    /// The Command's `client_id` is not a string.
    #[error("Command client_id is not a string")]
    ClientIdNotString,
    /// The Command's `client_id` is a string but not a valid id.
    #[error("Command client_id is invalid: {0}")]
    InvalidClientId(ClientIdError),
    /// The Command has no `command`.
    #[error("Command has no command field")]
    MissingCommand,
    /// The Command's `command` is not a string.
    #[error("Command command field is not a string")]
    CommandNotString,
}

impl DecodeError {
    /// A short, stable name for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::NotAnObject => "not_an_object",
            Self::UnsupportedEnvelopeType(_) => "unsupported_envelope_type",
            Self::NotAnEnvelope => "not_an_envelope",
            Self::EnvelopeWithoutMessage => "envelope_without_message",
            Self::EnvelopeMessageNotString => "envelope_message_not_string",
            Self::MessageNotJson(_) => "message_not_json",
            Self::MessageNotAnObject => "message_not_an_object",
            Self::MissingClientId => "missing_client_id",
            Self::ClientIdNotString => "client_id_not_string",
            Self::InvalidClientId(_) => "invalid_client_id",
            Self::MissingCommand => "missing_command",
            Self::CommandNotString => "command_not_string",
        }
    }
}

/// The fields of a body that decide how it is read; everything else is
/// skipped by the parser without being materialised.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "Type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "Message", borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(rename = "MessageId", default)]
    message_id: Option<Value>,
    #[serde(rename = "Timestamp", default)]
    timestamp: Option<Value>,
    #[serde(rename = "TopicArn", borrow, default)]
    topic_arn: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    client_id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    command: Option<&'a RawValue>,
    // The other targets a Command may name (a list, a group, everyone): present, they make
    // the body a Command whatever else it carries.
    #[serde(borrow, default, deserialize_with = "present_raw")]
    client_ids: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    group: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present_raw")]
    broadcast: Option<&'a RawValue>,
}

/// [`present`] for a probe: `"client_id": null` is still a field only a
/// Command has, though it names no client.
fn present_raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as Deserialize>::deserialize(d).map(Some)
}

impl Probe<'_> {
    /// Whether the body has a field only a Command has. No SNS envelope
    /// carries one at its top level (its attributes are under
    /// `MessageAttributes`), so such a body is a Command.
    fn has_command_field(&self) -> bool {
        self.command.is_some()
            || self.client_id.is_some()
            || self.client_ids.is_some()
            || self.group.is_some()
            || self.broadcast.is_some()
    }
}

const NOTIFICATION: &str = "Notification";

/// Decodes an SQS message body (SNS envelope or bare Command).
pub fn decode_sqs_body(body: &str) -> Result<DecodedCommand, DecodeError> {
    let probe = probe_object(body, DecodeError::NotJson, DecodeError::NotAnObject)?;
    let kind = probe.kind.and_then(as_text);
    match kind.as_deref() {
        // A Command may carry fields named `Type` and `Message` of its own;
        // its `command` or target says it is one.
        Some(NOTIFICATION) if !probe.has_command_field() => decode_envelope(probe),
        Some(other) if !probe.has_command_field() => {
            Err(DecodeError::UnsupportedEnvelopeType(other.to_owned()))
        }
        _ => {
            let client_id = validate_command(&probe)?;
            Ok(DecodedCommand {
                client_id,
                json: Arc::from(body),
                sns_message_id: None,
                sns_timestamp: None,
            })
        }
    }
}

fn decode_envelope(envelope: Probe<'_>) -> Result<DecodedCommand, DecodeError> {
    let raw = envelope
        .message
        .ok_or(DecodeError::EnvelopeWithoutMessage)?;
    let message = as_string(raw).ok_or(DecodeError::EnvelopeMessageNotString)?;
    let message_id_is_text = matches!(envelope.message_id, Some(Value::String(_)));
    let has_topic = envelope
        .topic_arn
        .and_then(as_text)
        // Any name: `wsbridge send-command` on RabbitMQ writes its own.
        .is_some_and(|arn| !arn.is_empty());
    if !message_id_is_text || !has_topic {
        return Err(DecodeError::NotAnEnvelope);
    }
    let inner = probe_object(
        &message,
        DecodeError::MessageNotJson,
        DecodeError::MessageNotAnObject,
    )?;
    let client_id = validate_command(&inner)?;
    let text_of = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(DecodedCommand {
        client_id,
        json: Arc::from(message),
        sns_message_id: text_of(envelope.message_id),
        sns_timestamp: text_of(envelope.timestamp),
    })
}

fn probe_object(
    text: &str,
    not_json: fn(String) -> DecodeError,
    not_object: DecodeError,
) -> Result<Probe<'_>, DecodeError> {
    // serde would also read a struct from a JSON array; only objects are Commands.
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        _ => {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => not_object,
                Err(e) => not_json(e.to_string()),
            })
        }
    }
    serde_json::from_str(text).map_err(|e| not_json(e.to_string()))
}

fn validate_command(probe: &Probe<'_>) -> Result<ClientId, DecodeError> {
    let raw = non_null(probe.client_id).ok_or(DecodeError::MissingClientId)?;
    let id = as_string(raw).ok_or(DecodeError::ClientIdNotString)?;
    let client_id = ClientId::parse(id).map_err(DecodeError::InvalidClientId)?;
    let command = non_null(probe.command).ok_or(DecodeError::MissingCommand)?;
    as_text(command).ok_or(DecodeError::CommandNotString)?;
    Ok(client_id)
}

/// A `null` field says as much as an absent one.
fn non_null(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|raw| raw.get() != "null")
}

fn as_string(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<String>(raw.get()).ok()
}

/// A JSON string's text, borrowed when it has no escapes (the common case:
/// no allocation), decoded otherwise; `None` when `raw` is not a string.
fn as_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        // A valid JSON string without a backslash is its own text.
        Some(inner) if !inner.contains('\\') => Some(Cow::Borrowed(inner)),
        _ => as_string(raw).map(Cow::Owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope_around(message: &str) -> String {
        json!({
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:commands",
            "Message": message,
            "Timestamp": "2026-01-01T00:00:00.000Z",
            "SignatureVersion": "1",
            "MessageAttributes": {"x": {"Type": "String", "Value": "y"}}
        })
        .to_string()
    }

    #[test]
    fn envelope_yields_the_inner_command_text_byte_for_byte() {
        let inner =
            r#"{"command": "test", "client_id": "client123", "data": {"n": 1}, "extra": [1, 2]}"#;
        let decoded = decode_sqs_body(&envelope_around(inner)).unwrap();
        assert_eq!(decoded.client_id.as_str(), "client123");
        assert_eq!(&*decoded.json, inner);
        assert_eq!(decoded.sns_message_id.as_deref(), Some("m-1"));
        assert_eq!(
            decoded.sns_timestamp.as_deref(),
            Some("2026-01-01T00:00:00.000Z")
        );
    }

    #[test]
    fn bare_command_is_forwarded_as_is_with_unknown_fields() {
        for body in [
            r#"{"client_id":"c1","command":"go","Type":"custom","zzz":null}"#,
            r#"{"client_id":"c1","command":"go","Type":"Notification"}"#,
        ] {
            let decoded = decode_sqs_body(body).unwrap();
            assert_eq!(decoded.client_id.as_str(), "c1");
            assert_eq!(&*decoded.json, body);
            assert_eq!(decoded.sns_message_id, None);
        }
    }

    /// A bare Command may carry fields named like an envelope's (`Type`,
    /// `Message`, even `MessageId` and an ARN in `TopicArn`): its own
    /// `client_id` or `command` says it is a Command, and it goes to its own
    /// client, never to an id inside its `Message`.
    #[test]
    fn a_command_with_envelope_fields_is_delivered_as_itself() {
        let inner = r#"{"client_id":"mallory","command":"steal"}"#;
        let commands = [
            json!({"client_id": "c1", "command": "go", "Type": "Notification", "Message": inner}),
            json!({"client_id": "c1", "command": "go", "Type": "Notification", "Message": "hi",
                "MessageId": "m-1", "TopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                "Timestamp": "2026-01-01T00:00:00.000Z"}),
            json!({"client_id": "c1", "command": "go", "Type": "Notification",
                "Message": {"text": "not a string"}}),
        ];
        for command in commands {
            for body in [
                command.to_string(),
                serde_json::to_string_pretty(&command).unwrap(),
            ] {
                let decoded = decode_sqs_body(&body).unwrap_or_else(|e| panic!("{body}: {e}"));
                assert_eq!(decoded.client_id.as_str(), "c1", "{body}");
                assert_eq!(&*decoded.json, body);
                assert_eq!(decoded.sns_message_id, None);
            }
        }
        // Without a Command field of its own, and without what every SNS
        // notification has, it is neither: malformed, never routed.
        for body in [
            json!({"Type": "Notification", "Message": inner}),
            json!({"Type": "Notification", "Message": inner, "MessageId": "m-1"}),
            json!({"Type": "Notification", "Message": inner, "MessageId": "m-1",
                "TopicArn": ""}),
            json!({"Type": "Notification", "Message": inner, "MessageId": "m-1",
                "TopicArn": 7}),
            json!({"Type": "Notification", "Message": inner, "MessageId": 7,
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:t"}),
        ] {
            let got = decode_sqs_body(&body.to_string()).unwrap_err();
            assert_eq!(got, DecodeError::NotAnEnvelope, "{body}");
        }
        // A Command field set to `null` is still a Command's field: the body
        // is a Command without a client, never an envelope around `inner`.
        for field in ["client_id", "command", "client_ids", "group", "broadcast"] {
            let mut body = json!({"Type": "Notification", "Message": inner, "MessageId": "m-1",
                "TopicArn": "arn:aws:sns:us-east-1:123456789012:t"});
            body[field] = Value::Null;
            let got = decode_sqs_body(&body.to_string()).unwrap_err();
            assert_eq!(got, DecodeError::MissingClientId, "{body}");
        }
    }

    #[test]
    fn aws_documentation_envelope_with_a_command_inside() {
        let doc: Value = serde_json::from_str(crate::envelope::tests::AWS_DOC_EXAMPLE).unwrap();
        let mut doc = doc.as_object().unwrap().clone();
        doc.insert(
            "Message".into(),
            Value::String(r#"{"client_id":"c9","command":"ping"}"#.into()),
        );
        let decoded = decode_sqs_body(&Value::Object(doc).to_string()).unwrap();
        assert_eq!(decoded.client_id.as_str(), "c9");
        assert_eq!(
            decoded.sns_message_id.as_deref(),
            Some("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324")
        );
    }

    #[test]
    fn each_failure_has_its_own_error() {
        use DecodeError::*;
        let cases: Vec<(String, DecodeError)> = vec![
            ("not json".into(), NotJson(String::new())),
            ("[1,2]".into(), NotAnObject),
            ("\"str\"".into(), NotAnObject),
            (
                r#"{"Type":"SubscriptionConfirmation","Message":"x"}"#.into(),
                UnsupportedEnvelopeType("SubscriptionConfirmation".into()),
            ),
            (r#"{"Type":"Notification"}"#.into(), EnvelopeWithoutMessage),
            (
                r#"{"Type":"Notification","Message":{"client_id":"a"}}"#.into(),
                EnvelopeMessageNotString,
            ),
            (envelope_around("nope"), MessageNotJson(String::new())),
            (envelope_around("[]"), MessageNotAnObject),
            (envelope_around(r#"{"command":"x"}"#), MissingClientId),
            (
                envelope_around(r#"{"client_id":7,"command":"x"}"#),
                ClientIdNotString,
            ),
            (
                envelope_around(r#"{"client_id":"","command":"x"}"#),
                InvalidClientId(ClientIdError::Empty),
            ),
            (r#"{"client_id":"a"}"#.into(), MissingCommand),
            (r#"{"client_id":"a","command":null}"#.into(), MissingCommand),
            (r#"{"client_id":"a","command":1}"#.into(), CommandNotString),
            (
                r#"{"client_id":"a","command":"x""#.into(),
                NotJson(String::new()),
            ),
        ];
        for (body, expected) in cases {
            let got = decode_sqs_body(&body).unwrap_err();
            assert_eq!(got.reason(), expected.reason(), "body: {body}: {got}");
            if !matches!(expected, NotJson(_) | MessageNotJson(_)) {
                assert_eq!(got, expected, "body: {body}");
            }
        }
    }

    #[test]
    fn typed_command_keeps_an_explicit_null_data() {
        for text in [
            r#"{"client_id":"c1","command":"go","data":null}"#,
            r#"{"client_id":"c1","command":"go"}"#,
        ] {
            let cmd: Command = serde_json::from_str(text).unwrap();
            let back: Value = serde_json::to_value(&cmd).unwrap();
            assert_eq!(back, serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
    }

    #[test]
    fn typed_command_keeps_unknown_fields_on_a_round_trip() {
        let text = r#"{"client_id":"c1","command":"go","data":[1],"trace":"t-1"}"#;
        let cmd: Command = serde_json::from_str(text).unwrap();
        assert_eq!(cmd.extra.get("trace"), Some(&json!("t-1")));
        let back: Value = serde_json::to_value(&cmd).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn escaped_type_and_command_strings_are_decoded() {
        let inner = r#"{"client_id":"c1","command":"g\u006f"}"#;
        let body = envelope_around(inner).replace(r#""Notification""#, r#""Notific\u0061tion""#);
        assert!(body.contains(r"Notific\u0061tion"), "{body}");
        let decoded = decode_sqs_body(&body).unwrap();
        assert_eq!(&*decoded.json, inner);
        assert_eq!(decoded.sns_message_id.as_deref(), Some("m-1"));
    }
}
