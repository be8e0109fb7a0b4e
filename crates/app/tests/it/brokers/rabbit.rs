//! The suite's broker on RabbitMQ: a topology under a unique prefix made by
//! `adapters_amqp::bootstrap::ensure` (command queue, its dead-letter
//! exchange and queue `<queue>.dlq`, delay queue `<queue>.delay`, commands
//! exchange `<queue>`, events exchange, and with [`RabbitEnv::with_receipts`]
//! a receipts exchange), deleted when the test ends, passed or not. Commands go in with `adapters_amqp::tools::send_command`, events
//! are watched with `tools::Monitor`, dead letters read with lapin, and the
//! queue counts come from `rabbitmqctl` (AMQP itself does not tell how many
//! messages are unacknowledged).

use std::collections::BTreeMap;
use std::time::Duration;

use adapters_amqp::bootstrap::{self, Topology};
use adapters_amqp::tools::{self, Monitor, SeenEvent, Target};
use adapters_amqp::AmqpUrl;
use app::config::{Broker, Settings};
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::time::Instant;

use super::{json, DeadLettered, Event, Pending};
use crate::support::{envelope, test_settings, PATIENCE};

/// The broker under test: `WSBRIDGE_TEST_AMQP_URL`, or the local RabbitMQ.
fn broker_url() -> String {
    std::env::var("WSBRIDGE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// How long [`RabbitEnv::dead_letters`] keeps looking for more.
const LINGER: Duration = Duration::from_millis(300);

/// One test's topology on RabbitMQ.
pub struct RabbitEnv {
    raw_url: String,
    url: AmqpUrl,
    topology: Topology,
    /// For reading the dead-letter queue.
    channel: Channel,
    connection: Connection,
}

impl RabbitEnv {
    pub async fn new() -> Self {
        Self::build(None).await
    }

    /// With a receipts exchange `<prefix>.receipts`, which the bridge's
    /// settings name; declared beforehand only when `declared` (else it is
    /// left to `wsbridge dev`).
    pub async fn with_receipts(declared: bool) -> Self {
        Self::build(Some(declared)).await
    }

    async fn build(receipts: Option<bool>) -> Self {
        let raw_url = broker_url();
        let url = AmqpUrl::parse(&raw_url)
            .unwrap_or_else(|e| panic!("WSBRIDGE_TEST_AMQP_URL {raw_url:?}: {e}"));
        let base = testkit::unique_name("wsbt-app");
        let mut topology = Topology::new(&format!("{base}.commands"), &format!("{base}.events"));
        if receipts.is_some() {
            topology = topology.with_receipts_exchange(&format!("{base}.receipts"));
        }
        let connection = Connection::connect(
            &raw_url,
            ConnectionProperties::default().with_connection_name(format!("{base}.test").into()),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {} ({e}); start it with `rabbitmq-server -detached`",
                url.redacted()
            )
        });
        let channel = connection.create_channel().await.unwrap();
        // Registered for deletion before it exists: a half-made topology goes too.
        let env = Self {
            raw_url,
            url,
            topology,
            channel,
            connection,
        };
        let mut declared = env.topology.clone();
        if receipts == Some(false) {
            declared.receipts_exchange = None;
        }
        bootstrap::ensure(&env.url, &declared)
            .await
            .unwrap_or_else(|e| panic!("AMQP bootstrap failed: {e}"));
        env
    }

    pub fn settings(&self) -> Settings {
        Settings {
            broker: Broker::Amqp,
            amqp_url: Some(self.raw_url.clone()),
            amqp_command_queue: self.topology.command_queue.clone(),
            amqp_events_exchange: self.topology.events_exchange.clone(),
            amqp_receipts_exchange: self.topology.receipts_exchange.clone(),
            command_queue_url: None,
            events_topic_arn: None,
            ..test_settings("", "", None)
        }
    }

    /// The receipts exchange of [`RabbitEnv::with_receipts`].
    pub fn receipts_exchange(&self) -> &str {
        self.topology
            .receipts_exchange
            .as_deref()
            .expect("an env made with_receipts")
    }

    /// A temporary queue bound to the receipts exchange with `binding_key`
    /// (`#`: every outcome).
    pub async fn receipts_monitor(&self, binding_key: &str) -> Monitor {
        let exchange = self.receipts_exchange();
        Monitor::start(&self.url, exchange, binding_key)
            .await
            .unwrap_or_else(|e| panic!("monitoring {exchange}: {e}"))
    }

    /// Whether an exchange of that name exists (a passive declaration).
    pub async fn exchange_exists(&self, name: &str) -> bool {
        // A failed passive declaration closes its channel: a throwaway one.
        let channel = self.connection.create_channel().await.unwrap();
        let declared = channel
            .exchange_declare(
                name.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        let _ = channel.close(200, "checked".into()).await;
        declared
    }

    pub async fn send_command(&self, body: &str, enveloped: bool) {
        let (target, body) = if enveloped {
            let exchange = self
                .topology
                .commands_exchange
                .clone()
                .expect("the topology has a commands exchange");
            let id = testkit::unique_name("m");
            (
                Target::Exchange {
                    name: exchange,
                    routing_key: String::new(),
                },
                envelope(id.trim_start_matches("m-"), body),
            )
        } else {
            (
                Target::Queue(self.topology.command_queue.clone()),
                body.to_owned(),
            )
        };
        tools::send_command(&self.url, &target, &body)
            .await
            .unwrap_or_else(|e| panic!("send_command to {target:?}: {e}"));
    }

    /// Publishes `body` straight to the command queue with `properties`
    /// as a publisher sets them (a timestamp, a message id), confirmed.
    pub async fn publish_command(&self, body: &str, properties: BasicProperties) {
        let queue = self.topology.command_queue.as_str();
        let channel = self.connection.create_channel().await.unwrap();
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .unwrap();
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                body.as_bytes(),
                properties,
            )
            .await
            .unwrap_or_else(|e| panic!("publish to {queue}: {e}"));
        assert!(confirm.await.unwrap().is_ack(), "publish to {queue} nacked");
        let _ = channel.close(200, "published".into()).await;
    }

    /// Takes every message now in the command queue and its delay queue;
    /// their bodies.
    pub async fn take_commands(&self) -> Vec<String> {
        let mut bodies = Vec::new();
        for queue in [
            self.topology.command_queue.clone(),
            self.topology.delay_queue(),
        ] {
            while let Some(message) = self
                .channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap_or_else(|e| panic!("basic.get from {queue}: {e}"))
            {
                bodies.push(String::from_utf8_lossy(&message.delivery.data).into_owned());
            }
        }
        bodies
    }

    pub async fn events_observer(&self) -> RabbitObserver {
        let monitor = Monitor::start(&self.url, &self.topology.events_exchange, "#")
            .await
            .unwrap_or_else(|e| panic!("monitoring {}: {e}", self.topology.events_exchange));
        RabbitObserver { monitor }
    }

    /// Ready messages of the command queue; unacknowledged ones plus those
    /// waiting in the delay queue, as held.
    pub async fn pending_commands(&self) -> Pending {
        let queue = &self.topology.command_queue;
        let delay = self.topology.delay_queue();
        let listed = tokio::process::Command::new("rabbitmqctl")
            .args([
                "list_queues",
                "-q",
                "--no-table-headers",
                "-p",
                self.url.vhost(),
                "name",
                "messages_ready",
                "messages_unacknowledged",
            ])
            .output()
            .await
            .expect("rabbitmqctl runs (it comes with RabbitMQ)");
        assert!(
            listed.status.success(),
            "rabbitmqctl list_queues: {listed:?}"
        );
        let text = String::from_utf8_lossy(&listed.stdout);
        let counts = |name: &str| -> Option<(u64, u64)> {
            text.lines().find_map(|line| {
                let mut fields = line.split('\t');
                if fields.next()? != name {
                    return None;
                }
                let ready = fields.next()?.trim().parse().ok()?;
                let unacked = fields.next()?.trim().parse().ok()?;
                Some((ready, unacked))
            })
        };
        let (ready, unacked) =
            counts(queue).unwrap_or_else(|| panic!("queue {queue:?} not listed:\n{text}"));
        let (delayed, delayed_unacked) = counts(&delay).unwrap_or((0, 0));
        Pending::new(ready, unacked + delayed + delayed_unacked)
    }

    pub async fn dead_letters(&self, at_least: usize) -> Vec<DeadLettered> {
        let queue = self.topology.dead_letter_queue.as_str();
        let mut got = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        let mut linger_until = None;
        loop {
            let taken = self
                .channel
                .basic_get(queue.into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap_or_else(|e| panic!("basic.get from {queue}: {e}"));
            if let Some(message) = taken {
                got.push(DeadLettered {
                    body: String::from_utf8_lossy(&message.delivery.data).into_owned(),
                    attributes: text_headers(&message.delivery.properties),
                });
                continue;
            }
            let now = Instant::now();
            if got.len() >= at_least {
                let until = *linger_until.get_or_insert(now + LINGER);
                if now >= until {
                    return got;
                }
            } else if now >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The headers of a message that hold text.
fn text_headers(properties: &BasicProperties) -> BTreeMap<String, String> {
    let Some(headers) = properties.headers() else {
        return BTreeMap::new();
    };
    headers
        .inner()
        .iter()
        .filter_map(|(name, value)| {
            let text = match value {
                AMQPValue::LongString(text) => text.to_string(),
                AMQPValue::ShortString(text) => text.to_string(),
                _ => return None,
            };
            Some((name.to_string(), text))
        })
        .collect()
}

impl Drop for RabbitEnv {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let url = self.raw_url.clone();
        // Async work in a drop: on a thread of its own with its own
        // runtime, waited for, but not for long.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(delete_topology(&url, &topology));
            let _ = done.send(());
        });
        let _ = finished.recv_timeout(Duration::from_secs(5));
    }
}

async fn delete_topology(url: &str, topology: &Topology) {
    let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await else {
        return;
    };
    let queues = [
        topology.command_queue.clone(),
        topology.dead_letter_queue.clone(),
        topology.delay_queue(),
    ];
    for queue in queues {
        // A failed deletion closes its channel: one channel each.
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    let exchanges = [
        Some(topology.events_exchange.clone()),
        Some(topology.dead_letter_exchange.clone()),
        topology.commands_exchange.clone(),
        topology.receipts_exchange.clone(),
    ];
    for exchange in exchanges.into_iter().flatten() {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "test done".into()).await;
}

/// A temporary, exclusive queue bound to the events exchange with `#`
/// (removed by the broker when the observer's connection ends).
pub struct RabbitObserver {
    monitor: Monitor,
}

impl RabbitObserver {
    pub async fn events(&mut self, at_least: usize, within: Duration) -> Vec<Event> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < at_least {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            got.extend(self.next_events(left).await);
        }
        got
    }

    pub async fn all_within(&mut self, within: Duration) -> Vec<Event> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return got;
            }
            got.extend(self.next_events(left).await);
        }
    }

    async fn next_events(&mut self, wait: Duration) -> Vec<Event> {
        let seen = self
            .monitor
            .next_events(wait)
            .await
            .unwrap_or_else(|e| panic!("monitor: {e}"));
        seen.iter().map(event).collect()
    }
}

fn event(seen: &SeenEvent) -> Event {
    // Published with the action as the routing key, so topic bindings can
    // select actions.
    assert_eq!(
        Some(&seen.routing_key),
        seen.attributes.get("action"),
        "routing key and action header of {seen:?}"
    );
    Event {
        body: json(&seen.message),
        attributes: seen.attributes.clone(),
    }
}
