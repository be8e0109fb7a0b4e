//! Downlink on both brokers: command queue → bridge → WebSocket client
//! (docs/protocol.md, docs/delivery.md). Routing to exactly the right client, several connections
//! per client, malformed messages never forwarded and dead-lettered, the
//! `retry` and `drop` policies for absent clients.

use std::collections::BTreeSet;

use app::config::UndeliverablePolicy;

use super::{Broker, Pending, Resources};
use crate::support::{assert_silent, client_id, command, envelope, next_json, wait_until, QUIET};

both_brokers!(
    a_command_reaches_only_its_client,
    every_connection_of_a_client_gets_the_command_once,
    a_run_of_bare_and_enveloped_commands_all_arrive,
    malformed_messages_are_never_forwarded_and_are_dead_lettered,
    a_command_for_an_absent_client_is_retried_until_it_connects,
    with_the_drop_policy_a_command_for_an_absent_client_is_removed,
    metrics_carry_the_brokers_own_series_and_readiness_its_reason,
);

async fn metrics_carry_the_brokers_own_series_and_readiness_its_reason(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|_| {}).await;
    let (own, other) = match broker {
        Broker::Moto | Broker::Emulator => ("wsbridge_sqs_", "wsbridge_amqp_"),
        Broker::Rabbit => ("wsbridge_amqp_", "wsbridge_sqs_"),
    };
    wait_until("/ready answers 200", || {
        let url = bridge.http("/ready");
        async move {
            let status = reqwest::get(&url).await.map(|r| r.status().as_u16());
            status.ok() == Some(200)
        }
    })
    .await;
    let text = reqwest::get(bridge.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(own), "no {own} series:\n{text}");
    assert!(
        !text.contains(other),
        "{other} series on this broker:\n{text}"
    );
    assert!(text.contains("wsbridge_commands_total"), "{text}");
    // One family of backend call durations, the adapter's own.
    assert_eq!(
        text.matches("# TYPE wsbridge_backend_call_duration_seconds histogram")
            .count(),
        1,
        "{text}"
    );
}

async fn a_command_reaches_only_its_client(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|_| {}).await;
    let alice = client_id("alice");
    let bob = client_id("bob");
    let carol = client_id("carol");
    let mut to_alice = bridge.connect(&alice).await;
    let mut to_bob = bridge.connect_path(&bob).await;
    let mut to_carol = bridge.connect(&carol).await;

    // One through the commands topic / exchange (in an SNS envelope), one
    // bare on the queue.
    let for_alice = command(&alice, "reboot");
    let for_bob = command(&bob, "update");
    env.send_command(&for_alice.to_string(), true).await;
    env.send_command(&for_bob.to_string(), false).await;

    // The bare Command, every field kept (the unknown one too), no envelope.
    assert_eq!(next_json(&mut to_alice).await, for_alice);
    assert_eq!(next_json(&mut to_bob).await, for_bob);
    // Once each, and to no one else.
    tokio::join!(
        assert_silent(&mut to_alice, QUIET),
        assert_silent(&mut to_bob, QUIET),
        assert_silent(&mut to_carol, QUIET),
    );
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!((stats.forwarded, stats.frames_queued), (2, 2), "{stats:?}");
    assert_eq!(
        (stats.malformed, stats.undeliverable, stats.duplicate),
        (0, 0, 0),
        "{stats:?}"
    );
    bridge.stop().await;
}

async fn every_connection_of_a_client_gets_the_command_once(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|_| {}).await;
    let carol = client_id("carol");
    let dave = client_id("dave");
    let mut first = bridge.connect(&carol).await;
    let mut second = bridge.connect_path(&carol).await;
    let mut other = bridge.connect(&dave).await;

    let sent = command(&carol, "sync");
    env.send_command(&sent.to_string(), true).await;

    let (a, b) = tokio::join!(next_json(&mut first), next_json(&mut second));
    assert_eq!(a, sent);
    assert_eq!(b, sent);
    tokio::join!(
        assert_silent(&mut first, QUIET),
        assert_silent(&mut second, QUIET),
        assert_silent(&mut other, QUIET),
    );
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!((stats.forwarded, stats.frames_queued), (1, 2), "{stats:?}");
    bridge.stop().await;
}

async fn a_run_of_bare_and_enveloped_commands_all_arrive(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|_| {}).await;
    let ivy = client_id("ivy");
    let mut ws = bridge.connect(&ivy).await;
    let mut expected = BTreeSet::new();
    for i in 0..6 {
        let sent = command(&ivy, &format!("c{i}"));
        env.send_command(&sent.to_string(), i % 2 == 1).await;
        expected.insert(sent.to_string());
    }
    let mut got = BTreeSet::new();
    for _ in 0..expected.len() {
        got.insert(next_json(&mut ws).await.to_string());
    }
    // Two pollers may take them in separate batches: compared as sets.
    assert_eq!(got, expected);
    assert_silent(&mut ws, QUIET).await;
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!(stats.forwarded, 6, "{stats:?}");
    bridge.stop().await;
}

/// Malformed bodies; the ones naming a client are there to catch a bridge
/// that forwards what it could not fully decode.
fn malformed_bodies(client: &str) -> Vec<String> {
    let id = || {
        testkit::unique_name("m")
            .trim_start_matches("m-")
            .to_owned()
    };
    vec![
        "this is not JSON".to_owned(),
        serde_json::json!({"command": "no-client", "data": 1}).to_string(),
        serde_json::json!({"client_id": client, "data": "no command field"}).to_string(),
        serde_json::json!({"client_id": "", "command": "empty-client"}).to_string(),
        envelope(&id(), "{not json either"),
        envelope(&id(), &serde_json::json!(["an", "array"]).to_string()),
    ]
}

async fn malformed_messages_are_never_forwarded_and_are_dead_lettered(broker: Broker) {
    // Given up at their first receive: sent with their reason to the
    // dead-letter queue (SQS: the RedrivePolicy target; AMQP: through the
    // queue's dead-letter exchange to `.dlq`).
    let env = broker.env_with(Resources::fast_redrive()).await;
    let bridge = env.bridge(|_| {}).await;
    let erin = client_id("erin");
    let mut ws = bridge.connect(&erin).await;

    let bad = malformed_bodies(&erin);
    for body in &bad {
        env.send_command(body, false).await;
    }
    let good = command(&erin, "after-the-bad-ones");
    env.send_command(&good.to_string(), false).await;

    // Only the valid Command reaches the client.
    assert_eq!(next_json(&mut ws).await, good);

    // Each malformed body, byte for byte, in the dead-letter queue, with
    // the reason it was given up.
    let dead = env.dead_letters(bad.len()).await;
    let bodies: BTreeSet<String> = dead.iter().map(|d| d.body.clone()).collect();
    let expected: BTreeSet<String> = bad.iter().cloned().collect();
    assert_eq!(bodies, expected);
    for letter in &dead {
        assert_eq!(letter.reason(), Some("malformed"), "{letter:?}");
        assert!(
            letter
                .attributes
                .get(domain::DETAIL_ATTRIBUTE)
                .is_some_and(|detail| !detail.is_empty()),
            "{letter:?}"
        );
    }
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);

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

async fn a_command_for_an_absent_client_is_retried_until_it_connects(broker: Broker) {
    let env = broker.env().await;
    let bridge = env
        .bridge(|s| {
            s.retry_delay_secs = 1;
            // Retries within the 60 s window count as receives.
            s.max_receive_count = 100;
        })
        .await;
    let gina = client_id("gina");
    let sent = command(&gina, "waiting-for-you");
    env.send_command(&sent.to_string(), false).await;

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
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!((stats.forwarded, stats.undeliverable), (1, 0), "{stats:?}");
    bridge.stop().await;
}

async fn with_the_drop_policy_a_command_for_an_absent_client_is_removed(broker: Broker) {
    let env = broker.env().await;
    let bridge = env
        .bridge(|s| s.undeliverable = Some(UndeliverablePolicy::Drop))
        .await;
    let hank = client_id("hank");
    env.send_command(&command(&hank, "gone").to_string(), true)
        .await;

    let stats = bridge.stats.clone();
    wait_until("the command to be counted undeliverable", || {
        let undeliverable = stats.downlink.snapshot().undeliverable;
        async move { undeliverable >= 1 }
    })
    .await;
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
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
    // Gone for good: not dead-lettered, and hank connecting now gets nothing.
    assert_eq!(env.dead_letters(0).await, Vec::new());
    let mut ws = bridge.connect(&hank).await;
    assert_silent(&mut ws, QUIET).await;
    assert_eq!(env.pending_commands().await, Pending::NONE);
    bridge.stop().await;
}
