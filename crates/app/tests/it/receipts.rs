//! Delivery receipts (docs/control-plane.md) on SNS/SQS: with `receipts_topic_arn` set,
//! each Command's outcome is published to that topic — delivered (with the
//! number of sockets), acknowledged, undeliverable, malformed, dead-lettered
//! — naming the SQS and SNS message ids and the Command's own `id`, with the
//! String attribute `outcome` that subscriptions filter on.
//!
//! [`rabbit`]: the same receipts on RabbitMQ (`amqp_receipts_exchange`).

use std::time::Duration;

use serde_json::{json, Value};
use testkit::{Received, TestQueue};

use crate::support::{client_id, connect, next_json, send_text, Env, PATIENCE};

/// A receipts topic with a raw-delivery queue on it (the bodies and the SNS
/// attributes arrive as they were published), optionally filtered.
async fn receipts(env: &Env, filter: Option<&str>) -> (String, TestQueue) {
    let topic = env
        .aws
        .create_topic(&testkit::unique_name("app-receipts"))
        .await;
    let queue = env
        .aws
        .create_queue(&testkit::unique_name("app-receipts-q"))
        .await;
    match filter {
        Some(policy) => {
            env.aws
                .subscribe_queue_filtered(&topic, &queue, true, policy)
                .await
        }
        None => env.aws.subscribe_queue(&topic, &queue, true).await,
    };
    (topic, queue)
}

async fn take(env: &Env, queue: &TestQueue, n: usize) -> Vec<(Value, Received)> {
    let got = env.aws.receive_at_least(&queue.url, n, PATIENCE).await;
    got.into_iter()
        .map(|r| (serde_json::from_str(&r.body).expect("a JSON receipt"), r))
        .collect()
}

#[tokio::test]
async fn a_delivered_and_acknowledged_command_has_a_receipt_for_each() {
    let env = Env::new(5).await;
    let (topic, queue) = receipts(&env, None).await;
    let bridge = env
        .bridge(|s| {
            s.receipts_topic_arn = Some(topic.clone());
            s.ack_timeout_secs = 30;
        })
        .await;
    let alice = client_id("alice");
    let mut ws = connect(&bridge.ws_url(&format!("/ws/{alice}?ack=true"))).await;
    let command = json!({"client_id": alice, "command": "reboot", "id": "cmd-42"});
    let sns_id = env
        .aws
        .publish(&env.infra.commands_topic_arn, &command.to_string(), &[])
        .await;
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["command"], command, "{frame}");

    let delivered = take(&env, &queue, 1).await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let (body, received) = &delivered[0];
    assert_eq!(body["outcome"], "delivered", "{body}");
    assert_eq!(body["client_id"], json!(alice));
    assert_eq!(body["command_id"], "cmd-42");
    assert_eq!(body["sns_message_id"], json!(sns_id));
    assert_eq!(body["connections"], 1);
    assert!(
        body["message_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{body}"
    );
    assert_eq!(
        received.attributes.get("outcome").map(String::as_str),
        Some("delivered")
    );
    assert_eq!(received.attributes.get("client_id"), Some(&alice));
    let message_id = body["message_id"].clone();

    send_text(
        &mut ws,
        &json!({"ack_delivery": frame["delivery_id"]}).to_string(),
    )
    .await;
    let acknowledged = take(&env, &queue, 1).await;
    assert_eq!(acknowledged.len(), 1, "{acknowledged:?}");
    let (body, received) = &acknowledged[0];
    assert_eq!(body["outcome"], "acknowledged", "{body}");
    assert_eq!(body["command_id"], "cmd-42");
    assert_eq!(body["sns_message_id"], json!(sns_id));
    assert_eq!(body["message_id"], message_id);
    assert_eq!(
        received.attributes.get("outcome").map(String::as_str),
        Some("acknowledged")
    );
    bridge.stop().await;
    let counted = bridge_stats_published(&env, &queue).await;
    assert_eq!(counted, 0, "no receipt beyond the two");
}

/// Receipts still arriving on `queue` within a second (there should be none).
async fn bridge_stats_published(env: &Env, queue: &TestQueue) -> usize {
    env.aws
        .receive_all(&queue.url, Duration::from_secs(1))
        .await
        .len()
}

#[tokio::test]
async fn malformed_and_undeliverable_commands_have_receipts_and_subscriptions_filter_on_outcome() {
    let env = Env::new(5).await;
    let (topic, all) = receipts(&env, None).await;
    // A second queue on the same topic that only wants what was not delivered.
    let not_delivered = env
        .aws
        .create_queue(&testkit::unique_name("app-receipts-failed"))
        .await;
    env.aws
        .subscribe_queue_filtered(
            &topic,
            &not_delivered,
            true,
            r#"{"outcome": ["malformed", "undeliverable", "dead_lettered"]}"#,
        )
        .await;
    let bridge = env
        .bridge(|s| {
            s.receipts_topic_arn = Some(topic.clone());
            s.undeliverable = Some(app::config::UndeliverablePolicy::Drop);
        })
        .await;
    let bob = client_id("bob");
    let mut ws = bridge.connect(&bob).await;

    env.aws
        .send(&env.infra.command_queue_url, "not a command")
        .await;
    let nobody = json!({"client_id": client_id("nobody"), "command": "x", "id": 7});
    env.aws
        .send(&env.infra.command_queue_url, &nobody.to_string())
        .await;
    let to_bob = json!({"client_id": bob, "command": "hello"});
    env.aws
        .send(&env.infra.command_queue_url, &to_bob.to_string())
        .await;
    assert_eq!(next_json(&mut ws).await, to_bob);

    let mut got = take(&env, &all, 3).await;
    got.sort_by_key(|(body, _)| body["outcome"].as_str().unwrap_or_default().to_owned());
    let outcomes: Vec<_> = got.iter().map(|(b, _)| b["outcome"].clone()).collect();
    assert_eq!(
        outcomes,
        ["delivered", "malformed", "undeliverable"],
        "{got:?}"
    );
    let (malformed, received) = &got[1];
    assert_eq!(malformed["client_id"], Value::Null);
    assert_eq!(received.attributes.get("client_id"), None, "{received:?}");
    let (undeliverable, _) = &got[2];
    assert_eq!(undeliverable["command_id"], "7");
    assert_eq!(undeliverable["client_id"], nobody["client_id"]);
    let (delivered, _) = &got[0];
    assert_eq!(delivered["command_id"], Value::Null);
    let bodies: Vec<Value> = got.iter().map(|(body, _)| body.clone()).collect();
    testkit::schemas::assert_valid("receipt", &bodies);

    let filtered = take(&env, &not_delivered, 2).await;
    let mut outcomes: Vec<_> = filtered.iter().map(|(b, _)| b["outcome"].clone()).collect();
    outcomes.sort_by_key(|o| o.as_str().unwrap_or_default().to_owned());
    assert_eq!(outcomes, ["malformed", "undeliverable"], "{filtered:?}");
    assert!(
        env.aws
            .receive_all(&not_delivered.url, Duration::from_secs(1))
            .await
            .is_empty(),
        "the filter let a delivered receipt through"
    );
    let stats = bridge.stats.control.snapshot();
    assert_eq!(
        (
            stats.receipts_published,
            stats.receipts_failed,
            stats.receipts_dropped
        ),
        (3, 0, 0),
        "{stats:?}"
    );
    bridge.stop().await;
}

#[tokio::test]
async fn a_command_given_up_after_the_retry_window_has_a_dead_lettered_receipt() {
    let env = Env::new(50).await;
    let (topic, queue) = receipts(&env, None).await;
    let bridge = env
        .bridge(|s| {
            s.receipts_topic_arn = Some(topic.clone());
            s.retry_delay_secs = 1;
            s.retry_window_secs = 2;
        })
        .await;
    let away = json!({"client_id": client_id("away"), "command": "later", "id": "c-1"});
    env.aws
        .send(&env.infra.command_queue_url, &away.to_string())
        .await;
    let got = take(&env, &queue, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0["outcome"], "dead_lettered", "{:?}", got[0].0);
    assert_eq!(got[0].0["command_id"], "c-1");
    testkit::schemas::assert_valid("receipt", &[got[0].0.clone()]);
    bridge.stop().await;
}

/// Delivery receipts on RabbitMQ (`amqp_receipts_exchange`): the same
/// bodies on a topic exchange, routing key = outcome, headers `outcome` and
/// `client_id`, seen through a temporary queue bound to it.
mod rabbit {
    use adapters_amqp::tools::{Monitor, SeenEvent};
    use app::broker::{Connection, Dev, Serving};
    use app::config::Config;
    use serde_json::{json, Value};
    use tokio::time::Instant;

    use crate::brokers::rabbit::RabbitEnv;
    use crate::brokers::start_bridge;
    use crate::support::{client_id, connect, next_json, send_text, PATIENCE};

    /// What the monitor sees until at least `n` receipts arrived or
    /// [`PATIENCE`] passed (assert on the length).
    async fn take(monitor: &mut Monitor, n: usize) -> Vec<SeenEvent> {
        let deadline = Instant::now() + PATIENCE;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            got.extend(monitor.next_events(left).await.expect("monitor"));
        }
        got
    }

    fn body(seen: &SeenEvent) -> Value {
        serde_json::from_str(&seen.message)
            .unwrap_or_else(|e| panic!("a receipt is JSON ({e}): {seen:?}"))
    }

    /// (published, failed, dropped) receipts.
    fn counted(stats: &domain::Stats) -> (u64, u64, u64) {
        let c = stats.control.snapshot();
        (c.receipts_published, c.receipts_failed, c.receipts_dropped)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivered_and_acknowledged_command_has_a_receipt_for_each_on_the_exchange() {
        let env = RabbitEnv::with_receipts(true).await;
        let mut receipts = env.receipts_monitor("#").await;
        let mut settings = env.settings();
        settings.ack_timeout_secs = 30;
        let bridge = start_bridge(settings, Connection::Amqp).await;
        let stats = bridge.stats.clone();
        let alice = client_id("alice");
        let mut ws = connect(&bridge.ws_url(&format!("/ws/{alice}?ack=true"))).await;
        let command = json!({"client_id": alice, "command": "reboot", "id": "cmd-42"});
        env.send_command(&command.to_string(), false).await;
        let frame = next_json(&mut ws).await;
        assert_eq!(frame["command"], command, "{frame}");

        let delivered = take(&mut receipts, 1).await;
        assert_eq!(delivered.len(), 1, "{delivered:?}");
        let seen = &delivered[0];
        assert_eq!(seen.routing_key, "delivered", "{seen:?}");
        assert_eq!(
            seen.attributes.get("outcome").map(String::as_str),
            Some("delivered")
        );
        assert_eq!(seen.attributes.get("client_id"), Some(&alice));
        let receipt = body(seen);
        assert_eq!(receipt["outcome"], "delivered", "{receipt}");
        assert_eq!(receipt["client_id"], json!(alice));
        assert_eq!(receipt["command_id"], "cmd-42");
        assert_eq!(receipt["connections"], 1);
        assert!(
            receipt["message_id"]
                .as_str()
                .is_some_and(|id| !id.is_empty()),
            "{receipt}"
        );
        let message_id = receipt["message_id"].clone();

        send_text(
            &mut ws,
            &json!({"ack_delivery": frame["delivery_id"]}).to_string(),
        )
        .await;
        let acknowledged = take(&mut receipts, 1).await;
        assert_eq!(acknowledged.len(), 1, "{acknowledged:?}");
        let seen = &acknowledged[0];
        assert_eq!(seen.routing_key, "acknowledged", "{seen:?}");
        assert_eq!(
            seen.attributes.get("outcome").map(String::as_str),
            Some("acknowledged")
        );
        let receipt = body(seen);
        assert_eq!(receipt["outcome"], "acknowledged", "{receipt}");
        assert_eq!(receipt["command_id"], "cmd-42");
        assert_eq!(receipt["message_id"], message_id);
        testkit::schemas::assert_valid("receipt", &[body(&delivered[0]), receipt]);

        // Stopping flushes the receipt sink: every receipt is counted.
        bridge.stop().await;
        assert_eq!(counted(&stats), (2, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_malformed_command_has_a_malformed_receipt_without_a_client() {
        let env = RabbitEnv::with_receipts(true).await;
        let mut receipts = env.receipts_monitor("#").await;
        let bridge = start_bridge(env.settings(), Connection::Amqp).await;
        let stats = bridge.stats.clone();
        env.send_command("not a command", false).await;

        let got = take(&mut receipts, 1).await;
        assert_eq!(got.len(), 1, "{got:?}");
        let seen = &got[0];
        assert_eq!(seen.routing_key, "malformed", "{seen:?}");
        assert_eq!(
            seen.attributes.get("outcome").map(String::as_str),
            Some("malformed")
        );
        assert_eq!(seen.attributes.get("client_id"), None, "{seen:?}");
        let receipt = body(seen);
        assert_eq!(receipt["outcome"], "malformed", "{receipt}");
        assert_eq!(receipt["client_id"], Value::Null);
        assert_eq!(receipt["command_id"], Value::Null);
        // And the Command itself went to the dead-letter queue.
        let dead = env.dead_letters(1).await;
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].body, "not a command");

        bridge.stop().await;
        assert_eq!(counted(&stats), (1, 0, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dev_declares_the_receipts_exchange() {
        let env = RabbitEnv::with_receipts(false).await;
        let exchange = env.receipts_exchange().to_owned();
        assert!(
            !env.exchange_exists(&exchange).await,
            "{exchange} exists already"
        );
        let config = Config::new(env.settings()).expect("valid settings");
        let serving = Serving::start(config, Some(Dev::default()))
            .await
            .unwrap_or_else(|e| panic!("dev's start: {e:#}"));
        assert!(
            env.exchange_exists(&exchange).await,
            "{exchange} not declared"
        );
        serving.leave().await;
    }
}
