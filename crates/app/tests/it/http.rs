//! The HTTP surface (docs/protocol.md) and graceful shutdown (docs/operations.md).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Error as WsError;

use crate::support::{
    client_id, next_frame, test_settings, wait_until, Bridge, Env, Next, PATIENCE, SHUTDOWN_SECS,
};

/// A bridge whose command queue does not exist (no bootstrap needed):
/// enough for routes that do not depend on the consumer.
async fn bridge_without_queue() -> Bridge {
    let moto = testkit::moto();
    let queue = format!(
        "{}/123456789012/{}",
        moto.endpoint(),
        testkit::unique_name("app-missing")
    );
    let topic = format!(
        "arn:aws:sns:us-east-1:123456789012:{}",
        testkit::unique_name("app-missing")
    );
    Bridge::start(test_settings(&queue, &topic, None)).await
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .timeout(PATIENCE)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn get_json(url: &str) -> (u16, Value) {
    let response = get(url).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "GET {url}: content-type {content_type:?}"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ok() {
    let bridge = bridge_without_queue().await;
    let (status, body) = get_json(&bridge.http("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "ok"}));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_the_consumer_has_received() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    let url = bridge.http("/ready");
    wait_until("GET /ready to answer 200", || {
        let url = url.clone();
        async move { get(&url).await.status().as_u16() == 200 }
    })
    .await;
    let (status, body) = get_json(&url).await;
    assert_eq!((status, body), (200, json!({"status": "ready"})));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_the_command_queue_cannot_be_read() {
    let bridge = bridge_without_queue().await;
    let aws = bridge.aws().clone();
    wait_until("a failed receive", || {
        let errors = aws.snapshot().receive_errors;
        async move { errors >= 1 }
    })
    .await;
    let (status, body) = get_json(&bridge.http("/ready")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not_ready", "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    // Liveness is unaffected.
    assert_eq!(get(&bridge.http("/health")).await.status().as_u16(), 200);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_is_served() {
    let bridge = bridge_without_queue().await;
    let response = get(&bridge.http("/")).await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    assert!(page.to_lowercase().contains("<html"), "{page}");
    assert!(page.contains("new WsBridgeClient("), "{page}");
    // Self-contained: the SDK comes from the bridge, nothing from elsewhere.
    assert!(page.contains(r#"from "/sdk/wsbridge.js""#), "{page}");
    assert!(!page.contains("src=\"http"), "{page}");

    let sdk = get(&bridge.http("/sdk/wsbridge.js")).await;
    assert_eq!(sdk.status().as_u16(), 200);
    let content_type = sdk
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    let bundle = sdk.text().await.unwrap();
    assert!(
        bundle.contains("WsBridgeClient = class") && bundle.contains("export {"),
        "not the SDK bundle"
    );
    assert!(!bundle.contains("require("), "an ESM bundle for browsers");
    bridge.stop().await;
}

/// Attempts a WebSocket handshake; returns the refusal's status and JSON body.
async fn refused_upgrade(url: &str) -> (u16, Value) {
    match tokio_tungstenite::connect_async(url).await {
        Ok((_, response)) => panic!("{url}: upgrade accepted ({})", response.status()),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let body: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!(
                    "{url}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&body)
                )
            });
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_without_a_valid_client_id_are_refused_before_the_upgrade() {
    let bridge = bridge_without_queue().await;

    let (status, body) = refused_upgrade(&bridge.ws_url("/ws")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "missing_client_id", "{body}");

    let (status, body) = refused_upgrade(&bridge.ws_url("/ws?client_id=")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_client_id", "{body}");

    let too_long = "x".repeat(257);
    let (status, body) = refused_upgrade(&bridge.ws_url(&format!("/ws/{too_long}"))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_client_id", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("257")),
        "{body}"
    );

    // A control character (%01) is refused too.
    let (status, _) = refused_upgrade(&bridge.ws_url("/ws?client_id=a%01b")).await;
    assert_eq!(status, 400);

    // A plain GET without the upgrade gets the same JSON error.
    let (status, body) = get_json(&bridge.http("/ws")).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "missing_client_id", "{body}");

    // The limit itself is fine.
    let longest = "y".repeat(256);
    let ws = crate::support::connect(&bridge.ws_url(&format!("/ws/{longest}"))).await;
    drop(ws);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_clients_with_1001_within_the_deadline() {
    let env = Env::new(5).await;
    let mut bridge = env.bridge(|_| {}).await;
    bridge.wait_until_polling().await;
    let mut first = bridge.connect(&client_id("s1")).await;
    let mut second = bridge.connect_path(&client_id("s2")).await;

    let started = Instant::now();
    bridge.shutdown.cancel();
    for ws in [&mut first, &mut second] {
        match next_frame(ws, PATIENCE).await {
            Some(Next::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Away, "{frame:?}")
            }
            other => panic!("expected a close frame with 1001, got {other:?}"),
        }
    }
    // Keep reading so the clients answer the close handshake.
    let drain = |mut ws: crate::support::Ws| async move {
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut ws)).await
        {}
    };
    tokio::spawn(drain(first));
    tokio::spawn(drain(second));

    let task = bridge.task.take().unwrap();
    let deadline = Duration::from_secs(SHUTDOWN_SECS);
    let result = tokio::time::timeout(deadline + Duration::from_secs(1), task)
        .await
        .expect("run_until_stopped did not return")
        .expect("bridge task panicked");
    assert_eq!(result, Ok(()));
    let took = started.elapsed();
    assert!(
        took <= deadline,
        "shutdown took {took:?}, deadline {deadline:?}"
    );

    // Nobody listens any more.
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", bridge.port)).await;
    assert!(refused.is_err(), "the listener is still open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_bridge_did() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    bridge.wait_until_polling().await;
    let id = client_id("metrics");
    let mut ws = bridge.connect(&id).await;
    let sent = crate::support::command(&id, "counted");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    assert_eq!(crate::support::next_json(&mut ws).await, sent);
    crate::support::send_text(&mut ws, r#"{"action":"a","id":"1"}"#).await;
    assert_eq!(
        crate::support::next_json(&mut ws).await,
        json!({"ack": "1"})
    );
    crate::support::send_text(&mut ws, "not json").await;
    let _error = crate::support::next_json(&mut ws).await;

    let response = get(&bridge.http("/metrics")).await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = response.text().await.unwrap();
    for line in [
        "wsbridge_open_connections 1\n",
        "wsbridge_fragment_bytes_held 0\n",
        "wsbridge_ready 1\n",
        "wsbridge_commands_total{outcome=\"forwarded\"} 1\n",
        "wsbridge_commands_total{outcome=\"malformed\"} 0\n",
        "wsbridge_client_messages_total{outcome=\"published\"} 1\n",
        "wsbridge_client_messages_total{outcome=\"invalid\"} 1\n",
        "# TYPE wsbridge_commands_total counter\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    bridge.stop().await;
}
