//! Uplink end to end: WebSocket client → bridge → SNS events topic → a
//! subscribed queue (SPEC §1, §4).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{
    assert_silent, client_id, next_frame, next_json, send_text, Env, Next, PATIENCE, QUIET,
};

fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_message_is_acked_and_published_with_the_servers_client_id() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
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

    let got = env.aws.receive_at_least(&observer.url, 1, PATIENCE).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let event = &got[0];
    assert!(event.is_sns_envelope(), "{}", event.body);
    let mut expected = sent.clone();
    expected["client_id"] = json!(alice);
    let published: serde_json::Value = serde_json::from_str(&event.payload()).unwrap();
    assert_eq!(published, expected);
    assert_eq!(
        event.published_attributes(),
        attributes(&[("client_id", &alice), ("action", "greet")])
    );

    // Exactly once.
    assert!(env.aws.receive_all(&observer.url, QUIET).await.is_empty());
    assert_silent(&mut ws, Duration::from_millis(300)).await;
    let stats = bridge.stats.uplink.snapshot();
    assert_eq!((stats.published, stats.invalid), (1, 0), "{stats:?}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_message_without_id_is_published_without_a_reply() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    let bob = client_id("bob");
    let mut ws = bridge.connect_path(&bob).await;

    send_text(&mut ws, r#"{"action":"ping"}"#).await;
    let got = env.aws.receive_at_least(&observer.url, 1, PATIENCE).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let published: serde_json::Value = serde_json::from_str(&got[0].payload()).unwrap();
    assert_eq!(published, json!({"action": "ping", "client_id": bob}));
    assert_eq!(
        got[0].published_attributes(),
        attributes(&[("client_id", &bob), ("action", "ping")])
    );
    assert_silent(&mut ws, Duration::from_millis(500)).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_frames_get_an_error_and_the_connection_stays_usable() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    let carol = client_id("carol");
    let mut ws = bridge.connect(&carol).await;

    let invalid = [
        "not json at all",
        r#"{"data": {"no": "action"}}"#,
        r#"{"action": ""}"#,
        r#"["action", "in", "an", "array"]"#,
        r#"{"action": 42}"#,
        r#""just a string""#,
    ];
    for frame in invalid {
        send_text(&mut ws, frame).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(
            reply["error"]["code"], "invalid_message",
            "{frame}: {reply}"
        );
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{frame}: {reply}"
        );
        assert!(reply.get("ack").is_none(), "{frame}: {reply}");
    }
    // (A binary frame closes the connection with 1003: see security.rs.)

    // Still open and working.
    send_text(&mut ws, r#"{"action":"ok","id":"after-errors"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "after-errors"}));

    // Only the valid one was published.
    let got = env.aws.receive_at_least(&observer.url, 1, PATIENCE).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let published: serde_json::Value = serde_json::from_str(&got[0].payload()).unwrap();
    assert_eq!(published["action"], "ok");
    assert!(env.aws.receive_all(&observer.url, QUIET).await.is_empty());
    let stats = bridge.stats.uplink.snapshot();
    assert_eq!(
        (stats.invalid, stats.published),
        (invalid.len() as u64, 1),
        "{stats:?}"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_come_back_in_the_order_messages_were_sent() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    let dave = client_id("dave");
    let mut ws = bridge.connect(&dave).await;

    let ids: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    for id in &ids {
        send_text(&mut ws, &json!({"action": "burst", "id": id}).to_string()).await;
    }
    for id in &ids {
        assert_eq!(next_json(&mut ws).await, json!({"ack": id}));
    }
    let got = env
        .aws
        .receive_at_least(&observer.url, ids.len(), PATIENCE)
        .await;
    let mut seen: Vec<String> = got
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m.payload()).unwrap();
            assert_eq!(v["client_id"], json!(dave));
            v["id"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    seen.sort();
    assert_eq!(seen, ids);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_max_message_bytes_closes_the_connection_with_1009() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env.bridge(|s| s.max_message_bytes = 1024).await;
    let erin = client_id("erin");
    let mut ws = bridge.connect(&erin).await;

    // Just under the limit: accepted.
    let mut fits = json!({"action": "fits", "id": "small", "data": ""});
    let room = 1024 - fits.to_string().len();
    fits["data"] = json!("x".repeat(room));
    assert_eq!(fits.to_string().len(), 1024);
    send_text(&mut ws, &fits.to_string()).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "small"}));

    // Over it: closed with 1009, nothing published.
    let too_big = json!({"action": "big", "id": "big", "data": "y".repeat(2000)});
    send_text(&mut ws, &too_big.to_string()).await;
    match next_frame(&mut ws, PATIENCE).await {
        Some(Next::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size, "{frame:?}"),
        other => panic!("expected a close frame with 1009, got {other:?}"),
    }
    let got = env.aws.receive_at_least(&observer.url, 1, PATIENCE).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let published: serde_json::Value = serde_json::from_str(&got[0].payload()).unwrap();
    assert_eq!(published["action"], "fits");
    assert!(env.aws.receive_all(&observer.url, QUIET).await.is_empty());
    bridge.stop().await;
}
