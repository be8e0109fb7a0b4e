//! What a publisher or an unlucky broker sends on RabbitMQ stops nothing
//! (docs/delivery.md: input from the bus is untrusted): an impossible `timestamp`,
//! clients that hold deliveries without acknowledging, a memory alarm that
//! blocks every publishing connection.
//!
//! The alarm tests (`rabbit_alarm_*`) raise an alarm for the whole node,
//! which blocks every other RabbitMQ test on the machine while it lasts: the
//! default test run leaves them out (`.config/nextest.toml`), and
//! `scripts/test.sh` runs them alone afterwards.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use app::broker::Connection;
use lapin::BasicProperties;
use serde_json::Value;
use tokio::time::Instant;

use super::rabbit::RabbitEnv;
use super::start_bridge;
use crate::support::{client_id, command, connect, next_frame, Bridge, Next, Ws, PATIENCE};

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Properties as a backend's AMQP client sets them, with `timestamp`.
fn stamped(timestamp: u64) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(testkit::unique_name("m").into())
        .with_timestamp(timestamp)
}

/// Waits until `/ready` answers 200; fails the test after [`PATIENCE`].
async fn wait_ready(bridge: &Bridge) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if status(bridge, "/ready").await == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "the bridge never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status(bridge: &Bridge, path: &str) -> u16 {
    reqwest::get(bridge.http(path))
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// The Command names `ws` receives until it has `n` or `within` passed.
async fn names(ws: &mut Ws, n: usize, within: Duration) -> BTreeSet<String> {
    let deadline = Instant::now() + within;
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(Next::Text(text)) = next_frame(ws, left).await else {
            break;
        };
        let frame: Value = serde_json::from_str(&text).unwrap();
        let command = if frame["delivery_id"].is_string() {
            &frame["command"]
        } else {
            &frame
        };
        seen.insert(command["command"].as_str().unwrap().to_owned());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_an_impossible_timestamp_stops_nothing() {
    let env = RabbitEnv::new().await;
    let bridge = start_bridge(env.settings(), Connection::Amqp).await;
    let id = client_id("stamp");
    let mut ws = bridge.connect_path(&id).await;
    wait_ready(&bridge).await;

    // 2^64-1 seconds: no time a clock can hold. Then 20 ordinary Commands.
    let bad = command(&id, "bad").to_string();
    env.publish_command(&bad, stamped(u64::MAX)).await;
    for n in 0..20 {
        let body = command(&id, &format!("c{n}")).to_string();
        env.publish_command(&body, stamped(now_secs())).await;
    }

    // The timestamp counts as unknown: the Command is delivered like the
    // others, and the 20 behind it arrive.
    let got = names(&mut ws, 21, PATIENCE).await;
    let expected: BTreeSet<String> = std::iter::once("bad".to_owned())
        .chain((0..20).map(|n| format!("c{n}")))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(status(&bridge, "/ready").await, 200);
    assert_eq!(status(&bridge, "/health").await, 200);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_stamped_in_milliseconds_for_an_absent_client_is_still_given_up() {
    let env = RabbitEnv::new().await;
    let mut settings = env.settings();
    settings.undeliverable = Some(app::config::UndeliverablePolicy::Retry);
    settings.retry_delay_secs = 1;
    settings.retry_window_secs = 2;
    let bridge = start_bridge(settings, Connection::Amqp).await;
    wait_ready(&bridge).await;

    // Milliseconds where seconds belong: thousands of years ahead.
    let millis = now_secs() * 1000;
    let body = command(&client_id("absent"), "late").to_string();
    env.publish_command(&body, stamped(millis)).await;

    // The retry window counts from the first receive instead, and ends.
    let letters = env.dead_letters(1).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].body, body);
    assert_eq!(letters[0].reason(), Some("undeliverable"), "{letters:?}");
    bridge.stop().await;
}

/// Clients that hold every delivery and never acknowledge.
const HOLDERS: usize = 6;
/// `max_unacked_per_client`: what each of them holds.
const LIMIT: usize = 10;
/// `amqp_prefetch`: less than the holders hold together.
const PREFETCH: u16 = 50;
/// Commands for the client that comes after them.
const LATECOMER_COMMANDS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_acknowledge_cannot_take_the_whole_prefetch_window() {
    let env = RabbitEnv::new().await;
    let mut settings = env.settings();
    settings.amqp_prefetch = PREFETCH;
    settings.max_unacked_per_client = LIMIT;
    // Nothing held is given back during the test.
    settings.ack_timeout_secs = 120;
    let bridge = start_bridge(settings, Connection::Amqp).await;
    let mut holders = Vec::new();
    for n in 0..HOLDERS {
        let id = client_id(&format!("holder{n}"));
        let ws = connect(&bridge.ws_url(&format!("/ws/{id}?ack=true"))).await;
        holders.push((id, ws));
    }
    wait_ready(&bridge).await;

    // Each holder is sent what it may hold: together more than the window.
    for n in 0..LIMIT {
        for (id, _) in &holders {
            let body = command(id, &format!("h{n}")).to_string();
            env.publish_command(&body, stamped(now_secs())).await;
        }
    }
    for (id, ws) in &mut holders {
        let held = names(ws, LIMIT, PATIENCE).await;
        assert_eq!(held.len(), LIMIT, "{id} holds {held:?}");
    }

    // A client that comes now still gets every Command, promptly.
    let id = client_id("latecomer");
    let mut ws = bridge.connect_path(&id).await;
    for n in 0..LATECOMER_COMMANDS {
        let body = command(&id, &format!("l{n}")).to_string();
        env.publish_command(&body, stamped(now_secs())).await;
    }
    let got = names(&mut ws, LATECOMER_COMMANDS, Duration::from_secs(10)).await;
    assert_eq!(
        got.len(),
        LATECOMER_COMMANDS,
        "the latecomer got {} of {LATECOMER_COMMANDS} while {HOLDERS} clients held {} deliveries: {got:?}",
        got.len(),
        HOLDERS * LIMIT
    );
    bridge.stop().await;
}

/// A memory alarm on the whole RabbitMQ node, raised for as long as it
/// lives: the broker blocks every connection that publishes. Dropping it
/// (also when the test fails) restores the watermark it found.
struct MemoryAlarm {
    watermark: String,
}

impl MemoryAlarm {
    async fn raise() -> Self {
        let watermark = rabbitmqctl(&["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."]);
        let alarm = Self {
            watermark: watermark.trim().to_owned(),
        };
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.00001"]);
        let deadline = Instant::now() + PATIENCE;
        while !alarm.is_raised() {
            assert!(
                Instant::now() < deadline,
                "no memory alarm after lowering the watermark"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        alarm
    }

    fn is_raised(&self) -> bool {
        rabbitmqctl(&["eval", "rabbit_alarm:get_alarms()."]).contains("memory")
    }
}

impl Drop for MemoryAlarm {
    fn drop(&mut self) {
        let watermark = if self.watermark.parse::<f64>().is_ok() {
            self.watermark.as_str()
        } else {
            "0.4"
        };
        rabbitmqctl(&["set_vm_memory_high_watermark", watermark]);
    }
}

fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (it comes with RabbitMQ)");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commands for the connected client, and as many for an absent one.
const UNDER_ALARM: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbit_alarm_a_blocked_broker_stops_neither_delivery_nor_shutdown() {
    let env = RabbitEnv::new().await;
    let mut settings = env.settings();
    settings.undeliverable = Some(app::config::UndeliverablePolicy::Retry);
    settings.retry_delay_secs = 1;
    settings.retry_window_secs = 600;
    settings.max_receive_count = 1000;
    let present = client_id("present");
    let absent = client_id("absent");
    // Published first: the alarm blocks publishing, the backends' too.
    let mut absent_bodies = BTreeSet::new();
    for n in 0..UNDER_ALARM {
        let body = command(&present, &format!("p{n}")).to_string();
        env.publish_command(&body, stamped(now_secs())).await;
        let body = command(&absent, &format!("a{n}")).to_string();
        env.publish_command(&body, stamped(now_secs())).await;
        absent_bodies.insert(body);
    }

    let alarm = MemoryAlarm::raise().await;
    let bridge = start_bridge(settings, Connection::Amqp).await;
    let mut ws = bridge.connect_path(&present).await;
    // Releasing the absent client's Commands needs copies the broker does
    // not take now: they wait, and the connected client gets all of its.
    let got = names(&mut ws, UNDER_ALARM, Duration::from_secs(20)).await;
    assert_eq!(got.len(), UNDER_ALARM, "got {got:?} under the alarm");
    assert!(alarm.is_raised());
    // A graceful shutdown keeps its deadline while the broker blocks.
    let took = bridge.stop().await;
    assert!(
        alarm.is_raised(),
        "the alarm ended before the shutdown ({took:?})"
    );
    drop(alarm);

    // Nothing of the absent client's is lost: back in the command queue,
    // waiting in the delay queue, or (never, here) dead-lettered.
    let deadline = Instant::now() + PATIENCE;
    let mut found = BTreeSet::new();
    while !absent_bodies.is_subset(&found) && Instant::now() < deadline {
        found.extend(env.take_commands().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let missing: Vec<_> = absent_bodies.difference(&found).collect();
    assert!(missing.is_empty(), "lost under the alarm: {missing:?}");
}
