//! Property tests of the decoders of untrusted input: SQS bodies
//! (`decode_sqs_body`, the SNS envelope and its `Timestamp`), client frames
//! (`ClientFrame`, `ClientMessage::parse`), control messages (`Control::of`),
//! client ids (`ClientId::parse`) and shard ranges. None of them may panic on
//! any input, and what the bridge forwards must come out exactly as it went in.
//!
//! The same decoders are fuzzed on demand by the targets in `fuzz/`.

use std::time::{Duration, UNIX_EPOCH};

use domain::client_id::MAX_CLIENT_ID_BYTES;
use domain::control::MAX_REASON_BYTES;
use domain::envelope::parse_timestamp;
use domain::time::iso8601;
use domain::{
    decode_sqs_body, ClientFrame, ClientId, ClientMessage, Command, Control, ShardRange,
    SnsEnvelope,
};
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

/// The top-level fields of an SNS notification (AWS, moto, fauxqs).
const ENVELOPE_FIELDS: &[&str] = &[
    "Type",
    "MessageId",
    "TopicArn",
    "Subject",
    "Message",
    "Timestamp",
    "SignatureVersion",
    "Signature",
    "SigningCertURL",
    "UnsubscribeURL",
    "MessageAttributes",
];

/// A field name: any of an envelope's, or any lower-case name.
fn arb_field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(ENVELOPE_FIELDS).prop_map(str::to_owned),
        "[a-z_]{1,10}",
    ]
}

/// A value an envelope field may hold: what SNS puts there (a notification
/// type, an ARN, a Command's text) or any JSON at all.
fn arb_envelope_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("Notification")),
        "arn:[a-z0-9:-]{0,40}".prop_map(Value::String),
        Just(json!(r#"{"client_id":"inner","command":"x"}"#)),
        arb_json(),
    ]
}

/// Fields a Command or ClientMessage may carry besides the known ones,
/// those named like an SNS envelope's included (a Command carrying them is
/// still a Command).
fn arb_extra(known: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::btree_map(arb_field_name(), arb_envelope_value(), 0..6).prop_map(
        move |fields| {
            fields
                .into_iter()
                .filter(|(name, _)| !known.contains(&name.as_str()))
                .collect()
        },
    )
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
    #![proptest_config(ProptestConfig::with_cases(256))]

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

/// An SNS envelope's top-level fields, each present more often than not
/// and holding what SNS puts there more often than anything else.
fn arb_envelope_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    let typical = [
        json!("Notification"),
        json!("22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"),
        json!("arn:aws:sns:us-east-1:123456789012:commands"),
        json!("subject"),
        json!(r#"{"client_id":"inner","command":"x"}"#),
        json!("2026-01-01T00:00:00.000Z"),
        json!("1"),
        json!("EXAMPLE"),
        json!("https://sns.example/cert.pem"),
        json!("https://sns.example/?Action=Unsubscribe"),
        json!({"client_id": {"Type": "String", "Value": "inner"}}),
    ];
    let fields: Vec<_> = ENVELOPE_FIELDS
        .iter()
        .zip(typical)
        .map(|(&name, typical)| {
            let value = prop_oneof![3 => Just(typical), 1 => arb_envelope_value()];
            prop::option::weighted(0.8, value).prop_map(move |v| v.map(|v| (name.to_owned(), v)))
        })
        .collect();
    (
        fields,
        prop::collection::vec(("[a-z_]{1,10}", arb_json()), 0..3),
    )
        .prop_map(|(fields, mut others)| {
            others.extend(fields.into_iter().flatten());
            others
        })
}

/// A timestamp-shaped text: each part any run of digits (years and offsets
/// far out of range included), any separators SNS or a forger might use.
fn arb_timestamp_text() -> impl Strategy<Value = String> {
    (
        "[0-9]{1,12}",
        "[0-9]{1,3}",
        "[0-9]{1,3}",
        "[Tt ]",
        "[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}",
        prop::option::of("\\.[0-9]{0,30}"),
        prop_oneof![Just("Z".to_owned()), "[+-][0-9]{1,3}:[0-9]{1,3}", ".{0,4}"],
    )
        .prop_map(|(y, mo, d, t, hms, frac, zone)| {
            format!("{y}-{mo}-{d}{t}{hms}{}{zone}", frac.unwrap_or_default())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever an SQS body holds at an envelope's fields, nothing panics,
    /// and a body with a Command field of its own is never read as an
    /// envelope: it goes to its own client or is malformed, never to an id
    /// inside its `Message`.
    #[test]
    fn envelope_shaped_bodies_never_panic_nor_reroute(
        fields in arb_envelope_fields(),
        client_id in prop::option::of(prop_oneof![arb_client_id().prop_map(|c| json!(c.as_str())), arb_json()]),
        command in prop::option::of(arb_json()),
        pretty in any::<bool>(),
    ) {
        let mut object: Map<String, Value> = fields.into_iter().collect();
        if let Some(id) = &client_id {
            object.insert("client_id".into(), id.clone());
        }
        if let Some(command) = &command {
            object.insert("command".into(), command.clone());
        }
        let value = Value::Object(object);
        let body = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        let decoded = decode_sqs_body(&body);
        let _ = serde_json::from_str::<SnsEnvelope>(&body);
        if client_id.is_some() || command.is_some() {
            if let Ok(decoded) = decoded {
                prop_assert_eq!(Some(json!(decoded.client_id.as_str())), client_id);
                prop_assert_eq!(&*decoded.json, body.as_str());
                prop_assert_eq!(decoded.sns_message_id, None);
            }
        }
    }

    #[test]
    fn parse_timestamp_never_panics(text in any::<String>(), shaped in arb_timestamp_text()) {
        let _ = parse_timestamp(&text);
        if let Some(at) = parse_timestamp(&shaped) {
            // Whatever it accepts is a time it can print back (years ≤ 9999).
            prop_assert!(at.duration_since(UNIX_EPOCH).is_ok(), "{shaped}");
        }
    }

    #[test]
    fn timestamps_the_bridge_writes_read_back(millis in 0u64..253_402_300_800_000) {
        let at = UNIX_EPOCH + Duration::from_millis(millis);
        prop_assert_eq!(parse_timestamp(&iso8601(at)), Some(at));
    }

    #[test]
    fn client_frames_never_panic_and_agree_with_the_shortcuts(
        text in any::<String>(),
        value in arb_json(),
        key in prop::sample::select(&["ack_delivery", "auth", "action"][..]),
        key_value in arb_json(),
    ) {
        let mut framed = match value {
            Value::Object(map) => map,
            other => [("data".to_owned(), other)].into_iter().collect(),
        };
        framed.insert(key.to_owned(), key_value);
        let _ = (ClientFrame::parse(&text), ClientFrame::ack_delivery(&text), ClientFrame::auth_token(&text));
        // On JSON as serde writes it (keys unescaped), the shortcuts see
        // exactly what the full parse sees.
        {
            let text = Value::Object(framed).to_string();
            let parsed = ClientFrame::parse(&text);
            let ack = ClientFrame::ack_delivery(&text);
            let auth = ClientFrame::auth_token(&text);
            match &parsed {
                Ok(ClientFrame::AckDelivery(id)) => prop_assert_eq!(ack.as_ref(), Some(id)),
                Ok(ClientFrame::Auth(token)) => prop_assert_eq!(auth.as_ref(), Some(token)),
                _ => prop_assert!(ack.is_none() && auth.is_none(), "{text}"),
            }
        }
    }

    #[test]
    fn control_of_never_panics_and_checks_what_it_accepts(
        text in any::<String>(),
        command in prop::sample::select(&["$disconnect", "$send", "$other", "go"][..]),
        code in prop::option::of(prop_oneof![any::<i64>().prop_map(Value::from), any::<u64>().prop_map(Value::from), arb_json()]),
        reason in prop::option::of(prop_oneof![".{0,130}".prop_map(Value::String), arb_json()]),
        connection_id in prop::option::of(prop_oneof!["[0-9]{1,25}".prop_map(Value::String), arb_json()]),
        frame in prop::option::of(arb_json()),
    ) {
        let _ = Control::of(&text);
        let mut object = Map::new();
        object.insert("client_id".into(), json!("c1"));
        object.insert("command".into(), json!(command));
        for (name, value) in [("code", code), ("reason", reason), ("connection_id", connection_id), ("frame", frame)] {
            if let Some(value) = value {
                object.insert(name.into(), value);
            }
        }
        match Control::of(&Value::Object(object).to_string()) {
            Some(Ok(Control::Disconnect { code, reason, .. })) => {
                prop_assert!(code == 1000 || (3000..=4999).contains(&code), "{code}");
                prop_assert!(reason.len() <= MAX_REASON_BYTES);
            }
            Some(Ok(Control::Send { frame })) => {
                prop_assert!(serde_json::from_str::<Value>(&frame).is_ok());
            }
            Some(Err(_)) | None => {}
        }
    }

    #[test]
    fn shard_ranges_never_panic_and_stay_in_bounds(
        text in any::<String>(),
        start in any::<u32>(),
        end in any::<u32>(),
        index in any::<u32>(),
        replicas in any::<u32>(),
        shards in any::<u32>(),
    ) {
        let _ = ShardRange::parse(&text, shards);
        let checked = [
            ShardRange::parse(&format!(" {start} .. {end} "), shards),
            ShardRange::new(start, end, shards),
            ShardRange::of_replica(index, replicas, shards),
        ];
        for range in checked.into_iter().flatten() {
            prop_assert!(range.start() < range.end() && range.end() <= shards);
            prop_assert_eq!(range.len(), range.end() - range.start());
        }
    }
}
