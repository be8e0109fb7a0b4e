//! Presence events on every broker (docs/control-plane.md): with `presence_events` on,
//! each connection's opening and closing reach the events topic / exchange
//! as `$connect` and `$disconnect`, in that order, with the `client_id` and
//! `action` attributes; a connection closed by shutdown is announced too;
//! with the setting off (the default) nothing is published.

use std::collections::BTreeMap;

use serde_json::json;

use super::Broker;
use crate::support::{client_id, next_json, send_text};

both_brokers!(
    opening_and_closing_a_connection_are_announced_in_order,
    connections_closed_by_shutdown_are_announced,
    presence_is_off_by_default,
);

fn attributes(client: &str, action: &str) -> BTreeMap<String, String> {
    [("client_id", client), ("action", action)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn opening_and_closing_a_connection_are_announced_in_order(broker: Broker) {
    let env = broker.env().await;
    let mut observer = env.events_observer().await;
    let bridge = env
        .bridge(|s| {
            s.presence_events = true;
            s.instance_id = Some("replica-7".into());
        })
        .await;
    let alice = client_id("alice");
    let mut ws = bridge.connect(&alice).await;

    let opened = observer.events(1).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    let connect = &opened[0].body;
    assert_eq!(connect["action"], "$connect", "{connect}");
    assert_eq!(connect["client_id"], json!(alice));
    assert_eq!(connect["instance_id"], "replica-7");
    assert!(
        connect["at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{connect}"
    );
    let connection_id = connect["connection_id"].clone();
    assert!(connection_id.is_string(), "{connect}");
    assert_eq!(opened[0].attributes, attributes(&alice, "$connect"));

    // Client messages still flow beside them.
    send_text(&mut ws, r#"{"action":"hi","id":"1"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "1"}));
    let hi = observer.events(1).await;
    assert_eq!(hi[0].body["action"], "hi", "{hi:?}");

    ws.close(None).await.unwrap();
    let closed = observer.events(1).await;
    assert_eq!(closed.len(), 1, "{closed:?}");
    let disconnect = &closed[0].body;
    assert_eq!(disconnect["action"], "$disconnect", "{disconnect}");
    assert_eq!(disconnect["connection_id"], connection_id);
    assert_eq!(disconnect["code"], 1000, "{disconnect}");
    assert_eq!(closed[0].attributes, attributes(&alice, "$disconnect"));
    testkit::schemas::assert_valid("presence-event", &[connect.clone(), disconnect.clone()]);
    observer.assert_quiet().await;
    let stats = bridge.stats.control.snapshot();
    assert_eq!((stats.presence_published, stats.presence_failed), (2, 0));
    bridge.stop().await;
}

async fn connections_closed_by_shutdown_are_announced(broker: Broker) {
    let env = broker.env().await;
    let mut observer = env.events_observer().await;
    let bridge = env.bridge(|s| s.presence_events = true).await;
    let bob = client_id("bob");
    let _ws = bridge.connect(&bob).await;
    assert_eq!(observer.events(1).await[0].body["action"], "$connect");

    bridge.stop().await;
    let closed = observer.events(1).await;
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!(closed[0].body["action"], "$disconnect");
    assert_eq!(closed[0].body["client_id"], json!(bob));
    assert_eq!(closed[0].body["code"], 1001, "{:?}", closed[0].body);
    testkit::schemas::assert_valid("presence-event", &[closed[0].body.clone()]);
}

async fn presence_is_off_by_default(broker: Broker) {
    let env = broker.env().await;
    let mut observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    let ws = bridge.connect(&client_id("carol")).await;
    drop(ws);
    observer.assert_quiet().await;
    assert_eq!(bridge.stats.control.snapshot().presence_published, 0);
    bridge.stop().await;
}
