//! Load-generating WebSocket clients, in worker processes of their own
//! (`bench __clients`, `bench __storm`): one current-thread runtime each,
//! bound to a source address of their own (127.0.0.x), so file-descriptor
//! and ephemeral-port limits apply per worker.
//!
//! The parent talks to a `__clients` worker over its stdin/stdout, one line
//! each way: `reset`, `report`, `uplink <msgs/s> <secs>`, `close`, `exit`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::frames;
use crate::hist::{Histogram, Sparse};
use crate::procfs::Probe;

type Ws = WebSocketStream<TcpStream>;

/// The connections of one worker: connection `i` uses client id
/// `{prefix}{first + i / sockets_per_id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSpec {
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// Path with `{id}`: `/ws?client_id={id}` (bridge) or `/{id}` (baseline).
    pub path: String,
    /// Client id prefix.
    pub prefix: String,
    /// First id number.
    pub first: usize,
    /// Distinct ids.
    pub ids: usize,
    /// Connections per id.
    pub sockets_per_id: usize,
    /// Source address of every connection.
    pub source_ip: IpAddr,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// Never read (a client that stalls); with `restall_ms`, open a new
    /// stalled connection that often (at most 50).
    pub stall: bool,
    /// See `stall`.
    pub restall_ms: Option<u64>,
    /// SO_RCVBUF of each socket.
    pub rcvbuf: Option<u32>,
}

impl ClientSpec {
    /// How many connections the spec opens.
    pub fn connections(&self) -> usize {
        self.ids * self.sockets_per_id
    }

    fn id(&self, connection: usize) -> String {
        format!(
            "{}{}",
            self.prefix,
            self.first + connection / self.sockets_per_id.max(1)
        )
    }
}

/// What one worker (or all, merged) saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Connections opened.
    pub connected: u64,
    /// Connections that could not be opened.
    pub failed: u64,
    /// First connect error.
    pub first_error: Option<String>,
    /// Command frames received.
    pub frames: u64,
    /// Latency of stamped Commands, µs.
    pub latency: Histogram,
    /// Acks received.
    pub acks: u64,
    /// Send → ack, µs.
    pub ack_latency: Histogram,
    /// Error frames received.
    pub errors: u64,
    /// Close frames received, by code.
    pub closes: BTreeMap<u16, u64>,
    /// Connections that ended (closed or dropped).
    pub ended: u64,
    /// ClientMessages sent.
    pub sent: u64,
    /// When the last Command frame arrived (ns since the epoch).
    pub last_frame_at: u64,
    /// When the last ack arrived (ns since the epoch).
    pub last_ack_at: u64,
}

impl Seen {
    fn merge(&mut self, other: &Seen) {
        self.connected += other.connected;
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        self.frames += other.frames;
        self.latency.merge(&other.latency);
        self.acks += other.acks;
        self.ack_latency.merge(&other.ack_latency);
        self.errors += other.errors;
        for (code, n) in &other.closes {
            *self.closes.entry(*code).or_default() += n;
        }
        self.ended += other.ended;
        self.sent += other.sent;
        self.last_frame_at = self.last_frame_at.max(other.last_frame_at);
        self.last_ack_at = self.last_ack_at.max(other.last_ack_at);
    }

    fn to_json(&self) -> Value {
        json!({
            "connected": self.connected,
            "failed": self.failed,
            "first_error": self.first_error,
            "frames": self.frames,
            "latency": self.latency.to_sparse(),
            "acks": self.acks,
            "ack_latency": self.ack_latency.to_sparse(),
            "errors": self.errors,
            "closes": self.closes,
            "ended": self.ended,
            "sent": self.sent,
            "last_frame_at": self.last_frame_at,
            "last_ack_at": self.last_ack_at,
        })
    }

    fn from_json(value: &Value) -> anyhow::Result<Self> {
        let n = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        let hist = |key: &str| -> anyhow::Result<Histogram> {
            let Some(field) = value.get(key) else {
                return Ok(Histogram::default());
            };
            let sparse: Sparse = serde_json::from_value(field.clone())
                .with_context(|| format!("worker report field {key}"))?;
            Ok(Histogram::from_sparse(&sparse))
        };
        Ok(Self {
            connected: n("connected"),
            failed: n("failed"),
            first_error: value
                .get("first_error")
                .and_then(Value::as_str)
                .map(str::to_owned),
            frames: n("frames"),
            latency: hist("latency")?,
            acks: n("acks"),
            ack_latency: hist("ack_latency")?,
            errors: n("errors"),
            closes: serde_json::from_value(value.get("closes").cloned().unwrap_or(json!({})))?,
            ended: n("ended"),
            sent: n("sent"),
            last_frame_at: n("last_frame_at"),
            last_ack_at: n("last_ack_at"),
        })
    }
}

/// The lines of this process's stdin, read on a thread of their own (the
/// workspace's tokio has no `io-std`); ends with stdin.
pub fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn server_addr(url: &str) -> anyhow::Result<SocketAddr> {
    url.trim_start_matches("ws://")
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| anyhow!("not a ws://IP:PORT url: {url}"))
}

/// Opens one WebSocket connection from `source` with an optional receive
/// buffer size.
pub async fn open(
    url: &str,
    path: &str,
    source: IpAddr,
    rcvbuf: Option<u32>,
) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(size) = rcvbuf {
        socket.set_recv_buffer_size(size)?;
    }
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(server_addr(url)?).await?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(crate::baseline::READ_BUFFER);
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(format!("{url}{path}"), stream, Some(config))
            .await?;
    if response.status() != 101 {
        bail!("upgrade refused: {}", response.status());
    }
    Ok(ws)
}

// ---------------------------------------------------------------------------
// The worker process

enum Out {
    Text(String),
}

/// `bench __clients --spec JSON`: runs until `exit` or the end of stdin.
pub fn client_worker(spec: &str) -> anyhow::Result<()> {
    let spec: ClientSpec = serde_json::from_str(spec)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client_worker_async(spec))
}

async fn client_worker_async(spec: ClientSpec) -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = JoinSet::new();
    let mut senders: Vec<mpsc::Sender<Out>> = Vec::new();
    let mut stalled: Vec<Ws> = Vec::new();
    let gate = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut connecting = JoinSet::new();
    for i in 0..spec.connections() {
        let (gate, spec) = (gate.clone(), spec.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let path = spec.path.replace("{id}", &spec.id(i));
            tokio::time::timeout(
                Duration::from_secs(30),
                open(&spec.url, &path, spec.source_ip, spec.rcvbuf),
            )
            .await
            .map_err(|_| anyhow!("connect timed out"))
            .and_then(|r| r)
        });
    }
    while let Some(result) = connecting.join_next().await {
        match result.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(ws) if spec.stall => stalled.push(ws),
            Ok(ws) => {
                let (tx, rx) = mpsc::channel(64);
                senders.push(tx);
                tasks.spawn(serve(ws, rx, seen.clone()));
                lock(&seen).connected += 1;
            }
            Err(e) => {
                let mut s = lock(&seen);
                s.failed += 1;
                if s.first_error.is_none() {
                    s.first_error = Some(format!("{e:#}"));
                }
            }
        }
    }
    if spec.stall {
        lock(&seen).connected = stalled.len() as u64;
    }
    let restall = match (spec.stall, spec.restall_ms) {
        (true, Some(ms)) => Some(tokio::spawn(restall(spec.clone(), ms))),
        _ => None,
    };
    let snapshot = lock(&seen).clone();
    println!(
        "{}",
        json!({"event": "connected", "connected": snapshot.connected, "failed": snapshot.failed, "first_error": snapshot.first_error})
    );

    let mut stdin = stdin_lines();
    while let Some(line) = stdin.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["reset"] => {
                let mut s = lock(&seen);
                let (connected, failed) = (s.connected, s.failed);
                *s = Seen {
                    connected,
                    failed,
                    ..Seen::default()
                };
                drop(s);
                println!("{}", json!({"event": "reset"}));
            }
            ["report"] => {
                let mut report = lock(&seen).to_json();
                report["event"] = json!("report");
                println!("{report}");
            }
            ["uplink", rate, secs] => {
                let rate: f64 = rate.parse()?;
                let secs: f64 = secs.parse()?;
                let sent = uplink(&senders, rate, Duration::from_secs_f64(secs)).await;
                lock(&seen).sent += sent;
                println!("{}", json!({"event": "sent", "sent": sent}));
            }
            ["close"] => {
                senders.clear();
                stalled.clear();
                let all = async { while tasks.join_next().await.is_some() {} };
                let done = tokio::time::timeout(Duration::from_secs(20), all)
                    .await
                    .is_ok();
                println!("{}", json!({"event": "closed", "complete": done}));
            }
            ["exit"] => break,
            _ => println!(
                "{}",
                json!({"event": "error", "error": format!("unknown command {line:?}")})
            ),
        }
    }
    if let Some(task) = restall {
        task.abort();
    }
    Ok(())
}

/// Opens a new stalled connection every `ms` (at most 50); they are never
/// read, and held until the worker stops.
async fn restall(spec: ClientSpec, ms: u64) {
    let mut held = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        let path = spec.path.replace("{id}", &spec.id(0));
        if let Ok(ws) = open(&spec.url, &path, spec.source_ip, spec.rcvbuf).await {
            held.push(ws);
        }
    }
    std::future::pending::<()>().await;
    drop(held);
}

/// Sends ClientMessages at `rate` per second over `connections`, round
/// robin, for `duration`; returns how many were queued.
async fn uplink(connections: &[mpsc::Sender<Out>], rate: f64, duration: Duration) -> u64 {
    if connections.is_empty() || rate <= 0.0 {
        return 0;
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut sent = 0u64;
    let mut next = 0usize;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed().min(duration);
        let due = (rate * elapsed.as_secs_f64()) as u64;
        while sent < due {
            let t = frames::now_nanos();
            let _ = connections[next % connections.len()]
                .try_send(Out::Text(frames::client_message(t)));
            next += 1;
            sent += 1;
        }
        if elapsed >= duration {
            return sent;
        }
    }
}

/// One connection's loop: record what arrives, send what the pacer gives,
/// close when the pacer's sender is dropped.
async fn serve(mut ws: Ws, mut outbound: mpsc::Receiver<Out>, seen: Arc<Mutex<Seen>>) {
    let mut closing = false;
    loop {
        tokio::select! {
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    let now = frames::now_nanos();
                    let mut s = lock(&seen);
                    if frames::is_ack(&text) {
                        s.acks += 1;
                        s.last_ack_at = now;
                        if let Some(t) = frames::stamp(&text) {
                            s.ack_latency.record(now.saturating_sub(t) / 1000);
                        }
                    } else if frames::is_error(&text) {
                        s.errors += 1;
                    } else {
                        s.frames += 1;
                        s.last_frame_at = now;
                        if let Some(t) = frames::stamp(&text) {
                            s.latency.record(now.saturating_sub(t) / 1000);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite answers the close; read on until the end.
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    *lock(&seen).closes.entry(code).or_default() += 1;
                    closing = true;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            out = outbound.recv(), if !closing => match out {
                Some(Out::Text(text)) => {
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    let drain = async { while let Some(Ok(_)) = ws.next().await {} };
                    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
                    break;
                }
            },
        }
    }
    lock(&seen).ended += 1;
}

// ---------------------------------------------------------------------------
// The storm worker

/// What `bench __storm` does: `count` connections opened (handshake
/// measured) and closed at once, `concurrency` at a time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StormSpec {
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// Path with `{id}`.
    pub path: String,
    /// Client id prefix.
    pub prefix: String,
    /// Connections.
    pub count: usize,
    /// At once.
    pub concurrency: usize,
    /// Source address.
    pub source_ip: IpAddr,
}

/// `bench __storm --spec JSON`: prints one JSON line and exits.
pub fn storm_worker(spec: &str) -> anyhow::Result<()> {
    let spec: StormSpec = serde_json::from_str(spec)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        let gate = Arc::new(Semaphore::new(spec.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        for i in 0..spec.count {
            let (gate, spec) = (gate.clone(), spec.clone());
            tasks.spawn(async move {
                let permit = gate.acquire_owned().await;
                let path = spec.path.replace("{id}", &format!("{}{i}", spec.prefix));
                let began = Instant::now();
                let opened = tokio::time::timeout(
                    Duration::from_secs(30),
                    open(&spec.url, &path, spec.source_ip, None),
                )
                .await
                .map_err(|_| anyhow!("handshake timed out"))
                .and_then(|r| r);
                let took = began.elapsed();
                let done = started.elapsed();
                // The next handshake starts now; this one closes meanwhile.
                drop(permit);
                let mut ws = opened?;
                let closing = Instant::now();
                let _ = ws.close(None).await;
                let drain = async { while let Some(Ok(_)) = ws.next().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
                anyhow::Ok((took, done, closing.elapsed()))
            });
        }
        let mut handshakes = Histogram::default();
        let mut closes = Histogram::default();
        let mut last_handshake = Duration::ZERO;
        let (mut ok, mut failed, mut first_error) = (0u64, 0u64, None::<String>);
        while let Some(result) = tasks.join_next().await {
            match result.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok((took, done, closing)) => {
                    ok += 1;
                    handshakes.record(took.as_micros() as u64);
                    closes.record(closing.as_micros() as u64);
                    last_handshake = last_handshake.max(done);
                }
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
        json!({
            "ok": ok,
            "failed": failed,
            "first_error": first_error,
            "elapsed_s": last_handshake.as_secs_f64(),
            "total_s": started.elapsed().as_secs_f64(),
            "handshake": handshakes.to_sparse(),
            "close": closes.to_sparse(),
        })
    });
    println!("{result}");
    Ok(())
}

// ---------------------------------------------------------------------------
// The parent's side

/// A worker process and its pipes; killed when dropped.
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    probe: Probe,
}

impl Worker {
    /// Starts `bench <mode> --spec <spec>`.
    pub async fn spawn(mode: &str, spec: &Value) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = tokio::process::Command::new(exe)
            .arg(mode)
            .arg("--spec")
            .arg(spec.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting a {mode} worker"))?;
        let pid = child.id().ok_or_else(|| anyhow!("worker exited at once"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no worker stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no worker stdout"))?;
        Ok(Self {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            probe: Probe::new(pid),
        })
    }

    /// The next JSON line, within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| anyhow!("worker did not answer within {timeout:?}"))??
            .ok_or_else(|| anyhow!("worker exited"))?;
        serde_json::from_str(&line).with_context(|| format!("worker said {line:?}"))
    }

    /// Sends a command line.
    pub async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// CPU seconds the worker has used.
    pub fn cpu_secs(&self) -> f64 {
        self.probe.read().cpu_secs
    }

    /// Waits for the worker to exit (after `exit`), then kills it if it has not.
    pub async fn finish(mut self) {
        let _ = self.send("exit").await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A set of `__clients` workers driven together.
pub struct Fleet {
    workers: Vec<Worker>,
    connections: Vec<usize>,
}

impl Fleet {
    /// Starts one worker per spec and waits until each has connected.
    pub async fn start(specs: &[ClientSpec]) -> anyhow::Result<(Self, Seen)> {
        let mut workers = Vec::new();
        for spec in specs {
            workers.push(Worker::spawn("__clients", &serde_json::to_value(spec)?).await?);
        }
        let mut total = Seen::default();
        for worker in &mut workers {
            let event = worker.next(Duration::from_secs(180)).await?;
            total.merge(&Seen::from_json(&event)?);
        }
        let connections = specs.iter().map(ClientSpec::connections).collect();
        Ok((
            Self {
                workers,
                connections,
            },
            total,
        ))
    }

    async fn all(&mut self, command: &str, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        for worker in &mut self.workers {
            worker.send(command).await?;
        }
        let mut answers = Vec::new();
        for worker in &mut self.workers {
            answers.push(worker.next(timeout).await?);
        }
        Ok(answers)
    }

    /// Zeroes what the workers have seen.
    pub async fn reset(&mut self) -> anyhow::Result<()> {
        self.all("reset", Duration::from_secs(10)).await.map(drop)
    }

    /// What all workers have seen, merged.
    pub async fn report(&mut self) -> anyhow::Result<Seen> {
        let mut total = Seen::default();
        for answer in self.all("report", Duration::from_secs(10)).await? {
            total.merge(&Seen::from_json(&answer)?);
        }
        Ok(total)
    }

    /// ClientMessages at `rate` per second in total for `secs`, split by
    /// each worker's share of the connections.
    pub async fn uplink(&mut self, rate: f64, secs: f64) -> anyhow::Result<u64> {
        let total: usize = self.connections.iter().sum::<usize>().max(1);
        for (worker, share) in self.workers.iter_mut().zip(&self.connections) {
            let worker_rate = rate * *share as f64 / total as f64;
            worker.send(&format!("uplink {worker_rate} {secs}")).await?;
        }
        let mut sent = 0;
        for worker in &mut self.workers {
            let answer = worker.next(Duration::from_secs_f64(secs + 30.0)).await?;
            sent += answer.get("sent").and_then(Value::as_u64).unwrap_or(0);
        }
        Ok(sent)
    }

    /// Closes every connection (close handshakes) and waits for it.
    pub async fn close(&mut self) -> anyhow::Result<()> {
        self.all("close", Duration::from_secs(30)).await.map(drop)
    }

    /// CPU seconds used by all workers so far.
    pub fn cpu_secs(&self) -> f64 {
        self.workers.iter().map(Worker::cpu_secs).sum()
    }

    /// Stops the workers.
    pub async fn finish(self) {
        for worker in self.workers {
            worker.finish().await;
        }
    }
}

/// What a connect storm did, all workers merged.
#[derive(Debug, Default)]
pub struct Storm {
    /// Handshakes completed.
    pub ok: u64,
    /// Handshakes failed.
    pub failed: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Handshake times, µs.
    pub handshakes: Histogram,
    /// Close handshake times, µs.
    pub closes: Histogram,
    /// From the start to the last completed handshake, s.
    pub elapsed_s: f64,
}

/// Runs storm workers (one per spec) and merges what they report.
pub async fn storm(specs: &[StormSpec]) -> anyhow::Result<Storm> {
    let mut workers = Vec::new();
    for spec in specs {
        workers.push(Worker::spawn("__storm", &serde_json::to_value(spec)?).await?);
    }
    let mut out = Storm::default();
    for worker in &mut workers {
        let answer = worker.next(Duration::from_secs(300)).await?;
        out.ok += answer["ok"].as_u64().unwrap_or(0);
        out.failed += answer["failed"].as_u64().unwrap_or(0);
        if out.first_error.is_none() {
            out.first_error = answer["first_error"].as_str().map(str::to_owned);
        }
        for (key, hist) in [
            ("handshake", &mut out.handshakes),
            ("close", &mut out.closes),
        ] {
            let sparse: Sparse = serde_json::from_value(answer[key].clone())?;
            hist.merge(&Histogram::from_sparse(&sparse));
        }
        out.elapsed_s = out
            .elapsed_s
            .max(answer["elapsed_s"].as_f64().unwrap_or(0.0));
    }
    for worker in workers {
        worker.finish().await;
    }
    Ok(out)
}
