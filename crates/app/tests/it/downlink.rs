//! Downlink end to end: SNS / SQS → bridge → WebSocket client (SPEC §1, §3).

use std::collections::BTreeSet;
use std::time::Duration;

use app::config::UndeliverablePolicy;

use crate::support::{
    assert_silent, client_id, command, envelope, next_json, test_settings, wait_until, Bridge, Env,
    PATIENCE, QUIET,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_published_to_the_commands_topic_reaches_only_its_client() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    let alice = client_id("alice");
    let bob = client_id("bob");
    let mut to_alice = bridge.connect(&alice).await;
    let mut to_bob = bridge.connect(&bob).await;

    // Through the topic the queue receives it in an SNS envelope (raw
    // delivery off, as the bootstrap subscribes it).
    let sent = command(&alice, "reboot");
    env.aws
        .publish(
            &env.infra.commands_topic_arn,
            &sent.to_string(),
            &[("client_id", &alice)],
        )
        .await;

    // The bare Command, every field kept (the unknown one too), no envelope.
    assert_eq!(next_json(&mut to_alice).await, sent);
    // Once, and only to alice.
    tokio::join!(
        assert_silent(&mut to_alice, QUIET),
        assert_silent(&mut to_bob, QUIET)
    );
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!((stats.forwarded, stats.frames_queued), (1, 1), "{stats:?}");
    assert_eq!((stats.malformed, stats.undeliverable), (0, 0), "{stats:?}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_commands_on_the_queue_reach_clients_of_both_routes() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    let by_query = client_id("query");
    let by_path = client_id("path");
    let mut query_ws = bridge.connect(&by_query).await;
    let mut path_ws = bridge.connect_path(&by_path).await;

    let to_query = command(&by_query, "one");
    let to_path = command(&by_path, "two");
    env.aws
        .send(&env.infra.command_queue_url, &to_query.to_string())
        .await;
    env.aws
        .send(&env.infra.command_queue_url, &to_path.to_string())
        .await;

    assert_eq!(next_json(&mut query_ws).await, to_query);
    assert_eq!(next_json(&mut path_ws).await, to_path);
    tokio::join!(
        assert_silent(&mut query_ws, QUIET),
        assert_silent(&mut path_ws, QUIET)
    );
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_client_gets_the_command_once() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    let carol = client_id("carol");
    let mut first = bridge.connect(&carol).await;
    let mut second = bridge.connect_path(&carol).await;

    let sent = command(&carol, "sync");
    env.aws
        .publish(
            &env.infra.commands_topic_arn,
            &sent.to_string(),
            &[("client_id", &carol)],
        )
        .await;

    let (a, b) = tokio::join!(next_json(&mut first), next_json(&mut second));
    assert_eq!(a, sent);
    assert_eq!(b, sent);
    tokio::join!(
        assert_silent(&mut first, QUIET),
        assert_silent(&mut second, QUIET)
    );
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!((stats.forwarded, stats.frames_queued), (1, 2), "{stats:?}");
    bridge.stop().await;
}

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
async fn malformed_messages_are_not_forwarded_and_end_in_the_dead_letter_queue() {
    // maxReceiveCount 2 and a 1 s visibility timeout: a message the bridge
    // leaves alone is moved to the DLQ within a few seconds.
    let env = Env::new(2).await;
    env.set_visibility_timeout(1).await;
    let bridge = env.bridge(|_| {}).await;
    let erin = client_id("erin");
    let mut ws = bridge.connect(&erin).await;

    let bad = malformed_bodies(&erin);
    for body in &bad {
        env.aws.send(&env.infra.command_queue_url, body).await;
    }
    let good = command(&erin, "after-the-bad-ones");
    env.aws
        .send(&env.infra.command_queue_url, &good.to_string())
        .await;

    // Only the valid Command reaches the client.
    assert_eq!(next_json(&mut ws).await, good);

    // Each malformed body was left for the redrive policy, which moved it.
    let moved = env
        .aws
        .receive_at_least(&env.infra.dead_letter_queue_url, bad.len(), PATIENCE)
        .await;
    let moved: BTreeSet<String> = moved.into_iter().map(|m| m.body).collect();
    let expected: BTreeSet<String> = bad.iter().cloned().collect();
    assert_eq!(moved, expected);
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));

    // Never forwarded, however often it was received.
    assert_silent(&mut ws, QUIET).await;
    let stats = bridge.stats.downlink.snapshot();
    assert!(
        stats.malformed >= bad.len() as u64,
        "every malformed receive is counted: {stats:?}"
    );
    assert_eq!(stats.forwarded, 1, "{stats:?}");
    bridge.stop().await;
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
async fn a_command_for_an_absent_client_is_retried_until_it_connects() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            s.retry_delay_secs = 1;
        })
        .await;
    let gina = client_id("gina");
    let sent = command(&gina, "waiting-for-you");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;

    // Received and released at least once while gina is away.
    let stats = bridge.stats.clone();
    wait_until("the command to be released", || {
        let released = stats.downlink.snapshot().released;
        async move { released >= 1 }
    })
    .await;

    let mut ws = bridge.connect(&gina).await;
    assert_eq!(next_json(&mut ws).await, sent);
    assert_silent(&mut ws, QUIET).await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!((stats.forwarded, stats.undeliverable), (1, 0), "{stats:?}");
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
    assert!(snapshot.released >= 1, "retried first: {snapshot:?}");
    assert_eq!(snapshot.forwarded, 0, "{snapshot:?}");
    // Deleted, not moved.
    assert_eq!(
        env.aws.queue_counts(&env.infra.dead_letter_queue_url).await,
        (0, 0)
    );
    // Connecting now brings nothing.
    let mut ws = bridge.connect(&nobody).await;
    assert_silent(&mut ws, QUIET).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_drop_policy_a_command_for_an_absent_client_is_deleted() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| s.undeliverable = Some(UndeliverablePolicy::Drop))
        .await;
    bridge.wait_until_polling().await;
    let hank = client_id("hank");
    env.aws
        .send(
            &env.infra.command_queue_url,
            &command(&hank, "gone").to_string(),
        )
        .await;

    let stats = bridge.stats.clone();
    wait_until("the command to be counted undeliverable", || {
        let undeliverable = stats.downlink.snapshot().undeliverable;
        async move { undeliverable >= 1 }
    })
    .await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    let snapshot = bridge.stats.downlink.snapshot();
    assert_eq!(
        (
            snapshot.undeliverable,
            snapshot.released,
            snapshot.forwarded
        ),
        (1, 0, 0),
        "{snapshot:?}"
    );

    // Gone for good: hank connecting now gets nothing.
    let mut ws = bridge.connect(&hank).await;
    assert_silent(&mut ws, QUIET).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_forwarded_while_the_client_keeps_its_connection() {
    // Several Commands in a row for one client, bare and enveloped mixed.
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    let ivy = client_id("ivy");
    let mut ws = bridge.connect(&ivy).await;
    let mut expected = Vec::new();
    for i in 0..6 {
        let sent = command(&ivy, &format!("c{i}"));
        let body = if i % 2 == 0 {
            sent.to_string()
        } else {
            envelope(&uuid_like(), &sent.to_string())
        };
        env.aws.send(&env.infra.command_queue_url, &body).await;
        expected.push(sent);
    }
    let mut got = Vec::new();
    for _ in 0..expected.len() {
        got.push(next_json(&mut ws).await);
    }
    // Two pollers may take them in separate batches: compare as sets.
    let key = |v: &serde_json::Value| v["command"].as_str().unwrap_or_default().to_owned();
    let got: BTreeSet<String> = got.iter().map(key).collect();
    let expected: BTreeSet<String> = expected.iter().map(key).collect();
    assert_eq!(got, expected);
    assert_silent(&mut ws, Duration::from_millis(500)).await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    bridge.stop().await;
}

/// A fresh id shaped like an SNS MessageId.
fn uuid_like() -> String {
    let name = testkit::unique_name("m");
    name.trim_start_matches("m-").to_owned()
}
