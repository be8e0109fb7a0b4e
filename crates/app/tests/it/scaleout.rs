//! Several replicas on one moto (docs/scaling.md).
//!
//! - fanout mode: every Command reaches every connection of its client once,
//!   whichever replicas hold them, and no other client; a replica killed with
//!   SIGKILL leaves a queue that `wsbridge gc` removes once stale, and its
//!   clients carry on at another replica; a replica stopped with SIGTERM
//!   leaves no queue or subscription behind.
//! - shared mode: a Command received by a replica that does not hold its
//!   client is released and reaches the client at another replica; the test
//!   prints the extra receives this costs (docs/scaling.md quotes them).
//!
//! Replicas that must die (SIGKILL, SIGTERM) are the real binary; the others
//! are in-process `Application`s, whose counters the tests read. Each test has
//! its own topics and bridge name (`wsbridge gc` lists queues by that prefix).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_aws::fanout::{queue_tags, TAG_HEARTBEAT};
use adapters_aws::sdk::Clients;
use app::broker::replica::Instance;
use app::config::{Mode, Settings};
use futures_util::StreamExt;
use serde_json::{json, Value};
use testkit::{Aws, Fault, FaultProxy};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{served_port, signal, stderr_lines, wsbridge};
use crate::support::{
    assert_silent, client_id, command, connect, envelope, next_frame, next_json, send_text,
    test_settings, wait_until, Bridge, Env, Next, TempDir, Ws, PATIENCE, QUIET, SHUTDOWN_SECS,
};

/// Heartbeat of the binary replicas, and the staleness `wsbridge gc` is run
/// with: wide enough apart that a live replica (tagged at most ~2 s ago,
/// counting whole seconds) is never taken for a dead one.
const HEARTBEAT_SECS: u64 = 1;
const STALE_AFTER_SECS: u64 = 5;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// A fleet's AWS side

/// The topics of one fleet and its bridge name; no command queue: in fanout
/// mode each replica makes its own.
pub(crate) struct Fleet {
    pub aws: Aws,
    pub events: String,
    pub commands: String,
    pub bridge: String,
}

impl Fleet {
    pub async fn new(prefix: &str) -> Self {
        let aws = testkit::moto().aws().await;
        let events = aws
            .create_topic(&testkit::unique_name(&format!("{prefix}-events")))
            .await;
        let commands = aws
            .create_topic(&testkit::unique_name(&format!("{prefix}-commands")))
            .await;
        Self {
            aws,
            events,
            commands,
            // 34 characters: within bridge_name's 40, and unique.
            bridge: testkit::unique_name("b"),
        }
    }

    /// Settings of an in-process fanout replica.
    pub fn settings(&self, instance: &str) -> Settings {
        let mut settings = test_settings("", &self.events, Some(&self.commands));
        settings.command_queue_url = None;
        settings.mode = Mode::Fanout;
        settings.bridge_name = self.bridge.clone();
        settings.instance_id = Some(instance.to_owned());
        settings
    }

    /// Publishes a Command for `client` to the commands topic; returns it
    /// and the SNS message id.
    async fn publish(&self, client: &str, name: &str) -> (Value, String) {
        let sent = command(client, name);
        let id = self
            .aws
            .publish(&self.commands, &sent.to_string(), &[("client_id", client)])
            .await;
        (sent, id)
    }

    /// URL of an instance's queue, if it exists.
    async fn queue_of(&self, instance: &str) -> Option<String> {
        self.aws
            .sqs
            .get_queue_url()
            .queue_name(format!("{}-{instance}", self.bridge))
            .send()
            .await
            .ok()
            .and_then(|out| out.queue_url)
    }

    /// Names of this bridge's queues (ListQueues by prefix).
    pub async fn queue_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .aws
            .sqs
            .list_queues()
            .queue_name_prefix(format!("{}-", self.bridge))
            .send()
            .await
            .unwrap()
            .queue_urls
            .unwrap_or_default()
            .iter()
            .map(|url| url.rsplit('/').next().unwrap().to_owned())
            .collect();
        names.sort();
        names
    }

    /// Queue names (from the endpoint ARNs) of the commands topic's subscriptions.
    pub async fn subscribed(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .aws
            .sns
            .list_subscriptions_by_topic()
            .topic_arn(&self.commands)
            .send()
            .await
            .unwrap()
            .subscriptions()
            .iter()
            .map(|s| {
                s.endpoint()
                    .unwrap_or_default()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    }

    fn queue_name(&self, instance: &str) -> String {
        format!("{}-{instance}", self.bridge)
    }

    pub fn dead_letter_name(&self) -> String {
        format!("{}-dlq", self.bridge)
    }
}

// ---------------------------------------------------------------------------
// Replicas

/// An in-process replica (fanout or sharded): its queue and a bridge consuming it.
pub(crate) struct InProcess {
    pub bridge: Bridge,
    pub instance: Instance,
}

impl InProcess {
    async fn start(fleet: &Fleet, instance: &str) -> Self {
        Self::start_with(fleet.settings(instance)).await
    }

    pub async fn start_with(mut settings: Settings) -> Self {
        let clients = Clients::from_config(&testkit::moto().sdk_config().await);
        let config = app::config::Config::new(settings.clone()).expect("valid settings");
        let (_, instance) = app::broker::replica::join(&clients, config)
            .await
            .unwrap_or_else(|e| panic!("replica::join failed: {e:#}"));
        let instance = instance.expect("a replica of this mode has a queue of its own");
        settings.command_queue_url = Some(instance.queue_url().to_owned());
        let bridge = Bridge::start(settings).await;
        bridge.wait_until_polling().await;
        Self { bridge, instance }
    }

    pub async fn stop(self) {
        self.bridge.stop().await;
        self.instance.leave().await;
    }
}

/// A replica running the `wsbridge` binary (in fanout mode unless told otherwise).
pub(crate) struct Replica {
    instance: String,
    child: Child,
    port: u16,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    _dir: TempDir,
}

impl Replica {
    async fn spawn(fleet: &Fleet, instance: &str) -> Self {
        Self::spawn_with(fleet, instance, &[]).await
    }

    /// A replica with `env` over the fanout settings (later values win).
    pub async fn spawn_with(fleet: &Fleet, instance: &str, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("scaleout");
        let mut command = wsbridge(dir.path());
        for (name, value) in testkit::moto().env_vars() {
            command.env(name, value);
        }
        command
            .env("BRIDGE_MODE", "fanout")
            .env("BRIDGE_EVENTS_TOPIC_ARN", &fleet.events)
            .env("BRIDGE_COMMANDS_TOPIC_ARN", &fleet.commands)
            .env("BRIDGE_BRIDGE_NAME", &fleet.bridge)
            .env("BRIDGE_INSTANCE_HEARTBEAT_SECS", HEARTBEAT_SECS.to_string())
            .env("BRIDGE_PORT", "0")
            .env("BRIDGE_WORKERS", "1")
            .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
            .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
            .envs(env.iter().copied())
            .arg("serve");
        // An instance id is a fanout setting: a replica of another mode has none.
        let mode = env
            .iter()
            .find(|(name, _)| *name == "BRIDGE_MODE")
            .map_or("fanout", |(_, mode)| *mode);
        if mode == "fanout" && !env.iter().any(|(name, _)| *name == "BRIDGE_INSTANCE_ID") {
            command.env("BRIDGE_INSTANCE_ID", instance);
        }
        let mut child = command.spawn().expect("spawning wsbridge serve");
        let mut lines = stderr_lines(&mut child);
        let mut seen = Vec::new();
        // The binary logs the demo page URL, with the port it bound, once built.
        let port = served_port(&mut lines, &mut seen).await;
        let replica = Self {
            instance: instance.to_owned(),
            child,
            port,
            lines,
            seen,
            _dir: dir,
        };
        let ready = format!("http://127.0.0.1:{port}/ready");
        wait_until(&format!("{instance} ready"), || {
            let ready = ready.clone();
            async move {
                reqwest::get(&ready)
                    .await
                    .is_ok_and(|r| r.status().as_u16() == 200)
            }
        })
        .await;
        replica
    }

    pub async fn connect(&self, client: &str) -> Ws {
        connect(&format!(
            "ws://127.0.0.1:{}/ws?client_id={client}",
            self.port
        ))
        .await
    }

    /// Its log so far, for failure messages.
    fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// SIGKILL: no cleanup at all.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("killed replica did not exit")
            .unwrap();
    }

    /// SIGTERM; fails the test unless it exits 0 within the shutdown deadline.
    pub async fn terminate(mut self) {
        signal(&self.child, "-TERM");
        let limit = Duration::from_secs(SHUTDOWN_SECS + 3);
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit within {limit:?}", self.instance))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(status.code(), Some(0), "{}", self.log());
    }
}

// ---------------------------------------------------------------------------
// Clients

/// Reads exactly `n` Commands from a connection (any order: a standard queue
/// does not keep one), sorted, then checks nothing more arrives.
pub(crate) async fn exactly(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(next_json(ws).await);
    }
    assert_silent(ws, QUIET).await;
    sorted(got)
}

/// Up to `n` Commands from a connection within one deadline for all `n`,
/// sorted (fewer when the deadline passes; the caller checks). In shared
/// mode a Command may bounce between replicas for a while, each bounce a
/// retry delay, so the wait is as long as the odds of a long run of wrong
/// replicas demand.
async fn collect_within(ws: &mut Ws, n: usize, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left).await {
            Some(Next::Text(text)) => got.push(
                serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}")),
            ),
            None => break,
            Some(other) => panic!("expected a Command, got {other:?}"),
        }
    }
    sorted(got)
}

pub(crate) fn sorted(mut commands: Vec<Value>) -> Vec<Value> {
    commands.sort_by_key(|c| c["command"].as_str().unwrap_or_default().to_owned());
    commands
}

/// Waits (bounded) until the server side of a connection is gone; fails the
/// test when a Command arrives instead.
async fn wait_until_dropped(ws: &mut Ws) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("the connection to a killed replica stayed open"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(Message::Text(text)))) => panic!("unexpected frame {text}"),
            Ok(Some(Ok(_))) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// fanout

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_replicas_deliver_each_command_to_every_connection_of_its_client_once() {
    let fleet = Fleet::new("scale-fan").await;
    let replicas = [
        InProcess::start(&fleet, "r0").await,
        InProcess::start(&fleet, "r1").await,
        InProcess::start(&fleet, "r2").await,
    ];
    // Three queues, each subscribed once.
    let expected: Vec<String> = ["r0", "r1", "r2"]
        .iter()
        .map(|i| fleet.queue_name(i))
        .collect();
    assert_eq!(fleet.subscribed().await, expected);

    // One client per replica, a fourth beside r0's, and `shared` with a
    // connection on r1 and another on r2.
    let (a, b, c, d, shared) = (
        client_id("a"),
        client_id("b"),
        client_id("c"),
        client_id("d"),
        client_id("shared"),
    );
    let mut ws_a = replicas[0].bridge.connect(&a).await;
    let mut ws_d = replicas[0].bridge.connect(&d).await;
    let mut ws_b = replicas[1].bridge.connect(&b).await;
    let mut ws_shared_1 = replicas[1].bridge.connect(&shared).await;
    let mut ws_c = replicas[2].bridge.connect(&c).await;
    let mut ws_shared_2 = replicas[2].bridge.connect_path(&shared).await;

    // Two Commands per client, interleaved.
    let mut sent: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut shared_ids = Vec::new();
    for round in 0..2 {
        for client in [&a, &b, &c, &d, &shared] {
            let (command, id) = fleet.publish(client, &format!("cmd-{round}")).await;
            sent.entry(client.as_str()).or_default().push(command);
            if client == &shared {
                shared_ids.push(id);
            }
        }
    }

    let (got_a, got_b, got_c, got_d, got_shared_1, got_shared_2) = tokio::join!(
        exactly(&mut ws_a, 2),
        exactly(&mut ws_b, 2),
        exactly(&mut ws_c, 2),
        exactly(&mut ws_d, 2),
        exactly(&mut ws_shared_1, 2),
        exactly(&mut ws_shared_2, 2),
    );
    assert_eq!(got_a, sorted(sent[a.as_str()].clone()));
    assert_eq!(got_b, sorted(sent[b.as_str()].clone()));
    assert_eq!(got_c, sorted(sent[c.as_str()].clone()));
    assert_eq!(got_d, sorted(sent[d.as_str()].clone()));
    assert_eq!(got_shared_1, sorted(sent[shared.as_str()].clone()));
    assert_eq!(got_shared_2, sorted(sent[shared.as_str()].clone()));

    // Every replica received every Command, forwarded those of its clients
    // (4 each) and dropped the other 6, counting them.
    for (i, replica) in replicas.iter().enumerate() {
        let stats = replica.bridge.stats.clone();
        wait_until(&format!("r{i} settled all 10 Commands"), || {
            let s = stats.downlink.snapshot();
            async move { s.forwarded + s.undeliverable == 10 }
        })
        .await;
        let s = stats.downlink.snapshot();
        assert_eq!(
            (
                s.received,
                s.forwarded,
                s.undeliverable,
                s.released,
                s.duplicate
            ),
            (10, 4, 6, 0, 0),
            "r{i}: {s:?}"
        );
    }

    // SQS delivers at least once: a second copy of a forwarded notification
    // (same SNS MessageId) on both queues of `shared` reaches neither
    // connection again.
    let repeat = envelope(&shared_ids[0], &sent[shared.as_str()][0].to_string());
    for replica in &replicas[1..] {
        fleet.aws.send(replica.instance.queue_url(), &repeat).await;
    }
    for replica in &replicas[1..] {
        let stats = replica.bridge.stats.clone();
        wait_until("the repeat counted as a duplicate", || {
            let s = stats.downlink.snapshot();
            async move { s.duplicate == 1 }
        })
        .await;
    }
    tokio::join!(
        assert_silent(&mut ws_shared_1, QUIET),
        assert_silent(&mut ws_shared_2, QUIET),
    );

    for replica in replicas {
        replica.stop().await;
    }
    // Graceful stops leave only the shared dead-letter queue.
    assert_eq!(fleet.queue_names().await, vec![fleet.dead_letter_name()]);
    assert!(fleet.subscribed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_replicas_clients_carry_on_elsewhere_and_gc_removes_its_queue() {
    let fleet = Fleet::new("scale-kill").await;
    let (r0, r1, r2) = tokio::join!(
        Replica::spawn(&fleet, "r0"),
        Replica::spawn(&fleet, "r1"),
        Replica::spawn(&fleet, "r2"),
    );
    let (k1, k2, steady) = (client_id("k1"), client_id("k2"), client_id("steady"));
    let mut ws_k1 = r2.connect(&k1).await;
    let mut ws_k2 = r2.connect(&k2).await;
    let mut ws_steady = r0.connect(&steady).await;
    let (before, _) = fleet.publish(&k1, "before").await;
    assert_eq!(next_json(&mut ws_k1).await, before);

    let r2_queue = fleet.queue_of("r2").await.expect("r2 has a queue");
    r2.kill().await;
    wait_until_dropped(&mut ws_k1).await;
    wait_until_dropped(&mut ws_k2).await;

    // Its clients reconnect to the other replicas and get what is sent
    // after; the queue left behind (still subscribed) harms no one.
    let mut ws_k1 = r0.connect(&k1).await;
    let mut ws_k2 = r1.connect(&k2).await;
    let (after_1, _) = fleet.publish(&k1, "after-1").await;
    let (after_2, _) = fleet.publish(&k2, "after-2").await;
    let (to_steady, _) = fleet.publish(&steady, "steady").await;
    let (got_1, got_2, got_steady) = tokio::join!(
        exactly(&mut ws_k1, 1),
        exactly(&mut ws_k2, 1),
        exactly(&mut ws_steady, 1),
    );
    assert_eq!(got_1, vec![after_1]);
    assert_eq!(got_2, vec![after_2]);
    assert_eq!(got_steady, vec![to_steady]);
    assert!(fleet.subscribed().await.contains(&fleet.queue_name("r2")));

    // Once r2's heartbeat is STALE_AFTER_SECS old (r0 and r1 keep beating),
    // `wsbridge gc` removes its queue and subscription, and only those.
    let beat: u64 = queue_tags(&fleet.aws.sqs, &r2_queue).await.unwrap()[TAG_HEARTBEAT]
        .parse()
        .unwrap();
    let stale_at = UNIX_EPOCH + Duration::from_secs(beat + STALE_AFTER_SECS);
    if let Ok(wait) = stale_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait + Duration::from_millis(200)).await;
    }
    assert!(now_secs() >= beat + STALE_AFTER_SECS);
    let dir = TempDir::new("scaleout-gc");
    let mut gc = wsbridge(dir.path());
    for (name, value) in testkit::moto().env_vars() {
        gc.env(name, value);
    }
    gc.env("BRIDGE_COMMANDS_TOPIC_ARN", &fleet.commands)
        .env("BRIDGE_BRIDGE_NAME", &fleet.bridge)
        .args(["gc", "--stale-after-secs", &STALE_AFTER_SECS.to_string()])
        .stdin(Stdio::null());
    let output = tokio::time::timeout(PATIENCE, gc.output())
        .await
        .expect("wsbridge gc did not finish")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    let removed: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        removed,
        vec![format!(
            "removed {r2_queue} (instance r2, 1 subscription(s))"
        )],
        "{stderr}"
    );
    assert!(fleet.queue_of("r2").await.is_none());
    let live = vec![fleet.queue_name("r0"), fleet.queue_name("r1")];
    assert_eq!(fleet.subscribed().await, live);
    let mut with_dlq = live.clone();
    with_dlq.push(fleet.dead_letter_name());
    with_dlq.sort();
    assert_eq!(fleet.queue_names().await, with_dlq);

    // Publishing still works (the subscription went before the queue).
    let (last, _) = fleet.publish(&k1, "after-gc").await;
    assert_eq!(exactly(&mut ws_k1, 1).await, vec![last]);

    drop((ws_k1, ws_k2, ws_steady));
    tokio::join!(r0.terminate(), r1.terminate());
    assert_eq!(fleet.queue_names().await, vec![fleet.dead_letter_name()]);
    assert!(fleet.subscribed().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigtermed_replica_leaves_no_queue_or_subscription_behind() {
    let fleet = Fleet::new("scale-term").await;
    let (r0, r1) = tokio::join!(Replica::spawn(&fleet, "r0"), Replica::spawn(&fleet, "r1"));
    let both = vec![fleet.queue_name("r0"), fleet.queue_name("r1")];
    assert_eq!(fleet.subscribed().await, both);
    let (moving, staying) = (client_id("moving"), client_id("staying"));
    let mut ws_moving = r1.connect(&moving).await;
    let mut ws_staying = r0.connect(&staying).await;

    r1.terminate().await;
    // Its client was told the server is going away (1001)…
    match next_frame(&mut ws_moving, PATIENCE).await {
        Some(Next::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    // …its queue and subscription are gone, r0's are not.
    assert!(fleet.queue_of("r1").await.is_none());
    assert_eq!(fleet.subscribed().await, vec![fleet.queue_name("r0")]);
    assert_eq!(
        fleet.queue_names().await,
        vec![fleet.dead_letter_name(), fleet.queue_name("r0")]
    );

    // The client reconnects to r0 and gets what is sent after.
    let mut ws_moving = r0.connect(&moving).await;
    let (to_moving, _) = fleet.publish(&moving, "moved").await;
    let (to_staying, _) = fleet.publish(&staying, "stayed").await;
    let (got_moving, got_staying) =
        tokio::join!(exactly(&mut ws_moving, 1), exactly(&mut ws_staying, 1));
    assert_eq!(got_moving, vec![to_moving]);
    assert_eq!(got_staying, vec![to_staying]);

    drop((ws_moving, ws_staying));
    r0.terminate().await;
    assert_eq!(fleet.queue_names().await, vec![fleet.dead_letter_name()]);
    assert!(fleet.subscribed().await.is_empty());
}

/// The Command inside an ack-mode frame, and its delivery id.
fn ack_mode(frame: &Value) -> (Value, String) {
    let id = frame["delivery_id"]
        .as_str()
        .unwrap_or_else(|| panic!("not an ack-mode frame: {frame}"));
    (frame["command"].clone(), id.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fanout_replica_shutting_down_hands_its_unacknowledged_commands_back_to_the_fleet() {
    let fleet = Fleet::new("scale-handback").await;
    // `drop` (fanout's default) for Commands of absent clients; a handed
    // back one waits 1 s between attempts, for up to 4 s from its send.
    let settings = |instance: &str| {
        let mut settings = fleet.settings(instance);
        settings.retry_delay_secs = 1;
        settings.retry_window_secs = 4;
        settings.ack_timeout_secs = 60;
        settings
    };
    let a = InProcess::start_with(settings("a")).await;
    let b = InProcess::start_with(settings("b")).await;
    let c = InProcess::start_with(settings("c")).await;
    let (b_stats, c_stats) = (b.bridge.stats.clone(), c.bridge.stats.clone());
    let client = client_id("moving");
    let path = format!("/ws/{client}?ack=true");

    // Handed to the client at A, not acknowledged; B and C drop their copies.
    let mut ws = connect(&a.bridge.ws_url(&path)).await;
    let (sent, _) = fleet.publish(&client, "unlock").await;
    assert_eq!(ack_mode(&next_json(&mut ws).await).0, sent);
    for stats in [&b_stats, &c_stats] {
        wait_until("the other replicas dropped their copies", || {
            let s = stats.downlink.snapshot();
            async move { s.undeliverable == 1 }
        })
        .await;
    }

    // A shuts down gracefully: its client is told it is going away (1001).
    let a_stats = a.bridge.stats.clone();
    let (_, closed) = tokio::join!(a.stop(), next_frame(&mut ws, PATIENCE));
    match closed {
        Some(Next::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    assert_eq!(a_stats.downlink.snapshot().ack_released, 1);
    assert!(fleet.queue_of("a").await.is_none());

    // The client reconnects to B and gets the Command there, as an ack-mode
    // frame, once.
    let mut ws = connect(&b.bridge.ws_url(&path)).await;
    let (got, delivery) = ack_mode(&next_json(&mut ws).await);
    assert_eq!(got, sent);
    send_text(&mut ws, &json!({"ack_delivery": delivery}).to_string()).await;
    assert_silent(&mut ws, QUIET).await;
    let b_queue = b.instance.queue_url().to_owned();
    assert_eq!(
        fleet.aws.wait_for_counts(&b_queue, (0, 0), PATIENCE).await,
        (0, 0)
    );
    let s = b_stats.downlink.snapshot();
    assert_eq!((s.forwarded, s.acknowledged_by_client), (1, 1), "{s:?}");

    // C, without the client, waited for it and drops its copy once the
    // window is over; nothing reaches the dead-letter queue.
    wait_until("C dropped the handed-back copy after its window", || {
        let s = c_stats.downlink.snapshot();
        async move { s.undeliverable == 2 }
    })
    .await;
    let s = c_stats.downlink.snapshot();
    assert!(s.released >= 1, "C did not wait for the client: {s:?}");
    assert_eq!((s.forwarded, s.dead_lettered), (0, 0), "{s:?}");
    let c_queue = c.instance.queue_url().to_owned();
    assert_eq!(
        fleet.aws.wait_for_counts(&c_queue, (0, 0), PATIENCE).await,
        (0, 0)
    );
    let dlq = fleet
        .queue_of("dlq")
        .await
        .expect("the fleet's dead-letter queue");
    assert_eq!(fleet.aws.queue_counts(&dlq).await, (0, 0));

    drop(ws);
    b.stop().await;
    c.stop().await;
}

// ---------------------------------------------------------------------------
// shared

/// The answer delay of every SQS call of the shared-mode replicas.
const SQS_ROUND_TRIP: Duration = Duration::from_millis(20);

/// How long the clients of a shared-mode fleet wait for all their Commands.
/// With 3 replicas and a 1 s retry delay, 40 s is about 30 attempts: the odds
/// that one of a test's 12 Commands meets the wrong replica every time are
/// about 12 × (2/3)^30 ≈ 6e-5.
const SHARED_PATIENCE: Duration = Duration::from_secs(40);

/// What a shared-mode fleet did with one run of Commands.
struct SharedRun {
    commands: u64,
    /// Per replica.
    snapshots: Vec<domain::stats::DownlinkSnapshot>,
}

impl SharedRun {
    fn received(&self) -> u64 {
        self.snapshots.iter().map(|s| s.received).sum()
    }

    fn released(&self) -> u64 {
        self.snapshots.iter().map(|s| s.released).sum()
    }

    fn report(&self) {
        let replicas = self.snapshots.len();
        for (i, s) in self.snapshots.iter().enumerate() {
            eprintln!(
                "shared mode, {replicas} replicas: r{i} received {} released {} forwarded {} duplicate {}",
                s.received, s.released, s.forwarded, s.duplicate
            );
        }
        eprintln!(
            "shared mode, {replicas} replicas, {} Commands: {} receives ({:.2} per Command), \
             {} released ({:.2} per Command)",
            self.commands,
            self.received(),
            self.received() as f64 / self.commands as f64,
            self.released(),
            self.released() as f64 / self.commands as f64
        );
    }
}

/// `replicas` in-process bridges in shared mode on one queue, one client on
/// each, `per_client` Commands for every client published to the commands
/// topic; checks each client gets exactly its Commands and every receive
/// was either a forward or a release; returns the counters.
async fn run_shared_fleet(replicas: usize, per_client: usize, patience: Duration) -> SharedRun {
    // Releases count as receives: keep the dead-letter queue out of the way.
    let env = Env::new(1000).await;
    // Every SQS call answered 20 ms late, like a real round trip: it paces
    // the short polls below (about 40 a second per replica, not hundreds).
    let proxy = FaultProxy::start(testkit::moto().endpoint());
    proxy.set(Fault::DelayResponse(SQS_ROUND_TRIP));
    let config = proxy.sdk_config().await;
    let mut bridges = Vec::new();
    for _ in 0..replicas {
        let mut settings = env.settings();
        settings.retry_delay_secs = 1;
        // Retries within the 60 s window count as receives.
        settings.max_receive_count = 100;
        // Short polls. moto wakes a waiting long poll only for a new message
        // or on its 1 s timer, so a released message goes back, almost every
        // time, to the poller that released it (it asks again at once and is
        // the first to look after the 1 s delay): a Command can bounce on
        // the wrong replica for minutes. Polling without a wait spreads it
        // the way a queue that favours no one would.
        settings.receive_wait_secs = 0;
        settings.pollers = 1;
        // Never given up while the clients still wait.
        settings.retry_window_secs = patience.as_secs() + 30;
        // A client that has all its Commands stops reading (and answering
        // pings) while the others wait for theirs.
        settings.heartbeat_secs = patience.as_secs() + 60;
        settings.client_timeout_secs = 2 * settings.heartbeat_secs;
        let bridge = Bridge::start_with(settings, &config).await;
        bridge.wait_until_polling().await;
        bridges.push(bridge);
    }
    let clients: Vec<String> = (0..replicas)
        .map(|i| client_id(&format!("held-by-{i}")))
        .collect();
    let mut sockets = Vec::new();
    for (bridge, client) in bridges.iter().zip(&clients) {
        sockets.push(bridge.connect(client).await);
    }

    let mut sent: Vec<Vec<Value>> = vec![Vec::new(); replicas];
    for n in 0..per_client {
        for (i, client) in clients.iter().enumerate() {
            let command = command(client, &format!("cmd-{n}"));
            env.aws
                .publish(
                    &env.infra.commands_topic_arn,
                    &command.to_string(),
                    &[("client_id", client)],
                )
                .await;
            sent[i].push(command);
        }
    }

    // Each client gets its Commands once, wherever they were received first.
    let got = futures_util::future::join_all(
        sockets
            .iter_mut()
            .map(|ws| collect_within(ws, per_client, patience)),
    )
    .await;
    if got.iter().any(|g| g.len() < per_client) {
        let snapshots: Vec<_> = bridges
            .iter()
            .map(|b| b.stats.downlink.snapshot())
            .collect();
        let counts = env.aws.queue_counts(&env.infra.command_queue_url).await;
        let short: Vec<(usize, usize)> = got.iter().map(Vec::len).enumerate().collect();
        panic!(
            "(replica, Commands its client got of {per_client}): {short:?} within {patience:?}; \
             queue (visible, in flight) {counts:?}; counters {snapshots:#?}"
        );
    }
    for (i, got) in got.into_iter().enumerate() {
        assert_eq!(got, sorted(sent[i].clone()), "client of r{i}");
    }
    // Exactly once: nothing more arrives.
    futures_util::future::join_all(sockets.iter_mut().map(|ws| assert_silent(ws, QUIET))).await;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));

    // Every receive ended one way: forwarded here, or released for another
    // replica (nothing given up, nothing malformed).
    let commands = (replicas * per_client) as u64;
    let stats: Vec<_> = bridges.iter().map(|r| r.stats.clone()).collect();
    wait_until("every receive settled", || {
        let snaps: Vec<_> = stats.iter().map(|s| s.downlink.snapshot()).collect();
        async move {
            snaps.iter().map(|s| s.forwarded).sum::<u64>() == commands
                && snaps
                    .iter()
                    .all(|s| s.received == s.forwarded + s.released + s.duplicate)
        }
    })
    .await;
    let snapshots: Vec<_> = stats.iter().map(|s| s.downlink.snapshot()).collect();
    for (i, s) in snapshots.iter().enumerate() {
        assert_eq!(s.forwarded, per_client as u64, "r{i}: {s:?}");
        assert_eq!((s.undeliverable, s.malformed), (0, 0), "r{i}: {s:?}");
    }
    for bridge in bridges {
        bridge.stop().await;
    }
    SharedRun {
        commands,
        snapshots,
    }
}

/// Shared mode with several replicas. `SCALEOUT_REPLICAS=1,2,3,4,5,6` and
/// `SCALEOUT_PER_CLIENT=10` turn it into the measurement of docs/scaling.md
/// (receives per Command against fleet size); run it with `--no-capture` to
/// see the table. The default is one fleet of 3 with 4 Commands per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mode_releases_commands_for_clients_held_by_other_replicas() {
    let per_client: usize = std::env::var("SCALEOUT_PER_CLIENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let sizes: Vec<usize> = std::env::var("SCALEOUT_REPLICAS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![3]);
    let mut rows = Vec::new();
    for replicas in sizes {
        let patience = if replicas == 3 && per_client == 4 {
            SHARED_PATIENCE
        } else {
            // About 30 attempts per Command (1 s retry delay) and more.
            Duration::from_secs(30 * replicas as u64)
        };
        let run = run_shared_fleet(replicas, per_client, patience).await;
        run.report();
        if replicas > 1 {
            // A Command lands first at the wrong replica times in R, so
            // among a dozen at least one is released (all landing right the
            // first time has odds of about 1 in 500 000 at R = 3).
            assert!(run.released() >= 1, "{:?}", run.snapshots);
        }
        // Every receive was a forward or a release: nothing given up.
        assert_eq!(run.received(), run.commands + run.released());
        let busiest = run.snapshots.iter().map(|s| s.received).max().unwrap_or(0);
        rows.push(format!(
            "| {replicas} | {} | {} | {:.2} | {:.2} | {busiest} |",
            run.commands,
            run.received(),
            run.received() as f64 / run.commands as f64,
            run.released() as f64 / run.commands as f64,
        ));
    }
    eprintln!("| replicas | Commands | receives | receives per Command | releases per Command | most receives on one replica |");
    eprintln!("|---|---|---|---|---|---|");
    for row in rows {
        eprintln!("{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaving_with_sqs_unreachable_gives_up_after_a_bound_and_leaves_the_queue_to_gc() {
    let fleet = Fleet::new("scale-leave").await;
    let proxy = FaultProxy::start(testkit::moto().endpoint());
    let clients = Clients::from_config(&proxy.sdk_config().await);
    let config = app::config::Config::new(fleet.settings("stuck")).expect("valid settings");
    let (_, instance) = app::broker::replica::join(&clients, config).await.unwrap();
    let instance = instance.expect("fanout mode has a queue of its own");

    proxy.set(Fault::BlackHole);
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), instance.leave())
        .await
        .expect("leave() is bounded");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(9), "gave up early: {took:?}");
    // The queue is still there, for `wsbridge gc`.
    proxy.heal();
    assert!(fleet.queue_of("stuck").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_queue_is_collected_while_it_runs_makes_it_again() {
    let fleet = Fleet::new("scale-rejoin").await;
    let mut settings = fleet.settings("alive");
    settings.instance_heartbeat_secs = 1;
    let replica = InProcess::start_with(settings).await;
    let client = client_id("rejoin");
    let mut ws = replica.bridge.connect(&client).await;

    // A gc run with a zero threshold takes the live replica's queue.
    let removed = adapters_aws::fanout::collect_garbage(
        &fleet.aws.sqs,
        &fleet.aws.sns,
        &fleet.bridge,
        &fleet.commands,
        Duration::ZERO,
        adapters_aws::fanout::GcScope::Instances,
    )
    .await
    .unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(fleet.subscribed().await.is_empty());

    // The next heartbeat finds it gone and makes queue and subscription again.
    wait_until("the queue is subscribed again", || async {
        fleet.subscribed().await == vec![fleet.queue_name("alive")]
    })
    .await;
    let (sent, _) = fleet.publish(&client, "after-gc").await;
    assert_eq!(exactly(&mut ws, 1).await, vec![sent]);

    drop(ws);
    replica.stop().await;
    // It leaves the re-made queue and subscription behind no more than the first.
    assert_eq!(fleet.queue_names().await, vec![fleet.dead_letter_name()]);
    assert!(fleet.subscribed().await.is_empty());
}
