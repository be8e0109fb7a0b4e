//! Client-acknowledged delivery (`?ack=true`, docs/delivery.md) and shutdown without
//! loss (docs/delivery.md) on both brokers: a Command leaves the queue only when the
//! client acknowledges it; one received but not delivered (not
//! acknowledged) when the bridge stops is back in the queue at once, and
//! the next bridge delivers it.

use std::collections::BTreeSet;

use serde_json::json;

use super::{Broker, Pending};
use crate::support::{
    assert_silent, client_id, command, connect, next_frame, next_json, send_text, Next, QUIET,
};

both_brokers!(
    a_command_is_removed_only_after_the_client_acknowledges_it,
    an_unacknowledged_command_is_delivered_again_to_another_connection,
    a_command_received_but_not_delivered_comes_back_after_shutdown,
    acknowledgements_are_never_rate_limited,
    a_client_that_reconnects_gets_its_unacknowledged_commands_at_once,
);

async fn a_command_is_removed_only_after_the_client_acknowledges_it(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|s| s.ack_timeout_secs = 20).await;
    let alice = client_id("alice");
    let mut ws = connect(&bridge.ws_url(&format!("/ws?client_id={alice}&ack=true"))).await;

    let sent = command(&alice, "reboot");
    env.send_command(&sent.to_string(), false).await;
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["command"], sent, "{frame}");
    let delivery_id = frame["delivery_id"]
        .as_str()
        .expect("a delivery id")
        .to_owned();

    // Handed to the socket but not acknowledged: still held by the bridge.
    assert_silent(&mut ws, QUIET).await;
    assert_eq!(env.pending_commands().await, Pending::new(0, 1));

    // Another delivery id is refused, and changes nothing.
    send_text(&mut ws, &json!({"ack_delivery": "999999"}).to_string()).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], "unknown_delivery", "{reply}");
    assert_eq!(env.pending_commands().await, Pending::new(0, 1));

    send_text(&mut ws, &json!({"ack_delivery": delivery_id}).to_string()).await;
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    let stats = bridge.stats.downlink.snapshot();
    assert_eq!(
        (stats.acknowledged_by_client, stats.ack_released),
        (1, 0),
        "{stats:?}"
    );
    bridge.stop().await;
}

async fn an_unacknowledged_command_is_delivered_again_to_another_connection(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|s| s.ack_timeout_secs = 1).await;
    let alice = client_id("alice");
    let url = bridge.ws_url(&format!("/ws/{alice}?ack=true"));
    let mut forgetful = connect(&url).await;

    let sent = command(&alice, "update");
    env.send_command(&sent.to_string(), true).await;
    let first = next_json(&mut forgetful).await;
    assert_eq!(first["command"], sent, "{first}");

    // The first connection never acknowledges; a second connection of the
    // same client, open while the first still is, gets the Command again
    // after the ack timeout, from the hold (it never went back to the
    // queue, so no other replica could take it meanwhile).
    let mut second = connect(&url).await;
    let again = next_json(&mut second).await;
    assert_eq!(again["command"], sent, "{again}");
    assert_ne!(again["delivery_id"], first["delivery_id"]);
    assert_eq!(env.pending_commands().await, Pending::new(0, 1));
    // Acknowledge the newest delivery. On a loaded machine the 1 s timeout
    // may pass again before the acknowledgement lands: the Command then
    // comes again under a new id, acknowledged at once in turn, and the
    // stale acknowledgement is refused as unknown. Each delivery is
    // acknowledged as it arrives: with a 1 s timeout, waiting for the socket
    // to go quiet first would let the Command come back for good.
    send_text(
        &mut second,
        &json!({"ack_delivery": again["delivery_id"]}).to_string(),
    )
    .await;
    let mut rounds = 0;
    while let Some(next) = next_frame(&mut second, QUIET).await {
        let Next::Text(text) = next else {
            panic!("unexpected {next:?}");
        };
        let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
        if frame["error"]["code"] == "unknown_delivery" {
            continue;
        }
        assert_eq!(frame["command"], sent, "{frame}");
        rounds += 1;
        assert!(rounds <= 10, "the Command keeps coming back");
        send_text(
            &mut second,
            &json!({"ack_delivery": frame["delivery_id"]}).to_string(),
        )
        .await;
    }
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    assert_silent(&mut second, QUIET).await;
    let stats = bridge.stats.downlink.snapshot();
    assert!(stats.ack_redelivered >= 1, "{stats:?}");
    assert_eq!(
        (stats.ack_released, stats.acknowledged_by_client),
        (0, 1),
        "{stats:?}"
    );
    drop(forgetful);
    bridge.stop().await;
}

async fn a_command_received_but_not_delivered_comes_back_after_shutdown(broker: Broker) {
    let env = broker.env().await;
    let bridge = env.bridge(|s| s.ack_timeout_secs = 60).await;
    let alice = client_id("alice");
    let mut ws = connect(&bridge.ws_url(&format!("/ws?client_id={alice}&ack=true"))).await;
    let sent = command(&alice, "keep");
    env.send_command(&sent.to_string(), false).await;
    assert_eq!(next_json(&mut ws).await["command"], sent);
    assert_eq!(env.pending_commands().await, Pending::new(0, 1));

    bridge.stop().await;
    // Back in the queue right away, not after the ack timeout or the
    // queue's visibility timeout.
    assert_eq!(
        env.wait_for_pending(Pending::new(1, 0)).await,
        Pending::new(1, 0)
    );

    // The next bridge delivers it.
    let next = env.bridge(|_| {}).await;
    let mut ws = next.connect(&alice).await;
    assert_eq!(next_json(&mut ws).await, sent);
    assert_silent(&mut ws, QUIET).await;
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    let stats = next.stats.downlink.snapshot();
    assert_eq!(stats.forwarded, 1, "{stats:?}");
    next.stop().await;
}

async fn acknowledgements_are_never_rate_limited(broker: Broker) {
    // One message a second, a burst of one, closed after three refusals:
    // acknowledging 60 Commands as fast as they arrive would be refused and
    // then closed if acknowledgements counted as messages.
    let env = broker.env().await;
    let bridge = env
        .bridge(|s| {
            s.ack_timeout_secs = 30;
            s.message_rate_per_sec = 1;
            s.message_burst = 1;
            s.rate_limit_strikes = 3;
        })
        .await;
    let alice = client_id("alice");
    let mut ws = connect(&bridge.ws_url(&format!("/ws?client_id={alice}&ack=true"))).await;
    let total = 60;
    for n in 0..total {
        env.send_command(&command(&alice, &format!("c{n}")).to_string(), false)
            .await;
    }

    let mut seen = BTreeSet::new();
    while seen.len() < total {
        let frame = next_json(&mut ws).await;
        let delivery_id = frame["delivery_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a delivery, got {frame}"))
            .to_owned();
        seen.insert(frame["command"]["command"].as_str().unwrap().to_owned());
        send_text(&mut ws, &json!({"ack_delivery": delivery_id}).to_string()).await;
    }

    // Nothing refused, nothing delivered twice, nothing left in the queue.
    assert_silent(&mut ws, QUIET).await;
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    let (down, up) = (
        bridge.stats.downlink.snapshot(),
        bridge.stats.uplink.snapshot(),
    );
    assert_eq!(
        (
            down.acknowledged_by_client,
            down.ack_released,
            up.rate_limited
        ),
        (total as u64, 0, 0),
        "(acknowledged, released, rate limited)"
    );
    // Still open: a foreign id is answered, not punished.
    send_text(&mut ws, &json!({"ack_delivery": "no-such"}).to_string()).await;
    assert_eq!(
        next_json(&mut ws).await["error"]["code"],
        "unknown_delivery"
    );
    bridge.stop().await;
}

async fn a_client_that_reconnects_gets_its_unacknowledged_commands_at_once(broker: Broker) {
    // An ack timeout far beyond the test: only the release on disconnect
    // can bring the Command back in time.
    let env = broker.env().await;
    let bridge = env.bridge(|s| s.ack_timeout_secs = 600).await;
    let alice = client_id("alice");
    let url = bridge.ws_url(&format!("/ws/{alice}?ack=true"));
    let mut first = connect(&url).await;
    let sent = command(&alice, "resume-me");
    env.send_command(&sent.to_string(), true).await;
    assert_eq!(next_json(&mut first).await["command"], sent);

    first.close(None).await.unwrap();
    drop(first);
    let started = std::time::Instant::now();
    let mut second = connect(&url).await;
    let again = next_json(&mut second).await;
    assert_eq!(again["command"], sent, "{again}");
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    send_text(
        &mut second,
        &json!({"ack_delivery": again["delivery_id"]}).to_string(),
    )
    .await;
    assert_eq!(env.wait_for_pending(Pending::NONE).await, Pending::NONE);
    eprintln!("measured: redelivered {took:?} after the reconnect (ack timeout 600 s)");
    bridge.stop().await;
}
