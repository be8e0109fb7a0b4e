//! Sharded mode on one moto (docs/scaling.md): each replica owns a
//! range of shards, its queue's subscription takes exactly that range's
//! Commands, clients of other ranges are refused with 421, and the range's
//! queue outlives a stop so that the next owner gets what was published
//! meanwhile.

use std::collections::BTreeMap;

use adapters_aws::tools;
use app::config::{Mode, Settings};
use domain::{shard_of, ClientId, ShardRange};
use serde_json::Value;

use crate::scaleout::{exactly, sorted, Fleet, InProcess, Replica};
use crate::security::assert_refused;
use crate::support::{assert_silent, client_id, command, wait_until, Ws, PATIENCE, QUIET};

/// Few shards, so that test client ids land in every range.
const SHARDS: u32 = 8;

fn settings(fleet: &Fleet, owner: &str) -> Settings {
    let mut settings = fleet.settings("unused");
    settings.mode = Mode::Sharded;
    settings.instance_id = None;
    settings.shards = SHARDS;
    settings.shard_owner = Some(owner.to_owned());
    settings.retry_delay_secs = 1;
    // Retries within the 60 s window count as receives.
    settings.max_receive_count = 100;
    settings
}

/// A fresh client id whose shard is in `range`.
fn client_in(range: &ShardRange) -> String {
    loop {
        let id = client_id("sh");
        if range.contains(shard_of(&ClientId::parse(id.as_str()).unwrap(), SHARDS)) {
            return id;
        }
    }
}

fn owned(index: u32, replicas: u32) -> ShardRange {
    ShardRange::of_replica(index, replicas, SHARDS).unwrap()
}

/// Publishes a Command as a sharded fleet's publishers do: with its `shard`
/// among `shards`.
async fn publish(fleet: &Fleet, client: &str, name: &str, shards: u32) -> Value {
    let sent = command(client, name);
    tools::publish_to_topic(
        &fleet.aws.sns,
        &fleet.commands,
        &sent.to_string(),
        &ClientId::parse(client).unwrap(),
        Some(shards),
    )
    .await
    .unwrap();
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sharded_replica_receives_only_its_ranges_commands() {
    let fleet = Fleet::new("shard-fleet").await;
    let mut replicas = Vec::new();
    for index in 0..3 {
        replicas.push(InProcess::start_with(settings(&fleet, &format!("{index}/3"))).await);
    }
    // One queue per range, each subscribed once.
    let mut expected: Vec<String> = (0..3)
        .map(|i| {
            let range = owned(i, 3);
            format!(
                "{}-s{SHARDS}-{}-{}",
                fleet.bridge,
                range.start(),
                range.end()
            )
        })
        .collect();
    expected.sort();
    assert_eq!(fleet.subscribed().await, expected);

    // Two clients on each replica, the first of replica 1 with two connections.
    let mut clients: Vec<(usize, String)> = Vec::new();
    for index in 0..3 {
        for _ in 0..2 {
            clients.push((index, client_in(&owned(index as u32, 3))));
        }
    }
    let mut sockets: Vec<(String, Ws)> = Vec::new();
    for (index, client) in &clients {
        sockets.push((
            client.clone(),
            replicas[*index].bridge.connect(client).await,
        ));
    }
    let twice = clients[2].1.clone();
    sockets.push((twice.clone(), replicas[1].bridge.connect_path(&twice).await));

    // A client of replica 0's range is refused by the others, by both URL forms.
    let stray = &clients[0].1;
    for replica in &replicas[1..] {
        for path in [format!("/ws?client_id={stray}"), format!("/ws/{stray}")] {
            assert_refused(
                &replica.bridge.ws_url(&path),
                &[],
                421,
                "misdirected_client",
            )
            .await;
        }
    }
    let metrics = reqwest::get(replicas[1].bridge.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wsbridge_upgrades_refused_total{reason=\"misdirected_client\"} 2\n"),
        "{metrics}"
    );

    // Two Commands per client; and one without a shard, which no range takes.
    let mut sent: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for round in 0..2 {
        for (_, client) in &clients {
            let command = publish(&fleet, client, &format!("cmd-{round}"), SHARDS).await;
            sent.entry(client.clone()).or_default().push(command);
        }
    }
    let unsharded = command(stray, "no-shard").to_string();
    fleet
        .aws
        .publish(&fleet.commands, &unsharded, &[("client_id", stray)])
        .await;

    let got = futures_util::future::join_all(
        sockets
            .iter_mut()
            .map(|(client, ws)| async move { (client.clone(), exactly(ws, 2).await) }),
    )
    .await;
    for (client, commands) in got {
        assert_eq!(commands, sorted(sent[&client].clone()), "{client}");
    }

    // No replica received another range's Command, nor the unsharded one:
    // 2 clients × 2 Commands each, all forwarded.
    for (i, replica) in replicas.iter().enumerate() {
        let stats = replica.bridge.stats.clone();
        wait_until(&format!("r{i} forwarded its 4 Commands"), || {
            let s = stats.downlink.snapshot();
            async move { s.forwarded == 4 }
        })
        .await;
    }
    tokio::time::sleep(QUIET).await;
    for (i, replica) in replicas.iter().enumerate() {
        let s = replica.bridge.stats.downlink.snapshot();
        assert_eq!(
            (s.received, s.forwarded, s.undeliverable, s.released),
            (4, 4, 0, 0),
            "r{i}: {s:?}"
        );
    }

    for replica in replicas {
        replica.stop().await;
    }
    // Stopping keeps the range queues and their subscriptions.
    assert_eq!(fleet.subscribed().await, expected);
    let mut names = expected.clone();
    names.push(fleet.dead_letter_name());
    names.sort();
    assert_eq!(fleet.queue_names().await, names);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_owner_delivers_what_was_published_while_it_was_down() {
    let fleet = Fleet::new("shard-restart").await;
    let env = [
        ("BRIDGE_MODE", "sharded"),
        ("BRIDGE_SHARDS", "8"),
        ("BRIDGE_SHARD_OWNER", "0/1"),
        ("BRIDGE_RETRY_DELAY_SECS", "1"),
        ("BRIDGE_MAX_RECEIVE_COUNT", "100"),
    ];
    let queue = format!("{}-s8-0-8", fleet.bridge);
    let client = client_id("restart");

    let first = Replica::spawn_with(&fleet, "first", &env).await;
    let mut ws = first.connect(&client).await;
    let before = publish(&fleet, &client, "before", SHARDS).await;
    assert_eq!(exactly(&mut ws, 1).await, vec![before]);

    first.terminate().await;
    // SIGTERM leaves the range's queue and subscription in place…
    assert_eq!(fleet.subscribed().await, vec![queue.clone()]);
    assert_eq!(
        fleet.queue_names().await,
        vec![fleet.dead_letter_name(), queue.clone()]
    );
    // …so what is published while no replica runs waits in it.
    let meanwhile = publish(&fleet, &client, "meanwhile", SHARDS).await;

    let second = Replica::spawn_with(&fleet, "second", &env).await;
    let mut ws = second.connect(&client).await;
    // Received before the client was back, it is retried until it is.
    let got = crate::support::next_frame(&mut ws, PATIENCE).await;
    match got {
        Some(crate::support::Next::Text(text)) => {
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), meanwhile)
        }
        other => panic!("expected the Command published meanwhile, got {other:?}"),
    }
    assert_silent(&mut ws, QUIET).await;
    drop(ws);
    second.terminate().await;
}

/// nginx, as scripts/test.sh installs it (Debian's nginx-light), or WSBRIDGE_NGINX.
fn nginx_binary() -> std::path::PathBuf {
    crate::browser::find_executable("WSBRIDGE_NGINX", &["nginx"])
        .or_else(|| Some(std::path::PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "the sharded-routing test needs nginx: `apt-get install nginx-light` \
                 (scripts/test.sh does it when it can), or set WSBRIDGE_NGINX"
            )
        })
}

/// nginx in the foreground on `port`, routing `/ws` with the `upstream`
/// block `wsbridge shards` prints; killed when dropped.
struct Nginx {
    child: tokio::process::Child,
    dir: crate::support::TempDir,
}

impl Nginx {
    async fn start(port: u16, routing: &str) -> Self {
        let dir = crate::support::TempDir::new("nginx");
        let root = dir.path().display().to_string();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n    access_log off;\n    client_body_temp_path {root}/body;\n    proxy_temp_path {root}/proxy;\n\
             {routing}\n    server {{\n        listen 127.0.0.1:{port};\n        location /ws {{\n\
             proxy_pass http://wsbridge;\n            proxy_http_version 1.1;\n\
             proxy_set_header Upgrade $http_upgrade;\n            proxy_set_header Connection \"upgrade\";\n\
             proxy_next_upstream off;\n        }}\n    }}\n}}\n"
        );
        dir.write("nginx.conf", &conf);
        let child = tokio::process::Command::new(nginx_binary())
            .args(["-p", &root, "-e", &format!("{root}/error.log"), "-c"])
            .arg(dir.path().join("nginx.conf"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawning nginx");
        let nginx = Self { child, dir };
        let address = format!("127.0.0.1:{port}");
        wait_until("nginx listening", || {
            let address = address.clone();
            async move { tokio::net::TcpStream::connect(&address).await.is_ok() }
        })
        .await;
        nginx
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Nginx {
    async fn stop(mut self) {
        self.terminate();
        let _ = tokio::time::timeout(PATIENCE, self.child.wait()).await;
    }

    /// SIGTERM to the master, which stops its workers (SIGKILL would orphan them).
    fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Nginx {
    /// Also when a failing test unwinds past `stop`.
    fn drop(&mut self) {
        self.terminate();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_the_printed_upstream_routes_every_client_to_its_shards_owner() {
    const FLEET_SHARDS: u32 = 4096;
    let fleet = Fleet::new("shard-nginx").await;
    let mut replicas = Vec::new();
    for index in 0..3 {
        let mut settings = settings(&fleet, &format!("{index}/3"));
        settings.shards = FLEET_SHARDS;
        replicas.push(InProcess::start_with(settings).await);
    }
    let servers: Vec<String> = replicas
        .iter()
        .map(|r| format!("127.0.0.1:{}", r.bridge.port))
        .collect();
    let routing = app::cli::shards::nginx(FLEET_SHARDS, 3, &servers).unwrap();
    let port = crate::browser::free_port();
    let nginx = Nginx::start(port, &routing).await;

    // Random client ids, half by query and half by path: every one is
    // upgraded (a non-owner would answer 421) and receives its Command.
    let mut clients = Vec::new();
    for i in 0..30 {
        let client = client_id("ng");
        let path = if i % 2 == 0 {
            format!("/ws?client_id={client}")
        } else {
            format!("/ws/{client}")
        };
        let url = format!("ws://127.0.0.1:{port}{path}");
        let ws = match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => ws,
            Err(e) => panic!("{url}: {e}\nnginx: {}", nginx.error_log()),
        };
        clients.push((client, ws));
    }
    let mut expected = Vec::new();
    for (client, _) in &clients {
        expected.push(publish(&fleet, client, "routed", FLEET_SHARDS).await);
    }
    let got = futures_util::future::join_all(
        clients
            .iter_mut()
            .map(|(client, ws)| async move { (client.clone(), exactly(ws, 1).await) }),
    )
    .await;
    for ((client, commands), sent) in got.into_iter().zip(expected) {
        assert_eq!(commands, vec![sent], "{client}");
    }
    // Spread over the three owners, each receiving only its own.
    let forwarded: Vec<u64> = replicas
        .iter()
        .map(|r| r.bridge.stats.downlink.snapshot().forwarded)
        .collect();
    assert_eq!(forwarded.iter().sum::<u64>(), 30, "{forwarded:?}");
    assert!(forwarded.iter().all(|&n| n > 0), "{forwarded:?}");
    for replica in &replicas {
        let s = replica.bridge.stats.downlink.snapshot();
        assert_eq!((s.received, s.released), (s.forwarded, 0), "{s:?}");
    }
    drop(clients);
    nginx.stop().await;
    for replica in replicas {
        replica.stop().await;
    }
}
