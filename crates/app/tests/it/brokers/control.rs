//! Control messages on every broker (docs/control-plane.md): `$disconnect` and `$send`
//! travel the bus like Commands and are carried out by the replica that
//! holds the client; a malformed one is given up to the dead-letter queue
//! with reason `malformed`.

use serde_json::json;

use super::Broker;
use crate::support::{client_id, next_frame, next_json, Next, PATIENCE};

both_brokers!(
    a_send_control_message_writes_its_frame_as_it_is,
    a_disconnect_control_message_closes_with_its_code_and_reason,
    a_malformed_control_message_is_dead_lettered,
);

async fn a_send_control_message_writes_its_frame_as_it_is(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|_| {}).await;
    let alice = client_id("alice");
    let mut ws = bridge.connect(&alice).await;
    let frame = json!({"notice": "maintenance", "at": [2, 0]});
    let control = json!({"client_id": alice, "command": "$send", "frame": frame});
    env.send_command(&control.to_string(), true).await;
    assert_eq!(next_json(&mut ws).await, frame);
    bridge.stop().await;
}

async fn a_disconnect_control_message_closes_with_its_code_and_reason(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|_| {}).await;
    let bob = client_id("bob");
    let mut ws = bridge.connect(&bob).await;
    let control =
        json!({"client_id": bob, "command": "$disconnect", "code": 4002, "reason": "revoked"});
    env.send_command(&control.to_string(), false).await;
    match next_frame(&mut ws, PATIENCE).await {
        Some(Next::Close(Some(close))) => {
            assert_eq!(u16::from(close.code), 4002);
            assert_eq!(close.reason.as_str(), "revoked");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    bridge.stop().await;
}

async fn a_malformed_control_message_is_dead_lettered(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|_| {}).await;
    let carol = client_id("carol");
    let _ws = bridge.connect(&carol).await;
    let control = json!({"client_id": carol, "command": "$disconnect", "code": 1006});
    env.send_command(&control.to_string(), false).await;
    let dead = env.dead_letters(1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason(), Some("malformed"));
    bridge.stop().await;
}
