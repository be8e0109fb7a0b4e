//! A Command handed to an acknowledging connection and not acknowledged is
//! never lost (docs/delivery.md): not dropped by the `drop` policy, not given up the
//! moment its client leaves because it was sent long ago, and never moved
//! to the dead-letter queue by the queue itself while its client is
//! connected and acknowledging slowly.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Broker, Pending, Resources, TestEnv};
use crate::support::{client_id, command, connect, next_json, send_text, wait_until, Bridge, Ws};

both_brokers!(
    with_drop_a_command_its_client_did_not_acknowledge_reaches_it_after_a_reconnect,
    a_command_held_longer_than_the_retry_window_is_not_given_up_when_its_client_leaves,
);

/// The Command JSON of an ack-mode frame, after checking its shape.
fn unwrap_delivery(frame: &Value) -> (&Value, String) {
    let id = frame["delivery_id"].as_str().expect("a delivery id");
    (&frame["command"], id.to_owned())
}

/// Waits until the bridge has received its one Command a second time (after
/// its client left without acknowledging it).
async fn received_again_while_away(bridge: &Bridge) {
    wait_until(
        "the Command received again while its client is away",
        || {
            let received = bridge.stats.downlink.snapshot().received;
            async move { received >= 2 }
        },
    )
    .await;
}

/// Connects to `url`, expects `sent` as an ack-mode frame, acknowledges it,
/// then expects the command queue empty and nothing dead-lettered.
async fn reconnect_and_acknowledge(env: &TestEnv, url: &str, sent: &Value) {
    let mut ws: Ws = connect(url).await;
    let frame = next_json(&mut ws).await;
    let (command, id) = unwrap_delivery(&frame);
    assert_eq!(command, sent);
    send_text(&mut ws, &json!({"ack_delivery": id}).to_string()).await;
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    assert!(env.dead_letters(0).await.is_empty());
}

async fn with_drop_a_command_its_client_did_not_acknowledge_reaches_it_after_a_reconnect(
    broker: Broker,
) {
    let env = broker.env().await;
    // `drop` is fanout's default; here on the shared queue, the same rule.
    let bridge = env
        .bridge(|s| {
            s.undeliverable = Some(app::config::UndeliverablePolicy::Drop);
            s.retry_delay_secs = 1;
            s.ack_timeout_secs = 30;
        })
        .await;
    let alice = client_id("alice");
    let url = bridge.ws_url(&format!("/ws/{alice}?ack=true"));
    let mut ws = connect(&url).await;
    let sent = command(&alice, "unlock");
    env.send_command(&sent.to_string(), false).await;
    let frame = next_json(&mut ws).await;
    assert_eq!(unwrap_delivery(&frame).0, &sent);

    // Gone without acknowledging; back once the bridge has received the
    // Command again while it was away.
    drop(ws);
    received_again_while_away(&bridge).await;
    reconnect_and_acknowledge(&env, &url, &sent).await;
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!(stats.undeliverable, 0, "{stats:?}");
    bridge.stop().await;
}

async fn a_command_held_longer_than_the_retry_window_is_not_given_up_when_its_client_leaves(
    broker: Broker,
) {
    let env = broker.env().await;
    let bridge = env
        .bridge(|s| {
            s.undeliverable = Some(app::config::UndeliverablePolicy::Retry);
            s.retry_delay_secs = 1;
            s.retry_window_secs = 4;
            s.max_receive_count = 100;
            s.ack_timeout_secs = 30;
        })
        .await;
    let alice = client_id("alice");
    let url = bridge.ws_url(&format!("/ws/{alice}?ack=true"));
    let mut ws = connect(&url).await;
    let sent = command(&alice, "hold");
    env.send_command(&sent.to_string(), false).await;
    next_json(&mut ws).await;
    // Held past the retry window, counted from the send.
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(ws);
    received_again_while_away(&bridge).await;
    reconnect_and_acknowledge(&env, &url, &sent).await;
    bridge.stop().await;
}

// SQS only: RabbitMQ has no receive limit behind the bridge's back.
mod a_slow_acknowledger_loses_nothing_to_the_queues_receive_limit {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn moto() {
        super::a_slow_acknowledger_loses_nothing_to_the_queues_receive_limit(
            crate::brokers::Broker::Moto,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn emulator() {
        super::a_slow_acknowledger_loses_nothing_to_the_queues_receive_limit(
            crate::brokers::Broker::Emulator,
        )
        .await;
    }
}

/// Commands for the slow client.
const SLOW_COMMANDS: usize = 6;

async fn a_slow_acknowledger_loses_nothing_to_the_queues_receive_limit(broker: Broker) {
    // maxReceiveCount 4, one Command held at a time, one acknowledgement a
    // second: releasing the waiting ones every second would spend their
    // receives long before the last is delivered.
    let env = broker
        .env_with(Resources {
            max_receive_count: 4,
            visibility_timeout_secs: Some(2),
        })
        .await;
    let bridge = env
        .bridge(|s| {
            s.max_unacked_per_client = 1;
            s.retry_delay_secs = 1;
            s.retry_window_secs = 10;
            s.ack_timeout_secs = 30;
        })
        .await;
    let alice = client_id("alice");
    let mut ws = connect(&bridge.ws_url(&format!("/ws/{alice}?ack=true"))).await;
    for n in 0..SLOW_COMMANDS {
        env.send_command(&command(&alice, &format!("c{n}")).to_string(), false)
            .await;
    }
    let mut names = Vec::new();
    while names.len() < SLOW_COMMANDS {
        let frame = next_json(&mut ws).await;
        let (command, id) = unwrap_delivery(&frame);
        names.push(command["command"].as_str().unwrap_or_default().to_owned());
        tokio::time::sleep(Duration::from_secs(1)).await;
        send_text(&mut ws, &json!({"ack_delivery": id}).to_string()).await;
    }
    // Every Command, once (a standard queue's receives, by two pollers, say
    // nothing of the order between them).
    names.sort();
    let expected: Vec<String> = (0..SLOW_COMMANDS).map(|n| format!("c{n}")).collect();
    assert_eq!(names, expected, "every Command, once");
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    let letters = env.dead_letters(0).await;
    assert!(letters.is_empty(), "dead-lettered: {letters:?}");
    bridge.stop().await;
}
