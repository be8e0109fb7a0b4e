//! Uplink on both brokers: WebSocket client → bridge → events topic /
//! exchange → a subscriber (docs/protocol.md, docs/delivery.md). The server-stamped body, the
//! `client_id` and `action` attributes (SNS message attributes / AMQP
//! headers), and the `{"ack": id}` replies once the broker has the event.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::Broker;
use crate::support::{assert_silent, client_id, next_json, send_text};

both_brokers!(
    client_messages_are_published_with_the_servers_client_id_and_attributes,
    acks_come_back_in_the_order_messages_were_sent,
);

fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn client_messages_are_published_with_the_servers_client_id_and_attributes(broker: Broker) {
    let env = broker.env().await;
    let mut observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    let alice = client_id("alice");
    let mut ws = bridge.connect(&alice).await;

    // The client claims to be someone else: the server overwrites it.
    let sent = json!({
        "action": "greet",
        "id": "msg-1",
        "data": {"text": "hello", "n": [1, 2]},
        "client_id": "mallory",
        "extra_field": true,
    });
    send_text(&mut ws, &sent.to_string()).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "msg-1"}));

    let got = observer.events(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let mut expected = sent.clone();
    expected["client_id"] = json!(alice);
    assert_eq!(got[0].body, expected);
    assert_eq!(
        got[0].attributes,
        attributes(&[("client_id", &alice), ("action", "greet")])
    );

    // Without an id: published, and no reply.
    send_text(&mut ws, r#"{"action":"ping"}"#).await;
    let got = observer.events(1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].body, json!({"action": "ping", "client_id": alice}));
    assert_eq!(
        got[0].attributes,
        attributes(&[("client_id", &alice), ("action", "ping")])
    );

    // Each exactly once.
    observer.assert_quiet().await;
    assert_silent(&mut ws, Duration::from_millis(300)).await;
    let stats = bridge.stats.uplink.snapshot();
    assert_eq!((stats.published, stats.invalid), (2, 0), "{stats:?}");
    bridge.stop().await;
}

async fn acks_come_back_in_the_order_messages_were_sent(broker: Broker) {
    let env = broker.env().await;
    let mut observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    let dave = client_id("dave");
    let erin = client_id("erin");
    let mut ws = bridge.connect(&dave).await;
    let mut other = bridge.connect_path(&erin).await;

    let ids: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    for id in &ids {
        send_text(&mut ws, &json!({"action": "burst", "id": id}).to_string()).await;
    }
    send_text(&mut other, r#"{"action":"aside","id":"e0"}"#).await;
    for id in &ids {
        assert_eq!(next_json(&mut ws).await, json!({"ack": id}));
    }
    // Each connection gets its own acks only.
    assert_eq!(next_json(&mut other).await, json!({"ack": "e0"}));

    let got = observer.events(ids.len() + 1).await;
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|event| {
            let client = event.body["client_id"].as_str().unwrap_or_default();
            assert_eq!(
                event.attributes.get("client_id").map(String::as_str),
                Some(client)
            );
            let id = event.body["id"].as_str().unwrap_or_default();
            (client.to_owned(), id.to_owned())
        })
        .collect();
    seen.sort();
    let mut expected: Vec<(String, String)> =
        ids.iter().map(|id| (dave.clone(), id.clone())).collect();
    expected.push((erin.clone(), "e0".to_owned()));
    expected.sort();
    assert_eq!(seen, expected);
    assert_silent(&mut ws, Duration::from_millis(300)).await;
    bridge.stop().await;
}
