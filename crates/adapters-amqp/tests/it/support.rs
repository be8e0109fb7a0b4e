//! Helpers for these tests: the broker's URL, uniquely named topologies that
//! are deleted when the test ends (passed or not), direct broker access to
//! publish and inspect, a loopback proxy that can cut connections, and
//! `rabbitmqctl` to close a connection from the broker's side.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters_amqp::bootstrap::{self, Topology};
use adapters_amqp::{AmqpSourceSettings, AmqpUrl, Reconnect, ReleaseDelay};
use domain::{ClientId, CommandSource, InboundMessage, OutboundEvent, Receipt};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bound on every "wait until it happened" in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// The broker under test: `WSBRIDGE_TEST_AMQP_URL`, or the local RabbitMQ.
pub fn broker_url() -> String {
    std::env::var("WSBRIDGE_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// [`broker_url`] parsed.
pub fn url() -> AmqpUrl {
    AmqpUrl::parse(&broker_url()).unwrap()
}

/// The broker's address (for the proxy).
pub fn broker_addr() -> SocketAddr {
    let url = url();
    format!("{}:{}", url.host(), url.port())
        .parse()
        .expect("the test broker URL names an IP address")
}

/// A URL on which nothing listens.
pub fn closed_url() -> AmqpUrl {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    AmqpUrl::parse(&format!("amqp://guest:guest@127.0.0.1:{port}/%2f")).unwrap()
}

/// A client id from a literal.
pub fn client(id: &str) -> ClientId {
    ClientId::parse(id).unwrap()
}

/// An outbound event.
pub fn event(client_id: &str, action: &str, body: impl Into<String>) -> OutboundEvent {
    OutboundEvent {
        client_id: client(client_id),
        action: action.to_owned(),
        body: body.into(),
    }
}

/// Source settings for tests: short waits and reconnection pauses, a
/// connection name unique to the test, the queue's dead-letter exchange.
pub fn source_settings(queue: &str) -> AmqpSourceSettings {
    AmqpSourceSettings {
        queue: queue.to_owned(),
        wait_time: Duration::from_millis(300),
        reconnect: fast_reconnect(),
        connection_name: format!("{queue}.source"),
        release_delay: ReleaseDelay::DelayQueue,
        // As `Topology::new` names it.
        dead_letter_exchange: Some(format!("{queue}.dlx")),
        ..AmqpSourceSettings::default()
    }
}

/// Reconnection pauses short enough for tests.
pub fn fast_reconnect() -> Reconnect {
    Reconnect {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    }
}

/// Receives until at least `n` messages came back or [`WAIT`] passed.
pub async fn receive_n(source: &dyn CommandSource, n: usize) -> Vec<InboundMessage> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        match source.receive().await {
            Ok(batch) => got.extend(batch),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    got
}

/// The receipts of some messages.
pub fn receipts(messages: &[InboundMessage]) -> Vec<Receipt> {
    messages.iter().map(|m| m.receipt.clone()).collect()
}

/// The messages given up as malformed.
pub fn letters(messages: &[InboundMessage]) -> Vec<domain::DeadLetter> {
    messages
        .iter()
        .map(|m| domain::DeadLetter::new(m.clone(), domain::GiveUpReason::Malformed, "test"))
        .collect()
}

/// A dead letter for just a receipt (a message the source may not know).
pub fn letter_of(receipt: &Receipt) -> domain::DeadLetter {
    let message = InboundMessage {
        receipt: receipt.clone(),
        ..InboundMessage::default()
    };
    domain::DeadLetter::new(message, domain::GiveUpReason::Malformed, "test")
}

/// Polls `check` until it holds or [`WAIT`] passed; says whether it held.
pub async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Properties of a Command as a backend would publish it.
pub fn command_properties(message_id: &str, timestamp: u64) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(message_id.into())
        .with_timestamp(timestamp)
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// A test's own names on the broker, all under one unique prefix, and a
/// connection to inspect them. Everything registered is deleted when this
/// is dropped, also when the test fails.
pub struct Scratch {
    prefix: String,
    connection: Connection,
    channel: Channel,
    queues: Mutex<Vec<String>>,
    exchanges: Mutex<Vec<String>>,
}

impl Scratch {
    /// Connects to the broker and picks a prefix for `test`.
    pub async fn new(test: &str) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let prefix = format!("wsbt.{test}.{}", &suffix[..12]);
        let connection = Connection::connect(
            &broker_url(),
            ConnectionProperties::default().with_connection_name(format!("{prefix}.test").into()),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RabbitMQ is not reachable at {} ({e}); start it with `rabbitmq-server -detached`",
                url()
            )
        });
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        Self {
            prefix,
            connection,
            channel,
            queues: Mutex::new(Vec::new()),
            exchanges: Mutex::new(Vec::new()),
        }
    }

    /// A name under this test's prefix (not registered for deletion).
    pub fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.prefix)
    }

    /// Registers a queue for deletion.
    pub fn own_queue(&self, name: &str) {
        self.queues.lock().unwrap().push(name.to_owned());
    }

    /// Registers an exchange for deletion.
    pub fn own_exchange(&self, name: &str) {
        self.exchanges.lock().unwrap().push(name.to_owned());
    }

    /// The bridge's topology under this prefix, registered for deletion.
    pub fn topology(&self) -> Topology {
        let topology = Topology::new(&self.name("commands"), &self.name("events"));
        for queue in [
            &topology.command_queue,
            &topology.dead_letter_queue,
            &topology.delay_queue(),
        ] {
            self.own_queue(queue);
        }
        self.own_exchange(&topology.events_exchange);
        self.own_exchange(&topology.dead_letter_exchange);
        if let Some(exchange) = &topology.commands_exchange {
            self.own_exchange(exchange);
        }
        topology
    }

    /// [`Scratch::topology`], declared.
    pub async fn bootstrap(&self) -> Topology {
        let topology = self.topology();
        bootstrap::ensure(&url(), &topology).await.unwrap();
        topology
    }

    /// The inspection channel (confirm mode).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Declares a plain durable queue, registered for deletion.
    pub async fn declare_queue(&self, name: &str, args: FieldTable) {
        self.own_queue(name);
        self.channel
            .queue_declare(name.into(), QueueDeclareOptions::durable(), args)
            .await
            .unwrap();
    }

    /// Declares a queue bound to `exchange` with `key`, registered for deletion.
    pub async fn bound_queue(&self, name: &str, exchange: &str, key: &str) {
        self.declare_queue(name, FieldTable::default()).await;
        self.channel
            .queue_bind(
                name.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }

    /// Publishes straight to a queue and waits for the broker's confirm.
    pub async fn publish(&self, queue: &str, body: &str, properties: BasicProperties) {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body.as_bytes(),
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            confirm,
            lapin::Confirmation::Ack(None),
            "publish to {queue}"
        );
    }

    /// Takes one message from a queue (acknowledged at once), if there is one.
    pub async fn get(&self, queue: &str) -> Option<BasicGetMessage> {
        self.channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    }

    /// Takes one message from a queue, waiting up to [`WAIT`] for it.
    pub async fn get_eventually(&self, queue: &str) -> Option<BasicGetMessage> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(message) = self.get(queue).await {
                return Some(message);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Messages ready in a queue (not counting those handed out and unacknowledged),
    /// or `None` when the queue does not exist.
    pub async fn depth(&self, queue: &str) -> Option<u32> {
        self.passive_declare(queue).await.ok()
    }

    /// A passive declaration of a queue: its ready messages, or the
    /// broker's refusal (`NOT_FOUND`, `RESOURCE_LOCKED` for another
    /// connection's exclusive queue).
    pub async fn passive_declare(&self, queue: &str) -> Result<u32, String> {
        // A failed passive declare closes the channel: use a throwaway one.
        let channel = self.connection.create_channel().await.unwrap();
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = channel.close(200, "ok".into()).await;
        declared
            .map(|q| q.message_count())
            .map_err(|e| e.to_string())
    }

    /// Waits until a queue holds exactly `n` ready messages; says whether it did.
    pub async fn depth_reaches(&self, queue: &str, n: u32) -> bool {
        eventually(|| async { self.depth(queue).await == Some(n) }).await
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut *self.queues.lock().unwrap());
        let exchanges = std::mem::take(&mut *self.exchanges.lock().unwrap());
        // Async work in a drop: on a thread of its own with its own runtime,
        // waited for, but not for long.
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let Ok(connection) =
                    Connection::connect(&broker_url(), ConnectionProperties::default()).await
                else {
                    return;
                };
                for queue in queues {
                    if let Ok(channel) = connection.create_channel().await {
                        let _ = channel
                            .queue_delete(queue.into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                for exchange in exchanges {
                    if let Ok(channel) = connection.create_channel().await {
                        let _ = channel
                            .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                }
                let _ = connection.close(200, "cleanup".into()).await;
            });
            let _ = done.send(());
        });
        let _ = finished.recv_timeout(Duration::from_secs(5));
    }
}

/// A loopback TCP proxy in front of the broker that can cut every
/// connection through it and refuse new ones, as a broker crash or a
/// network failure would. It runs on a thread of its own, which ends (with
/// every connection through it) when the proxy is dropped.
pub struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cuts: watch::Sender<u64>,
}

impl Proxy {
    /// Starts forwarding to the broker.
    pub fn start() -> Self {
        let target = broker_addr();
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cuts, _) = watch::channel(0u64);
        let state = (up.clone(), cuts.subscribe());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let (up, cuts) = state;
                let mut dropped = cuts.clone();
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        changed = dropped.changed() => {
                            // An error: the Proxy was dropped; stop.
                            if changed.is_err() {
                                return;
                            }
                            continue;
                        }
                    };
                    let Ok((client, _)) = accepted else {
                        return;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let mut cut = cuts.clone();
                    cut.mark_unchanged();
                    tokio::spawn(async move {
                        let Ok(mut upstream) = TcpStream::connect(target).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            });
        });
        Self { addr, up, cuts }
    }

    /// A URL that goes through the proxy.
    pub fn url(&self) -> AmqpUrl {
        AmqpUrl::parse(&format!(
            "amqp://guest:guest@127.0.0.1:{}/%2f",
            self.addr.port()
        ))
        .unwrap()
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// Closes, from the broker's side, every connection whose `connection_name`
/// is `name` (as `rabbitmqctl close_connection` does; a broker shutting
/// down closes its connections the same way); returns how many.
pub fn close_from_broker(name: &str) -> usize {
    let listed = std::process::Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl runs (it comes with RabbitMQ)");
    assert!(listed.status.success(), "{listed:?}");
    let quoted = format!("\"{name}\"");
    let mut closed = 0;
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        if !line.contains(&quoted) {
            continue;
        }
        let pid = line.split_whitespace().next().unwrap();
        let status = std::process::Command::new("rabbitmqctl")
            .args(["close_connection", pid, "closed by the adapters-amqp tests"])
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
        closed += 1;
    }
    closed
}

/// How many messages of `queue` are handed out and not yet acknowledged,
/// as the broker counts them (`rabbitmqctl list_queues`).
pub fn unacknowledged(queue: &str) -> Option<u32> {
    let listed = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .expect("rabbitmqctl runs (it comes with RabbitMQ)");
    assert!(listed.status.success(), "{listed:?}");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .find(|(name, _)| *name == queue)
        .and_then(|(_, count)| count.trim().parse().ok())
}
