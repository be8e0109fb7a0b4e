//! Uplink end to end: WebSocket client → bridge → SNS events topic → a
//! subscribed queue (docs/protocol.md, docs/delivery.md): what the session refuses (invalid
//! frames, frames over the size limit) is never published. The published
//! body, its attributes and the acks are in `brokers::uplink`, run against
//! moto and RabbitMQ.

use serde_json::json;

use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::support::{client_id, next_frame, next_json, send_text, Env, Next, PATIENCE, QUIET};

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
        // The bridge's own events cannot be forged.
        r#"{"action": "$disconnect", "id": "forged"}"#,
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
    testkit::schemas::assert_valid("client-message-event", &[published]);
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
