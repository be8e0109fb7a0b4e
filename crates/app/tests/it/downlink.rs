//! Downlink end to end, what is particular to SNS / SQS (docs/protocol.md, docs/delivery.md): SNS
//! envelopes redelivered, a queue without a dead-letter queue, the retry
//! window against the redrive policy, a held delivery outliving the queue's
//! visibility timeout. The behaviours every broker shares
//! (routing, several connections per client, malformed messages
//! dead-lettered, the `retry` and `drop` policies) are in
//! `brokers::downlink`, run against moto and RabbitMQ.

use std::time::Duration;

use crate::support::{
    assert_silent, client_id, command, connect, envelope, next_json, send_text, test_settings,
    wait_until, Bridge, Env, PATIENCE, QUIET,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_envelope_is_forwarded_once() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    let dave = client_id("dave");
    let mut ws = bridge.connect(&dave).await;

    // Two SQS messages holding the same SNS notification (same MessageId),
    // as an at-least-once delivery may produce.
    let sent = command(&dave, "once");
    let body = envelope(&uuid_like(), &sent.to_string());
    env.aws.send(&env.infra.command_queue_url, &body).await;
    env.aws.send(&env.infra.command_queue_url, &body).await;

    assert_eq!(next_json(&mut ws).await, sent);
    assert_silent(&mut ws, QUIET).await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!((stats.forwarded, stats.duplicate), (1, 1), "{stats:?}");
    bridge.stop().await;
}

/// Malformed bodies; the ones naming a client are there to catch a bridge
/// that forwards what it could not fully decode.
fn malformed_bodies(client: &str) -> Vec<String> {
    vec![
        "this is not JSON".to_owned(),
        serde_json::json!({"command": "no-client", "data": 1}).to_string(),
        serde_json::json!({"client_id": client, "data": "no command field"}).to_string(),
        envelope(&uuid_like(), "{not json either"),
        envelope(
            &uuid_like(),
            &serde_json::json!(["an", "array"]).to_string(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_deleted_where_the_queue_has_no_dead_letter_queue() {
    let aws = testkit::moto().aws().await;
    let queue = aws.create_queue(&testkit::unique_name("app-nodlq")).await;
    let events = aws.create_topic(&testkit::unique_name("app-events")).await;
    let bridge = Bridge::start(test_settings(&queue.url, &events, None)).await;
    let frank = client_id("frank");
    let mut ws = bridge.connect(&frank).await;

    let bad = malformed_bodies(&frank);
    for body in &bad {
        aws.send(&queue.url, body).await;
    }
    let good = command(&frank, "still-arrives");
    aws.send(&queue.url, &good.to_string()).await;

    assert_eq!(next_json(&mut ws).await, good);
    assert_eq!(
        aws.wait_for_counts(&queue.url, (0, 0), PATIENCE).await,
        (0, 0)
    );
    assert_silent(&mut ws, QUIET).await;
    let stats = bridge.stats.downlink.snapshot();
    // Deleted at the first receive: each counted exactly once.
    assert_eq!(stats.malformed, bad.len() as u64, "{stats:?}");
    assert_eq!(stats.forwarded, 1, "{stats:?}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_older_than_the_retry_window_is_given_up() {
    // maxReceiveCount well above the receives the window allows, so it is
    // the bridge that gives up, not the redrive policy.
    let env = Env::new(20).await;
    let bridge = env
        .bridge(|s| {
            s.retry_delay_secs = 1;
            s.retry_window_secs = 2;
        })
        .await;
    let nobody = client_id("nobody");
    env.aws
        .send(
            &env.infra.command_queue_url,
            &command(&nobody, "too-late").to_string(),
        )
        .await;

    let stats = bridge.stats.clone();
    wait_until("the command to be given up", || {
        let undeliverable = stats.downlink.snapshot().undeliverable;
        async move { undeliverable >= 1 }
    })
    .await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    let snapshot = bridge.stats.downlink.snapshot();
    assert_eq!(snapshot.undeliverable, 1, "{snapshot:?}");
    assert_eq!(snapshot.dead_lettered, 1, "{snapshot:?}");
    assert!(snapshot.released >= 1, "retried first: {snapshot:?}");
    assert_eq!(snapshot.forwarded, 0, "{snapshot:?}");
    // Moved to the dead-letter queue, body as sent, with its reason.
    let dead = env
        .aws
        .receive_at_least(&env.infra.dead_letter_queue_url, 1, PATIENCE)
        .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body, command(&nobody, "too-late").to_string());
    assert_eq!(dead[0].attributes["wsbridge_reason"], "undeliverable");
    assert!(dead[0].attributes["wsbridge_detail"].contains("retry window"));
    // Connecting now brings nothing.
    let mut ws = bridge.connect(&nobody).await;
    assert_silent(&mut ws, QUIET).await;
    bridge.stop().await;
}

/// A fresh id shaped like an SNS MessageId.
fn uuid_like() -> String {
    let name = testkit::unique_name("m");
    name.trim_start_matches("m-").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_delivery_outlives_a_short_visibility_timeout() {
    // Queue visibility 3 s, ack timeout 8 s: the bridge keeps the message
    // invisible for the whole 8 s, so the ack timeout alone decides when the
    // unacknowledged Command is delivered again (not SQS after ~3 s, and
    // not never, as when the copy was taken for a duplicate).
    let env = Env::new(5).await;
    env.set_visibility_timeout(3).await;
    let bridge = env.bridge(|s| s.ack_timeout_secs = 8).await;
    let alice = client_id("alice");
    let mut ws = connect(&bridge.ws_url(&format!("/ws?client_id={alice}&ack=true"))).await;
    let sent = command(&alice, "hold-me");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    let first = next_json(&mut ws).await;
    let delivered = std::time::Instant::now();
    assert_eq!(first["command"], sent, "{first}");

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        env.aws.queue_counts(&env.infra.command_queue_url).await,
        (0, 1),
        "still invisible past the queue's visibility timeout"
    );
    let again = next_json(&mut ws).await;
    let took = delivered.elapsed();
    assert_eq!(again["command"], sent, "{again}");
    assert_ne!(again["delivery_id"], first["delivery_id"]);
    assert!(
        took >= Duration::from_millis(7_500) && took <= Duration::from_secs(12),
        "delivered again after {took:?}"
    );
    send_text(
        &mut ws,
        &serde_json::json!({"ack_delivery": again["delivery_id"]}).to_string(),
    )
    .await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    assert_silent(&mut ws, QUIET).await;
    let stats = bridge.stats.downlink.snapshot();
    assert!(stats.visibility_extended >= 2, "{stats:?}");
    assert_eq!(
        (stats.ack_redelivered, stats.ack_released, stats.duplicate),
        (1, 0, 0),
        "delivered again from the hold, not through the queue: {stats:?}"
    );
    eprintln!(
        "measured: redelivered {took:?} after the first delivery (visibility 3 s, ack timeout 8 s)"
    );
    bridge.stop().await;
}
