//! Client-acknowledged delivery end to end (`?ack=true`, SPEC §3): the SQS
//! message is deleted only when the client acknowledges; unacknowledged, it
//! is released and delivered again.

use serde_json::json;

use crate::support::{
    assert_silent, client_id, command, connect, next_json, send_text, Env, QUIET,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_deleted_only_after_the_client_acknowledges_it() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|s| s.ack_timeout_secs = 20).await;
    let alice = client_id("alice");
    let mut ws = connect(&bridge.ws_url(&format!("/ws?client_id={alice}&ack=true"))).await;

    let sent = command(&alice, "reboot");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["command"], sent, "{frame}");
    let delivery_id = frame["delivery_id"]
        .as_str()
        .expect("a delivery id")
        .to_owned();

    // Handed to the socket but not acknowledged: still in flight on SQS.
    assert_silent(&mut ws, QUIET).await;
    assert_eq!(
        env.aws.queue_counts(&env.infra.command_queue_url).await,
        (0, 1)
    );

    // Another delivery id is refused, and changes nothing.
    send_text(&mut ws, &json!({"ack_delivery": "999999"}).to_string()).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], "unknown_delivery", "{reply}");
    assert_eq!(
        env.aws.queue_counts(&env.infra.command_queue_url).await,
        (0, 1)
    );

    send_text(&mut ws, &json!({"ack_delivery": delivery_id}).to_string()).await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!(stats.acknowledged_by_client, 1, "{stats:?}");
    assert_eq!(stats.ack_released, 0, "{stats:?}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_command_is_delivered_again_to_another_connection() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|s| s.ack_timeout_secs = 1).await;
    let alice = client_id("alice");
    let url = bridge.ws_url(&format!("/ws/{alice}?ack=true"));
    let mut forgetful = connect(&url).await;

    let sent = command(&alice, "update");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    let first = next_json(&mut forgetful).await;
    assert_eq!(first["command"], sent, "{first}");
    // The client goes away without acknowledging.
    drop(forgetful);

    // A new connection of the same client gets it again after the timeout.
    let mut second = connect(&url).await;
    let again = next_json(&mut second).await;
    assert_eq!(again["command"], sent, "{again}");
    assert_ne!(again["delivery_id"], first["delivery_id"]);
    send_text(
        &mut second,
        &json!({"ack_delivery": again["delivery_id"]}).to_string(),
    )
    .await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    let stats = bridge.stats.downlink.snapshot();
    assert!(stats.ack_released >= 1, "{stats:?}");
    assert_eq!(stats.acknowledged_by_client, 1, "{stats:?}");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_releases_unacknowledged_commands_at_once() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|s| s.ack_timeout_secs = 60).await;
    let alice = client_id("alice");
    let mut ws = connect(&bridge.ws_url(&format!("/ws?client_id={alice}&ack=true"))).await;
    let sent = command(&alice, "keep");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    assert_eq!(next_json(&mut ws).await["command"], sent);

    bridge.stop().await;
    // Visible again right away, not after the ack timeout or the queue's
    // visibility timeout.
    assert_eq!(env.wait_for_queue_counts((1, 0)).await, (1, 0));
}
