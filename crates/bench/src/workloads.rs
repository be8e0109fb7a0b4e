//! The workloads W1–W6 of issue 5, each bounded in count and time, against
//! the raw baseline and the real `wsbridge` binary.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_aws::bootstrap::{self, Infrastructure, Plan};
use anyhow::{anyhow, Context};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde_json::{json, Value};
use testkit::Aws;

use crate::clients::{self, ClientSpec, Fleet, Seen, StormSpec};
use crate::frames;
use crate::hist::Histogram;
use crate::procfs::{KernelMemory, Probe};
use crate::report::{round, Check, Report, Row};
use crate::servers::{self, Baseline, Bridge, Measured, Stub};

/// Connections per client worker process (fds and ports stay far from the limits).
const PER_WORKER: usize = 5000;
const MIB: f64 = 1024.0;

/// What the run shares between workloads.
pub struct Ctx {
    /// Tiny sizes, seconds in all.
    pub smoke: bool,
    /// The `wsbridge` binary.
    pub bin: PathBuf,
    /// Where logs go (`target/bench/logs`).
    pub log_dir: PathBuf,
    /// Latency of every stub call (ms).
    pub latency_ms: u64,
    /// Pollers of the bridge (`BRIDGE_POLLERS`); `None`: its default.
    pub pollers: Option<usize>,
    /// A command line the bridge runs under (e.g. valgrind), empty: none.
    pub wrap: Vec<String>,
    /// W4's rates, instead of the default ladder.
    pub rates: Option<Vec<f64>>,
    /// W1's connection counts, instead of 1k, 5k, 15k.
    pub sizes: Option<Vec<usize>>,
    /// Passes per W4 rate (default 3; 1 in smoke mode).
    pub passes: Option<usize>,
    /// Connect storms in W2 (default 2).
    pub storms: Option<usize>,
    /// Only the bridge, no baseline (W1, W2, W4, W4b).
    pub bridge_only: bool,
    /// The results so far.
    pub report: Report,
    stub: Option<(Stub, Aws)>,
    next_ip: u8,
    names: u32,
}

/// The server a workload runs against.
pub enum Server {
    /// The raw baseline.
    Baseline(Baseline),
    /// The bridge, and the resources it reads.
    Bridge(Bridge, Infrastructure),
}

impl Server {
    fn label(&self) -> &'static str {
        match self {
            Self::Baseline(_) => "baseline",
            Self::Bridge(..) => "wsbridge",
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Baseline(b) => b.url(),
            Self::Bridge(b, _) => b.url(),
        }
    }

    fn path(&self) -> &'static str {
        match self {
            Self::Baseline(_) => "/{id}",
            Self::Bridge(..) => "/ws?client_id={id}",
        }
    }

    fn probe(&self) -> Probe {
        match self {
            Self::Baseline(b) => b.probe(),
            Self::Bridge(b, _) => b.probe(),
        }
    }

    async fn connections(&mut self) -> anyhow::Result<u64> {
        match self {
            Self::Baseline(b) => b.connections().await,
            Self::Bridge(b, _) => Ok(b.metric("wsbridge_open_connections").await? as u64),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Baseline(b) => {
                drop(b);
                Ok(())
            }
            Self::Bridge(b, _) => b.stop().await,
        }
    }
}

/// Which server to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Baseline,
    Bridge,
}

/// A measured push of Commands.
struct Outcome {
    /// From the start to the last frame (at least the push's duration).
    span: Duration,
    commands: u64,
    seen: Seen,
    elapsed: Duration,
    cpu_secs: f64,
    loadgen_cpu_secs: f64,
    stub_cpu_secs: f64,
}

/// The maximum resident memory of a process, sampled every 100 ms.
struct Sampler {
    max_kib: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(probe: Probe) -> Self {
        let max_kib = Arc::new(AtomicU64::new(probe.read().rss_kib));
        let max = max_kib.clone();
        let task = tokio::spawn(async move {
            loop {
                max.fetch_max(probe.read().rss_kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { max_kib, task }
    }

    fn stop(self) -> u64 {
        self.max_kib.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Tasks aborted when this is dropped, on every path out of a workload.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn ms(us: Option<u64>) -> Value {
    us.map_or(Value::Null, |us| round(us as f64 / 1000.0, 2))
}

fn mib(kib: u64) -> Value {
    round(kib as f64 / MIB, 1)
}

impl Ctx {
    /// A context; nothing started yet.
    pub fn new(smoke: bool, bin: PathBuf, log_dir: PathBuf, latency_ms: u64) -> Self {
        Self {
            smoke,
            bin,
            log_dir,
            latency_ms,
            pollers: None,
            wrap: Vec::new(),
            rates: None,
            sizes: None,
            passes: None,
            storms: None,
            bridge_only: false,
            report: Report::default(),
            stub: None,
            next_ip: 10,
            names: 0,
        }
    }

    /// Stops what the context started.
    pub async fn finish(&mut self) {
        self.stub = None;
    }

    fn source_ip(&mut self) -> IpAddr {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, self.next_ip));
        self.next_ip = if self.next_ip >= 250 {
            10
        } else {
            self.next_ip + 1
        };
        ip
    }

    fn name(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("bench-{prefix}-{}-{}", std::process::id(), self.names)
    }

    async fn stub(&mut self) -> anyhow::Result<&(Stub, Aws)> {
        if self.stub.is_none() {
            let stub = Stub::start(self.latency_ms).await?;
            let aws = Aws::new(testkit::sdk_config_at(&stub.endpoint).await);
            self.stub = Some((stub, aws));
        }
        self.stub.as_ref().ok_or_else(|| anyhow!("no stub"))
    }

    /// Fresh resources for one bridge on `aws`.
    async fn infra(&mut self, aws: &Aws, prefix: &str) -> anyhow::Result<Infrastructure> {
        let plan = Plan {
            events_topic: self.name(&format!("{prefix}-events")),
            commands_topic: self.name(&format!("{prefix}-commands")),
            command_queue: self.name(&format!("{prefix}-queue")),
            max_receive_count: 100,
        };
        bootstrap::ensure(&aws.sqs, &aws.sns, &plan)
            .await
            .map_err(|e| anyhow!("bootstrap: {e}"))
    }

    fn bridge_env(
        &self,
        endpoint: &str,
        infra: &Infrastructure,
        extra: &[(&str, String)],
    ) -> Vec<(String, String)> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut env: Vec<(String, String)> = testkit::env_vars_at(endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let settings = [
            ("BRIDGE_HOST", "127.0.0.1".to_owned()),
            (
                "BRIDGE_CONFIG_DIR",
                root.join("config").display().to_string(),
            ),
            ("BRIDGE_COMMAND_QUEUE_URL", infra.command_queue_url.clone()),
            ("BRIDGE_EVENTS_TOPIC_ARN", infra.events_topic_arn.clone()),
            (
                "BRIDGE_COMMANDS_TOPIC_ARN",
                infra.commands_topic_arn.clone(),
            ),
            ("BRIDGE_UNDELIVERABLE", "drop".to_owned()),
            ("BRIDGE_MAX_CONNECTIONS", "100000".to_owned()),
            ("BRIDGE_MAX_CONNECTIONS_PER_IP", "100000".to_owned()),
            ("BRIDGE_MAX_CONNECTIONS_PER_CLIENT", "1000".to_owned()),
            ("BRIDGE_MESSAGE_RATE_PER_SEC", "100000".to_owned()),
            ("BRIDGE_MESSAGE_BURST", "100000".to_owned()),
            ("BRIDGE_SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
            ("BRIDGE_LOG_FORMAT", "text".to_owned()),
        ];
        env.extend(settings.into_iter().map(|(k, v)| (k.to_owned(), v)));
        if let Some(pollers) = self.pollers {
            env.push(("BRIDGE_POLLERS".into(), pollers.to_string()));
        }
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    }

    async fn start_bridge_at(
        &mut self,
        endpoint: &str,
        infra: &Infrastructure,
        name: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Bridge> {
        let env = self.bridge_env(endpoint, infra, extra);
        let log_name = format!("{name}-{}", self.names);
        Bridge::start(&self.wrap, &self.bin, &env, &self.log_dir, &log_name).await
    }

    async fn start(
        &mut self,
        kind: Kind,
        name: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        match kind {
            Kind::Baseline => Ok(Server::Baseline(Baseline::start().await?)),
            Kind::Bridge => {
                let (endpoint, aws) = {
                    let (stub, aws) = self.stub().await?;
                    (stub.endpoint.clone(), aws.clone())
                };
                let infra = self.infra(&aws, name).await?;
                let bridge = self.start_bridge_at(&endpoint, &infra, name, extra).await?;
                Ok(Server::Bridge(bridge, infra))
            }
        }
    }

    /// Client specs for `ids` distinct ids × `sockets` each, split over workers.
    fn specs(
        &mut self,
        target: &Server,
        prefix: &str,
        ids: usize,
        sockets: usize,
    ) -> Vec<ClientSpec> {
        if ids == 1 && sockets >= 20 {
            // One id on many sockets: half the sockets in each of two workers.
            let mut specs = self.specs(target, prefix, 1, sockets / 2);
            specs.extend(self.specs(target, prefix, 1, sockets - sockets / 2));
            return specs;
        }
        let per_worker_ids = (PER_WORKER / sockets.max(1)).max(1);
        let workers = ids
            .div_ceil(per_worker_ids)
            .max(if ids * sockets >= 500 { 2 } else { 1 });
        let per = ids.div_ceil(workers);
        (0..workers)
            .filter_map(|w| {
                let first = w * per;
                let count = per.min(ids.saturating_sub(first));
                (count > 0).then(|| ClientSpec {
                    url: target.url(),
                    path: target.path().into(),
                    prefix: prefix.into(),
                    first,
                    ids: count,
                    sockets_per_id: sockets,
                    source_ip: self.source_ip(),
                    concurrency: 100,
                    stall: false,
                    restall_ms: None,
                    rcvbuf: None,
                })
            })
            .collect()
    }

    /// Waits `full` seconds (a tenth of it in smoke mode).
    async fn pause(&self, full: f64) {
        let secs = if self.smoke { full / 10.0 } else { full };
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }

    fn kinds(&self) -> Vec<Kind> {
        if self.bridge_only {
            vec![Kind::Bridge]
        } else {
            vec![Kind::Baseline, Kind::Bridge]
        }
    }

    fn secs(&self, full: f64) -> f64 {
        if self.smoke {
            1.0
        } else {
            full
        }
    }

    /// How long to push at `rate` frames per second: `full` seconds, longer
    /// at low rates so that a window holds at least 20 000 frames (CPU time
    /// is read in 10 ms ticks).
    fn window(&self, full: f64, frames_per_s: f64) -> f64 {
        if self.smoke {
            1.0
        } else {
            full.max(15_000.0 / frames_per_s.max(1.0)).min(20.0)
        }
    }

    fn push_row(&mut self, row: Row) {
        println!(
            "  {} {} {}: {}",
            row.workload,
            row.server,
            row.case,
            Value::Object(row.metrics.clone())
        );
        self.report.rows.push(row);
    }
}

/// Pushes with `push`, then waits until `frames_per_command` frames per
/// Command have arrived (or nothing moved for 3 s); measures the server's
/// CPU over that span.
async fn measure<Fut>(
    fleet: &mut Fleet,
    server: Probe,
    stub: Option<Probe>,
    frames_per_command: u64,
    push: Fut,
) -> anyhow::Result<Outcome>
where
    Fut: Future<Output = anyhow::Result<u64>>,
{
    fleet.reset().await?;
    let cpu0 = server.read().cpu_secs;
    let load0 = fleet.cpu_secs();
    let stub0 = stub.map_or(0.0, |p| p.read().cpu_secs);
    let started = Instant::now();
    let started_ns = frames::now_nanos();
    let commands = push.await?;
    let pushed = started.elapsed();
    let expected = commands * frames_per_command;
    let (mut last, mut moved_at) = (0u64, Instant::now());
    let (seen, done_at) = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = fleet.report().await?;
        let now = Instant::now();
        if seen.frames >= expected {
            break (seen, now);
        }
        if seen.frames != last {
            last = seen.frames;
            moved_at = now;
        } else if moved_at.elapsed() > Duration::from_secs(3) {
            break (seen, moved_at);
        }
    };
    let span = Duration::from_nanos(seen.last_frame_at.saturating_sub(started_ns)).max(pushed);
    Ok(Outcome {
        span,
        commands,
        seen,
        elapsed: done_at - started,
        cpu_secs: server.read().cpu_secs - cpu0,
        loadgen_cpu_secs: fleet.cpu_secs() - load0,
        stub_cpu_secs: stub.map_or(0.0, |p| p.read().cpu_secs - stub0),
    })
}

fn rate_row(
    workload: &str,
    server: &str,
    case: String,
    rate: f64,
    frames_per_command: u64,
    m: &Outcome,
    extra: &[(&str, Value)],
) -> (Row, bool) {
    let expected = m.commands * frames_per_command;
    let secs = m.elapsed.as_secs_f64().max(1e-9);
    let delivered = m.seen.frames as f64 / m.span.as_secs_f64().max(1e-9);
    let p99 = m.seen.latency.quantile(0.99);
    let saturated = m.seen.frames * 100 < expected * 97
        || delivered < 0.9 * rate * frames_per_command as f64
        || p99.is_some_and(|p| p > 2_000_000);
    let per = |cpu: f64, n: u64| {
        if n == 0 {
            Value::Null
        } else {
            round(cpu * 1e6 / n as f64, 2)
        }
    };
    let mut metrics = vec![
        ("offered_per_s", round(rate, 0)),
        ("commands", json!(m.commands)),
        ("frames", json!(m.seen.frames)),
        ("lost", json!(expected.saturating_sub(m.seen.frames))),
        (
            "delivered_per_s",
            round(delivered / frames_per_command as f64, 0),
        ),
        ("frames_per_s", round(delivered, 0)),
        (
            "cpu_us_per_cmd",
            per(m.cpu_secs, m.seen.frames / frames_per_command.max(1)),
        ),
        ("cpu_us_per_frame", per(m.cpu_secs, m.seen.frames)),
        ("server_cpu_pct", round(m.cpu_secs / secs * 100.0, 0)),
        (
            "loadgen_cpu_us_per_frame",
            per(m.loadgen_cpu_secs, m.seen.frames),
        ),
        ("p50_ms", ms(m.seen.latency.quantile(0.5))),
        ("p99_ms", ms(p99)),
        ("max_ms", ms(m.seen.latency.quantile(1.0))),
        ("saturated", json!(saturated)),
    ];
    if server == "wsbridge" {
        metrics.push(("stub_cpu_us_per_cmd", per(m.stub_cpu_secs, m.commands)));
    }
    metrics.extend(extra.iter().cloned());
    (Row::new(workload, server, case, &metrics), saturated)
}

// ---------------------------------------------------------------------------
// W1: idle connections

/// W1: RSS and kernel memory per idle connection, at several sizes.
pub async fn w1(ctx: &mut Ctx) -> anyhow::Result<()> {
    let default: &[usize] = if ctx.smoke {
        &[50, 200]
    } else {
        &[1000, 5000, 15000]
    };
    let sizes = ctx.sizes.clone().unwrap_or_else(|| default.to_vec());
    for kind in ctx.kinds() {
        for &n in &sizes {
            let mut target = ctx.start(kind, "w1", &[]).await?;
            ctx.pause(1.0).await;
            let probe = target.probe();
            let (r0, k0) = (probe.read(), KernelMemory::read());
            let specs = ctx.specs(&target, "w1-", n, 1);
            let (mut fleet, connected) = Fleet::start(&specs).await?;
            ctx.pause(2.0).await;
            let (r1, k1) = (probe.read(), KernelMemory::read());
            let server_conns = target.connections().await?;
            fleet.close().await?;
            fleet.finish().await;
            ctx.pause(2.0).await;
            let r2 = probe.read();
            let per = |after: u64, before: u64| round((after as f64 - before as f64) / n as f64, 2);
            let row = Row::new(
                "W1",
                target.label(),
                format!("{n} conns"),
                &[
                    ("conns", json!(n)),
                    ("connected", json!(connected.connected)),
                    ("failed", json!(connected.failed)),
                    ("first_error", json!(connected.first_error)),
                    ("server_conns", json!(server_conns)),
                    ("rss_before_mib", mib(r0.rss_kib)),
                    ("rss_mib", mib(r1.rss_kib)),
                    ("user_kib_per_conn", per(r1.rss_kib, r0.rss_kib)),
                    ("anon_kib_per_conn", per(r1.anon_kib, r0.anon_kib)),
                    ("kernel_kib_per_conn", per(k1.total_kib(), k0.total_kib())),
                    (
                        "tcp_sockets_added",
                        json!(k1.tcp_inuse.saturating_sub(k0.tcp_inuse)),
                    ),
                    ("threads", json!(r1.threads)),
                    ("rss_after_close_mib", mib(r2.rss_kib)),
                ],
            );
            ctx.push_row(row);
            target.stop().await?;
        }
    }
    ctx.report.notes.push(
        "W1 kernel_kib_per_conn is the system-wide growth of Slab + TCP buffer memory per \
         connection, both ends of the loopback pair together (the clients run on the same machine)"
            .into(),
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// W2: connect storm

/// W2: handshakes per second, p99 handshake, memory after the storm.
pub async fn w2(ctx: &mut Ctx) -> anyhow::Result<()> {
    let count = if ctx.smoke { 100 } else { 6000 };
    for kind in ctx.kinds() {
        let target = ctx.start(kind, "w2", &[]).await?;
        let probe = target.probe();
        let spec = |ctx: &mut Ctx, n: usize, concurrency: usize, prefix: &str| StormSpec {
            url: target.url(),
            path: target.path().into(),
            prefix: prefix.into(),
            count: n,
            concurrency,
            source_ip: ctx.source_ip(),
        };
        // Warm-up: pools and first allocations are not the storm's cost.
        let warm = spec(ctx, 100.min(count), 20, "w2-warm-");
        clients::storm(&[warm]).await?;
        ctx.pause(1.0).await;
        let r0 = probe.read();
        let sampler = Sampler::start(probe);
        let specs = [
            spec(ctx, count / 2, 50, "w2-a-"),
            spec(ctx, count - count / 2, 50, "w2-b-"),
        ];
        let cpu0 = probe.read().cpu_secs;
        let storm = clients::storm(&specs).await?;
        let (ok, hist) = (storm.ok, &storm.handshakes);
        let cpu = probe.read().cpu_secs - cpu0;
        let peak = sampler.stop();
        ctx.pause(3.0).await;
        let r2 = probe.read();
        // More storms: memory the first one left behind is reused (the
        // allocator keeps it) rather than leaked when this stops growing.
        let mut after = vec![mib(r2.rss_kib)];
        for round in 1..ctx.storms.unwrap_or(2).max(1) {
            let again = [
                spec(ctx, count / 2, 50, &format!("w2-{round}a-")),
                spec(ctx, count - count / 2, 50, &format!("w2-{round}b-")),
            ];
            clients::storm(&again).await?;
            ctx.pause(3.0).await;
            after.push(mib(probe.read().rss_kib));
        }
        let row = Row::new(
            "W2",
            target.label(),
            format!("{count} handshakes, 100 at once"),
            &[
                ("ok", json!(ok)),
                ("failed", json!(storm.failed)),
                ("first_error", json!(storm.first_error)),
                (
                    "handshakes_per_s",
                    round(ok as f64 / storm.elapsed_s.max(1e-9), 0),
                ),
                ("close_p50_ms", ms(storm.closes.quantile(0.5))),
                ("close_p99_ms", ms(storm.closes.quantile(0.99))),
                ("p50_ms", ms(hist.quantile(0.5))),
                ("p99_ms", ms(hist.quantile(0.99))),
                ("max_ms", ms(hist.quantile(1.0))),
                (
                    "cpu_us_per_handshake",
                    round(cpu * 1e6 / ok.max(1) as f64, 1),
                ),
                ("rss_before_mib", mib(r0.rss_kib)),
                ("rss_peak_mib", mib(peak)),
                ("rss_after_mib", mib(r2.rss_kib)),
                ("retained_kib", json!(r2.rss_kib as i64 - r0.rss_kib as i64)),
                ("rss_after_each_storm_mib", json!(after)),
            ],
        );
        ctx.push_row(row);
        target.stop().await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// W3: latency through moto

/// W3: latency through moto at a low rate, paired: each Command is sent at
/// the same moment to two queues, one read by the bridge (and delivered to
/// a WebSocket client), one by a moto-only consumer (two long-poll loops
/// like the bridge's: receive, decode, delete). The latency the bridge adds
/// is the per-Command difference of the two arrivals, so moto's own jitter
/// (milliseconds) cancels out.
pub async fn w3(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (count, rate) = if ctx.smoke { (5u64, 5.0) } else { (200, 5.0) };
    let endpoint = tokio::task::spawn_blocking(|| testkit::moto().endpoint().to_owned())
        .await
        .map_err(|_| anyhow!("moto is not available (scripts/moto-venv.sh, or MOTO_SERVER / WSBRIDGE_TEST_MOTO_URL)"))?;
    let aws = Aws::new(testkit::sdk_config_at(&endpoint).await);
    let infra = ctx.infra(&aws, "w3").await?;
    let direct_queue = aws.create_queue(&ctx.name("w3-direct")).await.url;

    // Arrival times (ns) by sequence number, on each side.
    let direct: Arrivals = Arc::default();
    let bridged: Arrivals = Arc::default();

    let pollers = direct_consumer(&aws, &direct_queue, &direct);

    let bridge = ctx.start_bridge_at(&endpoint, &infra, "w3", &[]).await?;
    let target = Server::Bridge(bridge, infra.clone());
    let mut ws = clients::open(
        &target.url(),
        "/ws?client_id=w3-0",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        None,
    )
    .await?;
    let reader = {
        let arrivals = bridged.clone();
        Tasks(vec![tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(message)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                    let now = frames::now_nanos();
                    if let (Some(seq), Ok(mut map)) = (seq_of(&text), arrivals.lock()) {
                        map.entry(seq).or_insert(now);
                    }
                }
            }
        })])
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent_at = send_pairs(
        &aws,
        &infra,
        &infra.command_queue_url,
        &direct_queue,
        count,
        rate,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |m: &Arrivals| m.lock().map(|m| m.len() as u64).unwrap_or(0) >= count;
    while !(complete(&direct) && complete(&bridged)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(pollers);
    drop(reader);
    target.stop().await?;

    let direct = direct.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let bridged = bridged.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let (added, mean_added) = pair_differences(&sent_at, &direct, &bridged, count);
    let noise = aa_noise(ctx, &aws, &infra, count, rate).await?;
    let mut direct_hist = Histogram::default();
    let mut bridged_hist = Histogram::default();
    for (seq, t) in &sent_at {
        if let Some(a) = direct.get(seq) {
            direct_hist.record(a.saturating_sub(*t) / 1000);
        }
        if let Some(a) = bridged.get(seq) {
            bridged_hist.record(a.saturating_sub(*t) / 1000);
        }
    }
    let pct = |p: f64| percentile_ms(&added, p);
    let case = format!("{count} Commands at {rate}/s, paired");
    let q = |h: &Histogram, p: f64| ms(h.quantile(p));
    ctx.push_row(Row::new(
        "W3",
        "moto-only",
        case.clone(),
        &[
            ("messages", json!(direct_hist.count())),
            ("p50_ms", q(&direct_hist, 0.5)),
            ("p99_ms", q(&direct_hist, 0.99)),
            ("max_ms", q(&direct_hist, 1.0)),
        ],
    ));
    ctx.push_row(Row::new(
        "W3",
        "wsbridge",
        case,
        &[
            ("messages", json!(bridged_hist.count())),
            ("p50_ms", q(&bridged_hist, 0.5)),
            ("p99_ms", q(&bridged_hist, 0.99)),
            ("max_ms", q(&bridged_hist, 1.0)),
            ("pairs", json!(added.len())),
            ("added_mean_ms", mean_added),
            ("aa_noise_p50_ms", noise.0),
            ("aa_noise_p99_ms", noise.1),
            ("added_p50_ms", pct(0.5)),
            ("added_p99_ms", pct(0.99)),
            ("added_min_ms", pct(0.0)),
        ],
    ));
    Ok(())
}

/// Arrival times (ns) by sequence number.
type Arrivals = Arc<std::sync::Mutex<HashMap<u64, u64>>>;

/// The sequence number of a W3 Command.
fn seq_of(json: &str) -> Option<u64> {
    serde_json::from_str::<Value>(json).ok()?["data"]["seq"].as_u64()
}

/// The moto-only consumer: two long-poll loops like the bridge's (receive
/// up to 10, decode, delete in a batch), recording arrivals.
fn direct_consumer(aws: &Aws, queue_url: &str, arrivals: &Arrivals) -> Tasks {
    let mut pollers = Vec::new();
    for _ in 0..2 {
        let (sqs, url, arrivals) = (aws.sqs.clone(), queue_url.to_owned(), arrivals.clone());
        pollers.push(tokio::spawn(async move {
            loop {
                let Ok(out) = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(20)
                    .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                    .message_system_attribute_names(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let now = frames::now_nanos();
                let mut entries = Vec::new();
                for (i, message) in out.messages().iter().enumerate() {
                    let seq = message
                        .body()
                        .and_then(|b| domain::decode_sqs_body(b).ok())
                        .and_then(|c| seq_of(&c.json));
                    if let (Some(seq), Ok(mut map)) = (seq, arrivals.lock()) {
                        map.entry(seq).or_insert(now);
                    }
                    if let Some(handle) = message.receipt_handle() {
                        if let Ok(entry) = DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
                            .build()
                        {
                            entries.push(entry);
                        }
                    }
                }
                if !entries.is_empty() {
                    let _ = sqs
                        .delete_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries))
                        .send()
                        .await;
                }
            }
        }));
    }

    Tasks(pollers)
}

/// Sends each of `count` Commands (for client `w3-0`, in an SNS envelope)
/// to both queues at the same moment, at `rate` per second; returns when
/// each was sent (ns). Moto takes milliseconds per SendMessage, so
/// whichever goes first arrives first: the order alternates, and pairs of
/// Commands are averaged by [`pair_differences`].
async fn send_pairs(
    aws: &Aws,
    infra: &Infrastructure,
    queue_a: &str,
    queue_b: &str,
    count: u64,
    rate: f64,
) -> anyhow::Result<HashMap<u64, u64>> {
    let mut sent_at = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for seq in 0..count {
        tick.tick().await;
        let t = frames::now_nanos();
        sent_at.insert(seq, t);
        let body = adapters_aws::tools::envelope(
            &frames::command("w3-0", seq, t, 0),
            &infra.commands_topic_arn,
        );
        let send = |url: &str| {
            aws.sqs
                .send_message()
                .queue_url(url)
                .message_body(body.clone())
                .send()
        };
        let (first, second) = if seq % 2 == 0 {
            (queue_a, queue_b)
        } else {
            (queue_b, queue_a)
        };
        let (a, b) = tokio::join!(send(first), send(second));
        a.context("SendMessage to moto")?;
        b.context("SendMessage to moto")?;
    }
    Ok(sent_at)
}

/// How much later side `b` got each pair of Commands than side `a` (µs,
/// sorted; one sample per pair, so the send order cancels), and the mean
/// difference over all Commands (ms).
fn pair_differences(
    sent_at: &HashMap<u64, u64>,
    a: &HashMap<u64, u64>,
    b: &HashMap<u64, u64>,
    count: u64,
) -> (Vec<i64>, Value) {
    let diff = |seq: u64| -> Option<i64> {
        let t = sent_at.get(&seq)?;
        let a = a.get(&seq)?.saturating_sub(*t) as i64;
        let b = b.get(&seq)?.saturating_sub(*t) as i64;
        Some((b - a) / 1000)
    };
    let mut pairs: Vec<i64> = (0..count / 2)
        .filter_map(|k| Some((diff(2 * k)? + diff(2 * k + 1)?) / 2))
        .collect();
    pairs.sort_unstable();
    let all: Vec<i64> = (0..count).filter_map(diff).collect();
    let mean = if all.is_empty() {
        Value::Null
    } else {
        round(
            all.iter().sum::<i64>() as f64 / all.len() as f64 / 1000.0,
            2,
        )
    };
    (pairs, mean)
}

/// The `p` quantile of sorted µs values, in ms.
fn percentile_ms(sorted: &[i64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    round(sorted[rank - 1] as f64 / 1000.0, 2)
}

/// The same paired measurement with two moto-only consumers (an A/A test):
/// the p50 and p99 of the difference between two identical paths is what
/// moto's own jitter contributes to the W3 figures.
async fn aa_noise(
    ctx: &mut Ctx,
    aws: &Aws,
    infra: &Infrastructure,
    count: u64,
    rate: f64,
) -> anyhow::Result<(Value, Value)> {
    let queue_a = aws.create_queue(&ctx.name("w3-aa-a")).await.url;
    let queue_b = aws.create_queue(&ctx.name("w3-aa-b")).await.url;
    let (a, b): (Arrivals, Arrivals) = (Arc::default(), Arc::default());
    let pollers = (
        direct_consumer(aws, &queue_a, &a),
        direct_consumer(aws, &queue_b, &b),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at = send_pairs(aws, infra, &queue_a, &queue_b, count, rate).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |m: &Arrivals| m.lock().map(|m| m.len() as u64).unwrap_or(0) >= count;
    while !(complete(&a) && complete(&b)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(pollers);
    let a = a.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let b = b.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let (pairs, _) = pair_differences(&sent_at, &a, &b, count);
    // The noise is symmetric: its size, not its sign, matters.
    let mut sizes: Vec<i64> = pairs.iter().map(|d| d.abs()).collect();
    sizes.sort_unstable();
    Ok((percentile_ms(&sizes, 0.5), percentile_ms(&sizes, 0.99)))
}

// ---------------------------------------------------------------------------
// W4: throughput

async fn push_baseline(target: &mut Server, rate: f64, secs: f64) -> anyhow::Result<u64> {
    let Server::Baseline(baseline) = target else {
        return Err(anyhow!("not the baseline"));
    };
    let answer = baseline.push(rate, secs).await?;
    Ok(answer["commands"].as_u64().unwrap_or(0))
}

/// One rate step against either server; returns the row and whether it saturated.
#[allow(clippy::too_many_arguments)]
async fn step(
    ctx: &mut Ctx,
    workload: &str,
    target: &mut Server,
    fleet: &mut Fleet,
    ids: &[String],
    rate: f64,
    secs: f64,
    frames_per_command: u64,
    case: String,
) -> anyhow::Result<(Row, bool)> {
    let probe = target.probe();
    match target {
        Server::Baseline(_) => {
            let m = measure(
                fleet,
                probe,
                None,
                frames_per_command,
                push_baseline(target, rate, secs),
            )
            .await?;
            Ok(rate_row(
                workload,
                "baseline",
                case,
                rate,
                frames_per_command,
                &m,
                &[],
            ))
        }
        Server::Bridge(_, infra) => {
            let topic = infra.commands_topic_arn.clone();
            let (stub, _) = ctx.stub().await?;
            stub.reset_stats().await?;
            let stub_probe = stub.probe();
            let push = servers::inject(stub, &topic, ids, rate, Duration::from_secs_f64(secs), 0);
            let m = measure(fleet, probe, Some(stub_probe), frames_per_command, push).await?;
            let stats = stub.stats().await?;
            let (receives, _) = Stub::calls(&stats, "ReceiveMessage");
            let (deletes, _) = Stub::calls(&stats, "DeleteMessageBatch");
            let sqs_calls = if m.commands == 0 {
                Value::Null
            } else {
                round((receives + deletes) as f64 / m.commands as f64, 3)
            };
            Ok(rate_row(
                workload,
                "wsbridge",
                case,
                rate,
                frames_per_command,
                &m,
                &[("sqs_calls_per_cmd", sqs_calls)],
            ))
        }
    }
}

/// W4: Commands to 1 000 distinct clients at open-loop rates up to
/// saturation. Baseline and bridge run side by side (both fleets
/// connected) and are measured in turn at each rate, `passes` times; the
/// row kept is the median pass by CPU per frame (the machine is shared:
/// interleaving spreads background load over both).
pub async fn w4(ctx: &mut Ctx) -> anyhow::Result<()> {
    let conns = if ctx.smoke { 100 } else { 1000 };
    let default: &[f64] = if ctx.smoke {
        &[200.0, 500.0]
    } else {
        &[1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 40000.0]
    };
    let rates = ctx.rates.clone().unwrap_or_else(|| default.to_vec());
    let passes = ctx.passes.unwrap_or(if ctx.smoke { 1 } else { 3 }).max(1);
    let ids: Vec<String> = (0..conns).map(|i| format!("w4-{i}")).collect();
    let mut sides = Vec::new();
    for kind in ctx.kinds() {
        let target = ctx.start(kind, "w4", &[]).await?;
        let specs = ctx.specs(&target, "w4-", conns, 1);
        let (fleet, connected) = Fleet::start(&specs).await?;
        if connected.failed > 0 {
            return Err(anyhow!(
                "{} connections failed: {:?}",
                connected.failed,
                connected.first_error
            ));
        }
        sides.push((target, fleet, false));
    }
    for &rate in &rates {
        let secs = ctx.window(5.0, rate);
        let mut kept = Vec::new();
        for (target, fleet, saturated) in &mut sides {
            if *saturated {
                continue;
            }
            let mut runs = Vec::new();
            for _ in 0..passes {
                let (row, full) = step(
                    ctx,
                    "W4",
                    target,
                    fleet,
                    &ids,
                    rate,
                    secs,
                    1,
                    format!("{rate}/s"),
                )
                .await?;
                runs.push(row);
                if full {
                    *saturated = true;
                    break;
                }
            }
            kept.push(median(runs));
        }
        if kept.is_empty() {
            break;
        }
        for row in kept {
            ctx.push_row(row);
        }
    }
    for (target, fleet, _) in sides {
        let mut fleet = fleet;
        fleet.close().await?;
        fleet.finish().await;
        target.stop().await?;
    }
    ratios(&mut ctx.report, "W4");
    Ok(())
}

/// The pass with the median CPU per frame, with the spread of all passes.
fn median(mut runs: Vec<Row>) -> Row {
    let cpu = |r: &Row| r.num("cpu_us_per_frame").unwrap_or(f64::MAX);
    runs.sort_by(|a, b| cpu(a).total_cmp(&cpu(b)));
    let (low, high) = (
        runs.first().map(cpu).unwrap_or_default(),
        runs.last().map(cpu).unwrap_or_default(),
    );
    let count = runs.len();
    let mut row = runs.swap_remove(count / 2);
    row.metrics.insert("passes".into(), json!(count));
    row.metrics.insert(
        "cpu_us_per_frame_range".into(),
        json!(format!("{low:.1}–{high:.1}")),
    );
    row
}

/// Adds `ratio_to_baseline` (CPU per Command, same case) to the bridge rows.
fn ratios(report: &mut Report, workload: &str) {
    let baseline: Vec<(String, f64)> = report
        .rows_of(workload, "baseline")
        .filter_map(|r| Some((r.case.clone(), r.num("cpu_us_per_frame")?)))
        .collect();
    for row in report
        .rows
        .iter_mut()
        .filter(|r| r.workload == workload && r.server == "wsbridge")
    {
        let base = baseline
            .iter()
            .find(|(case, _)| *case == row.case)
            .map(|(_, v)| *v);
        if let (Some(base), Some(mine)) = (base, row.num("cpu_us_per_frame")) {
            if base > 0.0 {
                row.metrics
                    .insert("ratio_to_baseline".into(), round(mine / base, 2));
            }
        }
    }
}

/// W4b: one client id on 1, 10, 100 sockets.
pub async fn w4b(ctx: &mut Ctx) -> anyhow::Result<()> {
    let sockets: &[usize] = if ctx.smoke { &[1, 10] } else { &[1, 10, 100] };
    let rate = if ctx.smoke { 100.0 } else { 1000.0 };
    let ids = vec!["w4b-0".to_owned()];
    for kind in ctx.kinds() {
        let mut target = ctx.start(kind, "w4b", &[]).await?;
        for &n in sockets {
            let specs = ctx.specs(&target, "w4b-", 1, n);
            let (mut fleet, _) = Fleet::start(&specs).await?;
            let secs = ctx.window(5.0, rate * n as f64);
            let (row, _) = step(
                ctx,
                "W4b",
                &mut target,
                &mut fleet,
                &ids,
                rate,
                secs,
                n as u64,
                format!("1 id × {n} sockets, {rate}/s"),
            )
            .await?;
            ctx.push_row(row);
            fleet.close().await?;
            fleet.finish().await;
        }
        target.stop().await?;
    }
    ratios(&mut ctx.report, "W4b");
    Ok(())
}

/// W4c: half the Commands for clients that are not connected (dropped).
pub async fn w4c(ctx: &mut Ctx) -> anyhow::Result<()> {
    let conns = if ctx.smoke { 100 } else { 1000 };
    let rate = if ctx.smoke { 200.0 } else { 5000.0 };
    let secs = ctx.secs(5.0);
    let target = ctx.start(Kind::Bridge, "w4c", &[]).await?;
    let specs = ctx.specs(&target, "w4c-", conns, 1);
    let (mut fleet, _) = Fleet::start(&specs).await?;
    let ids: Vec<String> = (0..conns)
        .flat_map(|i| [format!("w4c-{i}"), format!("w4c-absent-{i}")])
        .collect();
    let Server::Bridge(bridge, infra) = &target else {
        return Err(anyhow!("not the bridge"));
    };
    let undeliverable0 = bridge
        .metric("wsbridge_commands_total{outcome=\"undeliverable\"}")
        .await?;
    let topic = infra.commands_topic_arn.clone();
    let probe = target.probe();
    let (stub, _) = ctx.stub().await?;
    let stub_probe = stub.probe();
    let push = servers::inject(stub, &topic, &ids, rate, Duration::from_secs_f64(secs), 0);
    // Half of them produce a frame.
    let m = measure(&mut fleet, probe, Some(stub_probe), 1, async {
        Ok(push.await? / 2)
    })
    .await?;
    let Server::Bridge(bridge, _) = &target else {
        return Err(anyhow!("not the bridge"));
    };
    let undeliverable = bridge
        .metric("wsbridge_commands_total{outcome=\"undeliverable\"}")
        .await?
        - undeliverable0;
    let received = m.commands * 2;
    let (row, _) = rate_row(
        "W4c",
        "wsbridge",
        format!("{rate}/s, half for absent clients"),
        rate / 2.0,
        1,
        &m,
        &[
            ("received_cmds", json!(received)),
            ("undeliverable", round(undeliverable, 0)),
            (
                "cpu_us_per_received_cmd",
                round(m.cpu_secs * 1e6 / received.max(1) as f64, 2),
            ),
        ],
    );
    ctx.push_row(row);
    fleet.close().await?;
    fleet.finish().await;
    target.stop().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// W5: uplink

/// W5: ClientMessages from 1 000 connections through the bridge to SNS.
pub async fn w5(ctx: &mut Ctx) -> anyhow::Result<()> {
    let conns = if ctx.smoke { 100 } else { 1000 };
    let rates: &[f64] = if ctx.smoke {
        &[200.0]
    } else {
        &[1000.0, 2000.0, 5000.0, 10000.0]
    };
    let target = ctx.start(Kind::Bridge, "w5", &[]).await?;
    let specs = ctx.specs(&target, "w5-", conns, 1);
    let (mut fleet, _) = Fleet::start(&specs).await?;
    let probe = target.probe();
    for &rate in rates {
        let secs = ctx.window(5.0, rate);
        let (stub, _) = ctx.stub().await?;
        stub.reset_stats().await?;
        let stub_probe = stub.probe();
        fleet.reset().await?;
        let cpu0 = probe.read().cpu_secs;
        let stub0 = stub_probe.read().cpu_secs;
        let started = Instant::now();
        let started_ns = frames::now_nanos();
        let sent = fleet.uplink(rate, secs).await?;
        let (mut last, mut moved_at) = (0u64, Instant::now());
        let (seen, done_at) = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let seen = fleet.report().await?;
            let now = Instant::now();
            if seen.acks + seen.errors >= sent {
                break (seen, now);
            }
            if seen.acks != last {
                last = seen.acks;
                moved_at = now;
            } else if moved_at.elapsed() > Duration::from_secs(3) {
                break (seen, moved_at);
            }
        };
        let cpu = probe.read().cpu_secs - cpu0;
        let stub_cpu = stub_probe.read().cpu_secs - stub0;
        let stats = stub.stats().await?;
        let (batches, entries) = Stub::calls(&stats, "PublishBatch");
        let (singles, _) = Stub::calls(&stats, "Publish");
        let elapsed = (done_at - started).as_secs_f64();
        let span = (seen.last_ack_at.saturating_sub(started_ns) as f64 / 1e9).max(secs);
        let acked_per_s = seen.acks as f64 / span.max(1e-9);
        let saturated = seen.acks * 100 < sent * 97 || acked_per_s < 0.9 * rate;
        let row = Row::new(
            "W5",
            "wsbridge",
            format!("{rate}/s over {conns} conns"),
            &[
                ("offered_per_s", round(rate, 0)),
                ("sent", json!(sent)),
                ("acks", json!(seen.acks)),
                ("errors", json!(seen.errors)),
                ("lost", json!(sent.saturating_sub(seen.acks + seen.errors))),
                ("acked_per_s", round(acked_per_s, 0)),
                (
                    "cpu_us_per_msg",
                    round(cpu * 1e6 / seen.acks.max(1) as f64, 2),
                ),
                ("server_cpu_pct", round(cpu / elapsed.max(1e-9) * 100.0, 0)),
                (
                    "sns_calls_per_msg",
                    round((batches + singles) as f64 / seen.acks.max(1) as f64, 3),
                ),
                (
                    "entries_per_batch",
                    round(entries as f64 / batches.max(1) as f64, 2),
                ),
                (
                    "stub_cpu_us_per_msg",
                    round(stub_cpu * 1e6 / seen.acks.max(1) as f64, 2),
                ),
                ("p50_ms", ms(seen.ack_latency.quantile(0.5))),
                ("p99_ms", ms(seen.ack_latency.quantile(0.99))),
                ("saturated", json!(saturated)),
            ],
        );
        ctx.push_row(row);
        if saturated {
            break;
        }
    }
    fleet.close().await?;
    fleet.finish().await;
    target.stop().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// W6: one client that never reads

/// One W6 phase: the readers get `rate` Commands/s, the heavy client id
/// `slow_rate` big ones; returns what the readers saw, the bridge's peak RSS
/// growth and its RSS before.
async fn w6_phase(
    ctx: &mut Ctx,
    target: &Server,
    readers: &mut Fleet,
    ids: &[String],
    rate: f64,
    slow_rate: f64,
    secs: f64,
) -> anyhow::Result<(Outcome, u64, u64)> {
    let Server::Bridge(_, infra) = target else {
        return Err(anyhow!("not the bridge"));
    };
    let topic = infra.commands_topic_arn.clone();
    let probe = target.probe();
    let rss0 = probe.read().rss_kib;
    let sampler = Sampler::start(probe);
    let (stub, _) = ctx.stub().await?;
    let duration = Duration::from_secs_f64(secs);
    let heavy = vec![W6_HEAVY_ID.to_owned()];
    let push = async {
        let (normal, slow) = tokio::join!(
            servers::inject(stub, &topic, ids, rate, duration, 0),
            servers::inject(stub, &topic, &heavy, slow_rate, duration, W6_PAD),
        );
        slow?;
        normal
    };
    let m = measure(readers, probe, None, 1, push).await?;
    let peak = sampler.stop();
    Ok((m, peak.saturating_sub(rss0), rss0))
}

/// The client id that gets the big Commands in W6.
const W6_HEAVY_ID: &str = "w6-heavy-0";
/// Extra bytes of each big Command in W6.
const W6_PAD: usize = 4000;

/// W6: 999 readers at 2 000 Commands/s, and one more client id getting
/// 500 big (4 KB) Commands/s. Control: that client reads. Then it stalls:
/// never reads (4 KB receive buffer), and a new stalled connection of it
/// opens every 2 s. The bridge's memory must stay bounded (stalled
/// connections closed with 1013) and the readers' latency unchanged.
pub async fn w6(ctx: &mut Ctx) -> anyhow::Result<()> {
    let readers = if ctx.smoke { 99 } else { 999 };
    let rate = if ctx.smoke { 200.0 } else { 2000.0 };
    let slow_rate = if ctx.smoke { 100.0 } else { 500.0 };
    let secs = ctx.secs(10.0);
    let restall_ms = if ctx.smoke { 500 } else { 2000 };
    let target = ctx.start(Kind::Bridge, "w6", &[]).await?;
    let specs = ctx.specs(&target, "w6-", readers, 1);
    let (mut fleet, _) = Fleet::start(&specs).await?;
    let ids: Vec<String> = (0..readers).map(|i| format!("w6-{i}")).collect();
    let heavy_spec = |ctx: &mut Ctx, stall: bool| ClientSpec {
        url: target.url(),
        path: target.path().into(),
        prefix: "w6-heavy-".into(),
        first: 0,
        ids: 1,
        sockets_per_id: 1,
        source_ip: ctx.source_ip(),
        concurrency: 1,
        stall,
        restall_ms: stall.then_some(restall_ms),
        rcvbuf: stall.then_some(4096),
    };
    let common = |m: &Outcome, growth: u64, rss0: u64| {
        vec![
            ("readers", json!(readers)),
            ("readers_rate_per_s", round(rate, 0)),
            ("heavy_rate_per_s", round(slow_rate, 0)),
            ("heavy_frame_bytes", json!(W6_PAD + 100)),
            ("readers_frames", json!(m.seen.frames)),
            (
                "readers_lost",
                json!(m.commands.saturating_sub(m.seen.frames)),
            ),
            ("readers_p50_ms", ms(m.seen.latency.quantile(0.5))),
            ("readers_p99_ms", ms(m.seen.latency.quantile(0.99))),
            ("rss_before_mib", mib(rss0)),
            ("rss_growth_mib", mib(growth)),
            (
                "cpu_us_per_cmd",
                round(m.cpu_secs * 1e6 / (m.commands as f64 + slow_rate * secs), 2),
            ),
        ]
    };

    // Control: the heavy client reads.
    let heavy = heavy_spec(ctx, false);
    let (mut heavy_reader, _) = Fleet::start(&[heavy]).await?;
    let (m, growth, rss0) = w6_phase(ctx, &target, &mut fleet, &ids, rate, slow_rate, secs).await?;
    let heavy_seen = heavy_reader.report().await?;
    let control_p99 = m.seen.latency.quantile(0.99);
    let mut metrics = common(&m, growth, rss0);
    metrics.push(("heavy_frames", json!(heavy_seen.frames)));
    ctx.push_row(Row::new(
        "W6",
        "wsbridge",
        "control: heavy client reads",
        &metrics,
    ));
    heavy_reader.close().await?;
    heavy_reader.finish().await;

    // The heavy client stalls.
    let Server::Bridge(bridge, _) = &target else {
        return Err(anyhow!("not the bridge"));
    };
    let closed0 = bridge
        .metric("wsbridge_connections_closed_total{code=\"1013\"}")
        .await?;
    let staller = heavy_spec(ctx, true);
    let (stalled, _) = Fleet::start(&[staller]).await?;
    let (m, growth, rss0) = w6_phase(ctx, &target, &mut fleet, &ids, rate, slow_rate, secs).await?;
    ctx.pause(1.0).await;
    let Server::Bridge(bridge, _) = &target else {
        return Err(anyhow!("not the bridge"));
    };
    let closed = bridge
        .metric("wsbridge_connections_closed_total{code=\"1013\"}")
        .await?
        - closed0;
    let rss_after = target.probe().read().rss_kib;
    let mut metrics = common(&m, growth, rss0);
    metrics.extend([
        ("control_p99_ms", ms(control_p99)),
        ("rss_after_mib", mib(rss_after)),
        ("closed_1013", round(closed, 0)),
        (
            "stalled_conns",
            json!(1 + (secs * 1000.0 / restall_ms as f64) as u64),
        ),
    ]);
    ctx.push_row(Row::new("W6", "wsbridge", "heavy client stalls", &metrics));
    stalled.finish().await;
    fleet.close().await?;
    fleet.finish().await;
    target.stop().await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Targets

/// Checks the targets of the issue against the rows.
pub fn targets(report: &mut Report) {
    let mut out = Vec::new();
    // CPU per delivered Command vs the baseline's CPU per pushed frame (W4,
    // at 5 000/s, else the highest rate both sustained).
    let w4_bridge: Vec<&Row> = report.rows_of("W4", "wsbridge").collect();
    let pick = w4_bridge
        .iter()
        .find(|r| r.case == "5000/s" && r.num("ratio_to_baseline").is_some())
        .or_else(|| {
            w4_bridge.iter().rev().find(|r| {
                r.num("ratio_to_baseline").is_some()
                    && r.metrics.get("saturated") == Some(&json!(false))
            })
        })
        .or_else(|| {
            w4_bridge
                .iter()
                .rev()
                .find(|r| r.num("ratio_to_baseline").is_some())
        });
    out.push(match pick {
        Some(row) => {
            let ratio = row.num("ratio_to_baseline").unwrap_or(f64::NAN);
            let base = report
                .rows_of("W4", "baseline")
                .find(|r| r.case == row.case)
                .and_then(|r| r.num("cpu_us_per_frame"))
                .unwrap_or(f64::NAN);
            Check {
                target: "CPU per delivered Command ≤ 2.5× the baseline's CPU per pushed frame"
                    .into(),
                measured: format!(
                    "{ratio:.2}× at {} ({:.1} µs vs {base:.1} µs)",
                    row.case,
                    row.num("cpu_us_per_frame").unwrap_or(f64::NAN)
                ),
                verdict: verdict(ratio <= 2.5),
            }
        }
        None => {
            not_measured("CPU per delivered Command ≤ 2.5× the baseline's CPU per pushed frame")
        }
    });
    // Memory per idle connection (W1, largest size).
    let largest = |server: &str| {
        report
            .rows_of("W1", server)
            .max_by_key(|r| r.num("conns").unwrap_or(0.0) as u64)
            .map(|r| {
                (
                    r.num("conns").unwrap_or(0.0),
                    r.num("user_kib_per_conn").unwrap_or(f64::NAN),
                )
            })
    };
    out.push(match (largest("wsbridge"), largest("baseline")) {
        (Some((n, bridge)), Some((_, base))) => Check {
            target: "user-space memory per idle connection ≤ 2× the baseline (≈ 25 KB)".into(),
            measured: format!(
                "{bridge:.1} KiB vs {base:.1} KiB = {:.2}× at {n} connections",
                bridge / base
            ),
            verdict: verdict(bridge <= 2.0 * base),
        },
        _ => not_measured("user-space memory per idle connection ≤ 2× the baseline"),
    });
    // Added latency over a moto-only consumer (W3).
    out.push(match report.rows_of("W3", "wsbridge").next() {
        Some(row) => {
            let (p50, p99) = (row.num("added_p50_ms"), row.num("added_p99_ms"));
            Check {
                target: "added latency over a moto-only consumer: p50 ≤ 1 ms, p99 ≤ 5 ms".into(),
                measured: format!(
                    "p50 {} ms, p99 {} ms (moto's own jitter, A/A: p50 {} ms, p99 {} ms)",
                    p50.map_or("?".into(), |v| format!("{v:+.2}")),
                    p99.map_or("?".into(), |v| format!("{v:+.2}")),
                    row.num("aa_noise_p50_ms")
                        .map_or("?".into(), |v| format!("{v:.2}")),
                    row.num("aa_noise_p99_ms")
                        .map_or("?".into(), |v| format!("{v:.2}")),
                ),
                verdict: verdict(p50.is_some_and(|v| v <= 1.0) && p99.is_some_and(|v| v <= 5.0)),
            }
        }
        None => not_measured("added latency over a moto-only consumer: p50 ≤ 1 ms, p99 ≤ 5 ms"),
    });
    // 15k connections held with no errors (W1).
    out.push(
        match report
            .rows_of("W1", "wsbridge")
            .find(|r| r.num("conns") == Some(15000.0))
        {
            Some(row) => {
                let failed = row.num("failed").unwrap_or(f64::NAN);
                let held = row.num("server_conns").unwrap_or(0.0);
                Check {
                    target: "15k concurrent connections held with no errors".into(),
                    measured: format!("{held} held by the bridge, {failed} failed"),
                    verdict: verdict(failed == 0.0 && held >= 15000.0),
                }
            }
            None => not_measured("15k concurrent connections held with no errors"),
        },
    );
    // Slow-client isolation (W6).
    out.push(match report.rows_of("W6", "wsbridge").find(|r| r.case == "heavy client stalls") {
        Some(row) => {
            let p99 = row.num("readers_p99_ms").unwrap_or(f64::NAN);
            let control = row.num("control_p99_ms").unwrap_or(f64::NAN);
            let growth = row.num("rss_growth_mib").unwrap_or(f64::NAN);
            let closed = row.num("closed_1013").unwrap_or(0.0);
            let lost = row.num("readers_lost").unwrap_or(f64::NAN);
            Check {
                target: "slow-client isolation: bounded memory, others' p99 unchanged".into(),
                measured: format!(
                    "readers' p99 {p99:.2} ms (control {control:.2} ms), {lost} lost; RSS +{growth:.1} MiB; {closed} stalled connections closed with 1013"
                ),
                verdict: verdict(p99 <= (control * 1.5).max(control + 5.0) && growth < 128.0 && closed >= 1.0 && lost == 0.0),
            }
        }
        None => not_measured("slow-client isolation"),
    });
    if report.mode == "smoke" {
        // Tiny workloads on whatever build: the figures show the code runs,
        // they say nothing about the targets.
        for check in &mut out {
            if check.verdict != "not measured" {
                check.verdict = "smoke run, not judged".into();
            }
        }
    }
    report.targets = out;
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "missed" }.into()
}

fn not_measured(target: &str) -> Check {
    Check {
        target: target.into(),
        measured: "not measured in this run".into(),
        verdict: "not measured".into(),
    }
}

/// Runs the workload `name` (`w1` … `w6`, `w4b`, `w4c`), recording how
/// long it took and, instead of stopping the run, its failure.
pub async fn run(ctx: &mut Ctx, name: &str) {
    println!("== {name}");
    let started = Instant::now();
    let result = match name {
        "w1" => w1(ctx).await,
        "w2" => w2(ctx).await,
        "w3" => w3(ctx).await,
        "w4" => w4(ctx).await,
        "w4b" => w4b(ctx).await,
        "w4c" => w4c(ctx).await,
        "w5" => w5(ctx).await,
        "w6" => w6(ctx).await,
        other => Err(anyhow!("no workload {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("{name} failed: {e:#}");
        ctx.report.problems.push(format!("{name}: {e:#}"));
    }
    ctx.report.durations.insert(
        name.to_owned(),
        (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    );
}
