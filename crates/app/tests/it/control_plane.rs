//! The control plane end to end (docs/control-plane.md), as a backend sees it: two
//! replicas in fanout mode on moto, presence events and delivery receipts
//! on, the admin API on each. One queue of the backend's, subscribed (raw)
//! to the events topic, the receipts topic and the commands topic, sees
//!
//! - `$connect` when a client connects to one replica;
//! - its Command's `delivered` and `acknowledged` receipts, carrying the
//!   Command's own id — and no `undeliverable` one from the replica that
//!   does not hold the client;
//! - an admin `send` and `disconnect` sent to the *other* replica published
//!   as control messages, carried out by the client's replica, and the
//!   `$disconnect` that follows;
//!
//! and every one of these messages is valid under its JSON Schema in
//! `docs/schemas`.

use std::time::Duration;

use app::config::Secret;
use serde_json::{json, Value};
use testkit::schemas::assert_valid;
use testkit::TestQueue;

use crate::admin::{call, free_port, TOKEN};
use crate::scaleout::{Fleet, InProcess};
use crate::support::{client_id, connect, expect_close, next_json, send_text, PATIENCE};

/// A backend's view: one raw queue on several topics; messages are told
/// apart by their fields (`action`, `outcome`, `command`).
struct Backend {
    aws: testkit::Aws,
    queue: TestQueue,
    seen: Vec<Value>,
}

impl Backend {
    async fn subscribe(fleet: &Fleet, topics: &[&str]) -> Self {
        let queue = fleet
            .aws
            .create_queue(&testkit::unique_name("cp-backend"))
            .await;
        for topic in topics {
            fleet.aws.subscribe_queue(topic, &queue, true).await;
        }
        Self {
            aws: fleet.aws.clone(),
            queue,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a message that `wanted` picks, keeping every
    /// message seen on the way.
    async fn wait_for(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self.seen.iter().find(|m| wanted(m)) {
                return found.clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the backend never saw {what}; it saw {:#?}",
                self.seen
            );
            self.receive(Duration::from_secs(2)).await;
        }
    }

    /// Takes what arrives within `wait` (at least one message, or nothing).
    async fn receive(&mut self, wait: Duration) {
        let got = self.aws.receive_at_least(&self.queue.url, 1, wait).await;
        self.seen.extend(
            got.iter()
                .map(|r| serde_json::from_str::<Value>(&r.body).expect("JSON bodies")),
        );
    }

    fn of_kind(&self, field: &str) -> Vec<Value> {
        self.seen
            .iter()
            .filter(|m| m.get(field).is_some())
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_sees_presence_receipts_and_remote_admin_orders_across_two_fanout_replicas() {
    let fleet = Fleet::new("cp").await;
    let receipts = fleet
        .aws
        .create_topic(&testkit::unique_name("cp-receipts"))
        .await;
    let mut backend =
        Backend::subscribe(&fleet, &[&fleet.events, &receipts, &fleet.commands]).await;
    let replica = |instance: &str| {
        let mut settings = fleet.settings(instance);
        settings.presence_events = true;
        settings.receipts_topic_arn = Some(receipts.clone());
        settings.admin_port = free_port();
        settings.admin_token = Some(Secret::new(TOKEN));
        settings.ack_timeout_secs = 30;
        settings
    };
    let a = InProcess::start_with(replica("a")).await;
    let b = InProcess::start_with(replica("b")).await;

    // The client connects to b, acknowledging.
    let alice = client_id("alice");
    let mut ws = connect(&b.bridge.ws_url(&format!("/ws/{alice}?ack=true"))).await;
    let connected = backend
        .wait_for("$connect", |m| {
            m["action"] == "$connect" && m["client_id"] == json!(alice)
        })
        .await;
    assert_eq!(connected["instance_id"], "b", "{connected}");

    // A Command with a correlation id: both replicas receive it, b delivers.
    let command = json!({"client_id": alice, "command": "reboot", "id": "corr-7"});
    let sns_id = fleet
        .aws
        .publish(
            &fleet.commands,
            &command.to_string(),
            &[("client_id", &alice)],
        )
        .await;
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["command"], command, "{frame}");
    let delivered = backend
        .wait_for("the delivered receipt", |m| m["outcome"] == "delivered")
        .await;
    assert_eq!(delivered["command_id"], "corr-7", "{delivered}");
    assert_eq!(delivered["sns_message_id"], json!(sns_id));
    assert_eq!(delivered["client_id"], json!(alice));
    send_text(
        &mut ws,
        &json!({"ack_delivery": frame["delivery_id"]}).to_string(),
    )
    .await;
    let acknowledged = backend
        .wait_for("the acknowledged receipt", |m| {
            m["outcome"] == "acknowledged"
        })
        .await;
    assert_eq!(acknowledged["command_id"], "corr-7", "{acknowledged}");
    assert_eq!(acknowledged["message_id"], delivered["message_id"]);

    // A frame and a disconnect, asked of a, which does not hold alice: a
    // publishes them, b carries them out.
    let a_admin = a.bridge.admin_port.expect("the admin API is on");
    let (status, answer) = call(
        a_admin,
        "POST",
        &format!("/admin/clients/{alice}/send"),
        Some(TOKEN),
        Some(json!({"notice": "maintenance at 02:00"})),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["forwarded"], true, "{answer}");
    assert_eq!(
        next_json(&mut ws).await,
        json!({"notice": "maintenance at 02:00"})
    );
    let (status, answer) = call(
        a_admin,
        "POST",
        &format!("/admin/clients/{alice}/disconnect"),
        Some(TOKEN),
        Some(json!({"code": 4001, "reason": "session revoked"})),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    expect_close(&mut ws, 4001, "session revoked").await;
    let disconnected = backend
        .wait_for("$disconnect", |m| m["action"] == "$disconnect")
        .await;
    assert_eq!(
        (
            &disconnected["client_id"],
            &disconnected["code"],
            &disconnected["reason"],
            &disconnected["connection_id"],
            &disconnected["instance_id"],
        ),
        (
            &json!(alice),
            &json!(4001),
            &json!("session revoked"),
            &connected["connection_id"],
            &json!("b"),
        ),
        "{disconnected}"
    );
    let order = backend
        .wait_for("the $disconnect control message", |m| {
            m["command"] == "$disconnect"
        })
        .await;
    assert_eq!(
        order,
        json!({"client_id": alice, "command": "$disconnect", "code": 4001, "reason": "session revoked"})
    );

    // Nothing else: no `undeliverable` receipt from a (fanout), no second
    // receipt of either kind.
    backend.receive(Duration::from_secs(2)).await;
    let outcomes: Vec<_> = backend
        .of_kind("outcome")
        .iter()
        .map(|r| r["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        outcomes,
        ["delivered", "acknowledged"],
        "{:#?}",
        backend.seen
    );

    assert_valid("presence-event", &backend.of_kind("action"));
    assert_valid("receipt", &backend.of_kind("outcome"));
    let control: Vec<Value> = backend
        .of_kind("command")
        .into_iter()
        .filter(|m| m["command"].as_str().is_some_and(|c| c.starts_with('$')))
        .collect();
    assert_eq!(control.len(), 2, "{control:#?}");
    assert_valid("control-message", &control);
    assert_valid("command", &backend.of_kind("command"));
    let orders = a.bridge.stats.control.snapshot();
    assert_eq!(
        (
            orders.admin_here,
            orders.admin_forwarded,
            orders.admin_failed
        ),
        (0, 2, 0)
    );
    let metrics = reqwest::get(a.bridge.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wsbridge_admin_orders_total{outcome=\"forwarded\"} 2\n"),
        "{metrics}"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_admin_order_for_a_client_nowhere_is_published_and_a_bad_one_is_not() {
    let env = crate::support::Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            s.admin_port = free_port();
            s.admin_token = Some(Secret::new(TOKEN));
        })
        .await;
    let port = bridge.admin_port.unwrap();
    let ghost = client_id("ghost");

    // Refused before anything is published.
    let (status, _) = call(
        port,
        "POST",
        &format!("/admin/clients/{ghost}/disconnect"),
        Some(TOKEN),
        Some(json!({"code": 1006})),
    )
    .await;
    assert_eq!(status, 400);

    // Shared mode: onto the command queue, as the raw control message.
    let (status, answer) = call(
        port,
        "POST",
        &format!("/admin/clients/{ghost}/disconnect"),
        Some(TOKEN),
        Some(json!({"code": 4000, "reason": "bye", "connection_id": "17"})),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let message_id = answer["message_id"].as_str().expect("a message id");
    assert!(!message_id.is_empty());
    let stats = bridge.stats.clone();
    crate::support::wait_until("the order to be received and released", || {
        let stats = stats.clone();
        async move { stats.downlink.snapshot().released > 0 }
    })
    .await;
    bridge.stop().await;
    let left = env
        .aws
        .receive_at_least(&env.infra.command_queue_url, 1, PATIENCE)
        .await;
    let bodies: Vec<Value> = left
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(
        bodies,
        [
            json!({"client_id": ghost, "command": "$disconnect", "code": 4000, "reason": "bye", "connection_id": "17"})
        ]
    );
    assert_valid("control-message", &bodies);
}

#[tokio::test]
async fn an_admin_order_the_bus_refuses_is_answered_502_and_logged() {
    let env = crate::support::Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            s.admin_port = free_port();
            s.admin_token = Some(Secret::new(TOKEN));
        })
        .await;
    // The command queue is gone: the control message has nowhere to go.
    env.aws.delete_queue(&env.infra.command_queue_url).await;
    let (status, answer) = call(
        bridge.admin_port.unwrap(),
        "POST",
        &format!("/admin/clients/{}/send", client_id("ghost")),
        Some(TOKEN),
        Some(json!({"notice": 1})),
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["code"], "bus_unavailable", "{answer}");
    assert_eq!(bridge.stats.control.snapshot().admin_failed, 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_via_the_bus_reach_a_clients_connections_on_every_fanout_replica() {
    let fleet = Fleet::new("cpvia").await;
    let replica = |instance: &str| {
        let mut settings = fleet.settings(instance);
        settings.admin_port = free_port();
        settings.admin_token = Some(Secret::new(TOKEN));
        settings
    };
    let a = InProcess::start_with(replica("a")).await;
    let b = InProcess::start_with(replica("b")).await;
    let a_admin = a.bridge.admin_port.unwrap();
    let bob = client_id("bob");
    let mut on_a = a.bridge.connect(&bob).await;
    let mut on_b = b.bridge.connect(&bob).await;

    let (status, _) = call(
        a_admin,
        "POST",
        &format!("/admin/clients/{bob}/send?via=elsewhere"),
        Some(TOKEN),
        Some(json!({"n": 0})),
    )
    .await;
    assert_eq!(status, 400);

    // A frame through the bus (the CLI's --via-bus): each connection gets
    // it once — a's too, from the bus and not also directly.
    let (code, out, err) =
        crate::admin::admin_cli(a_admin, TOKEN, &["send", &bob, r#"{"n": 1}"#, "--via-bus"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"forwarded\":true"), "{out}");
    assert_eq!(next_json(&mut on_a).await, json!({"n": 1}));
    assert_eq!(next_json(&mut on_b).await, json!({"n": 1}));
    crate::support::assert_silent(&mut on_a, crate::support::QUIET).await;

    // A disconnect through the bus closes both.
    let (status, answer) = call(
        a_admin,
        "POST",
        &format!("/admin/clients/{bob}/disconnect?via=bus"),
        Some(TOKEN),
        Some(json!({"code": 4002, "reason": "signed out everywhere"})),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    for ws in [&mut on_a, &mut on_b] {
        expect_close(ws, 4002, "signed out everywhere").await;
    }
    a.stop().await;
    b.stop().await;
}
