//! Property tests of the decoders of untrusted input: SQS bodies
//! (`decode_sqs_body`), client frames (`ClientMessage::parse`) and client ids
//! (`ClientId::parse`). None of them may panic on any input, and what the
//! bridge forwards must come out exactly as it went in.
//!
//! The same decoders are fuzzed on demand by the targets in `fuzz/`.

use domain::client_id::MAX_CLIENT_ID_BYTES;
use domain::{decode_sqs_body, ClientId, ClientMessage, Command};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Any JSON value, a few levels deep. Numbers are integers or binary
/// fractions, which print and parse back exactly.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 8.0)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid client id: 1..=64 characters (so at most 256 bytes), none a
/// control character.
fn arb_client_id() -> impl Strategy<Value = ClientId> {
    "[^\\p{Cc}]{1,64}".prop_map(|raw| ClientId::parse(raw).unwrap())
}

/// Fields a Command or ClientMessage may carry besides the known ones.
/// Lower-case names only: a bare Command that also had `Type: Notification`
/// and a `Message` field would be read as an SNS envelope (by design: that
/// is what an envelope looks like), so such names are left out here.
fn arb_extra(known: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map("[a-z_]{1,10}", arb_json(), 0..4).prop_map(move |fields| {
        fields
            .into_iter()
            .filter(|(name, _)| !known.contains(&name.as_str()))
            .collect()
    })
}

fn arb_command() -> impl Strategy<Value = Command> {
    (
        arb_client_id(),
        any::<String>(),
        prop::option::of(arb_json()),
        arb_extra(&["client_id", "command", "data"]),
    )
        .prop_map(|(client_id, command, data, extra)| Command {
            client_id,
            command,
            data,
            extra,
        })
}

fn envelope(message_id: &str, message: &str, pretty: bool) -> String {
    let envelope = json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:commands",
        "Subject": null,
        "Message": message,
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "MessageAttributes": {"client_id": {"Type": "String", "Value": "x"}},
    });
    if pretty {
        serde_json::to_string_pretty(&envelope).unwrap()
    } else {
        envelope.to_string()
    }
}

proptest! {
    #[test]
    fn decode_sqs_body_never_panics_on_any_text(body in any::<String>()) {
        let _ = decode_sqs_body(&body);
    }

    #[test]
    fn decode_sqs_body_never_panics_on_any_json(value in arb_json(), wrap in any::<bool>()) {
        let text = value.to_string();
        let _ = decode_sqs_body(&text);
        // And the same inside an envelope's Message.
        if wrap {
            let _ = decode_sqs_body(&envelope("m", &text, false));
        }
    }

    #[test]
    fn client_message_parse_never_panics(text in any::<String>(), value in arb_json()) {
        let _ = ClientMessage::parse(&text);
        let _ = ClientMessage::parse(&value.to_string());
    }

    #[test]
    fn client_id_parse_accepts_exactly_the_valid_ids(raw in any::<String>()) {
        let valid = !raw.is_empty()
            && raw.len() <= MAX_CLIENT_ID_BYTES
            && !raw.chars().any(char::is_control);
        match ClientId::parse(raw.clone()) {
            Ok(id) => {
                prop_assert!(valid, "accepted {raw:?}");
                prop_assert_eq!(id.as_str(), raw.as_str());
            }
            Err(_) => prop_assert!(!valid, "refused {raw:?}"),
        }
    }

    #[test]
    fn a_command_decodes_back_to_exactly_the_same_json(
        command in arb_command(),
        message_id in "[a-f0-9-]{1,36}",
        pretty in any::<bool>(),
    ) {
        let text = serde_json::to_string(&command).unwrap();

        // Bare: the body itself is forwarded, byte for byte.
        let bare = decode_sqs_body(&text).unwrap();
        prop_assert_eq!(&bare.client_id, &command.client_id);
        prop_assert_eq!(&*bare.json, text.as_str());
        prop_assert_eq!(bare.sns_message_id, None);

        // In an SNS envelope: the Message, byte for byte, whatever the
        // envelope's formatting.
        let wrapped = decode_sqs_body(&envelope(&message_id, &text, pretty)).unwrap();
        prop_assert_eq!(&wrapped.client_id, &command.client_id);
        prop_assert_eq!(&*wrapped.json, text.as_str());
        prop_assert_eq!(wrapped.sns_message_id.as_deref(), Some(message_id.as_str()));

        // And the typed Command reads back equal, unknown fields included.
        let back: Command = serde_json::from_str(&wrapped.json).unwrap();
        prop_assert_eq!(back, command);
    }

    #[test]
    fn a_client_message_keeps_every_field_and_gets_the_senders_id(
        action in "[^$].{0,19}",
        id in prop::option::of(any::<String>()),
        data in prop::option::of(arb_json()),
        claimed in prop::option::of(any::<String>()),
        extra in arb_extra(&["action", "id", "data", "client_id"]),
        sender in arb_client_id(),
    ) {
        let mut object = extra;
        object.insert("action".into(), Value::String(action.clone()));
        if let Some(id) = &id {
            object.insert("id".into(), Value::String(id.clone()));
        }
        if let Some(data) = &data {
            object.insert("data".into(), data.clone());
        }
        if let Some(claimed) = &claimed {
            object.insert("client_id".into(), Value::String(claimed.clone()));
        }
        let text = Value::Object(object.clone()).to_string();

        let message = ClientMessage::parse(&text).unwrap();
        prop_assert_eq!(message.action(), action.as_str());
        prop_assert_eq!(message.id(), id.as_deref());
        let event = message.into_event(&sender);
        prop_assert_eq!(&event.client_id, &sender);
        prop_assert_eq!(&event.action, &action);
        object.insert("client_id".into(), Value::String(sender.as_str().to_owned()));
        let published: Value = serde_json::from_str(&event.body).unwrap();
        prop_assert_eq!(published, Value::Object(object));
    }
}
