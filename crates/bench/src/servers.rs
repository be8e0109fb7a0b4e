//! The processes under test and around them, as the parent drives them:
//! the SQS/SNS stub (`bench __stub`), the raw baseline (`bench __baseline`)
//! and the real `wsbridge serve` binary. Each is killed when its handle is
//! dropped; the bridge is stopped with SIGTERM first.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::frames;
use crate::procfs::Probe;

/// A port free right now on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A process under measurement.
pub trait Measured {
    /// Its probe (CPU time and memory from `/proc`).
    fn probe(&self) -> Probe;
}

// ---------------------------------------------------------------------------
// The stub

/// `bench __stub`: the embedded emulator in a process of its own, serving
/// until its stdin closes (that is, until the parent is gone).
pub fn stub_process(latency_ms: u64) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let stub = emulator::Emulator::start(emulator::EmulatorConfig {
                faults: emulator::Faults {
                    latency_ms,
                    ..emulator::Faults::default()
                },
                ..emulator::EmulatorConfig::default()
            })
            .await?;
            println!("{}", json!({ "endpoint": stub.endpoint() }));
            let mut stdin = crate::clients::stdin_lines();
            while stdin.recv().await.is_some() {}
            stub.stop().await;
            anyhow::Ok(())
        })
}

/// The stub process.
pub struct Stub {
    _child: Child,
    _stdin: ChildStdin,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    probe: Probe,
    http: reqwest::Client,
}

impl Measured for Stub {
    fn probe(&self) -> Probe {
        self.probe
    }
}

impl Stub {
    /// Starts it with `latency_ms` per call.
    pub async fn start(latency_ms: u64) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["__stub", "--latency-ms", &latency_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the stub")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the stub exited at once"))?;
        let stdin = child.stdin.take().ok_or_else(|| anyhow!("no stub stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stub stdout"))?;
        let line = tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .map_err(|_| anyhow!("the stub did not start within 10 s"))??
        .ok_or_else(|| anyhow!("the stub exited"))?;
        let hello: Value = serde_json::from_str(&line)?;
        let endpoint = hello["endpoint"]
            .as_str()
            .ok_or_else(|| anyhow!("stub said {line}"))?
            .to_owned();
        Ok(Self {
            _child: child,
            _stdin: stdin,
            endpoint,
            probe: Probe::new(pid),
            http: reqwest::Client::new(),
        })
    }

    /// Publishes `messages` to `topic_arn` through the stub's bulk route
    /// (SNS fan-out to the subscribed queues, in envelopes).
    pub async fn publish(&self, topic_arn: &str, messages: Vec<String>) -> anyhow::Result<()> {
        let answer = self
            .http
            .post(format!("{}/__stub/send", self.endpoint))
            .json(&json!({ "topic_arn": topic_arn, "messages": messages }))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!(
                "stub bulk send: {}",
                answer.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Puts `bodies` on the queue at `queue_url` through the stub's bulk route.
    pub async fn load(&self, queue_url: &str, bodies: Vec<String>) -> anyhow::Result<()> {
        let answer = self
            .http
            .post(format!("{}/__stub/send", self.endpoint))
            .json(&json!({ "queue": queue_url, "bodies": bodies }))
            .send()
            .await?;
        if !answer.status().is_success() {
            bail!(
                "stub bulk load: {}",
                answer.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    /// The stub's counters.
    pub async fn stats(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/__stub/stats", self.endpoint))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Zeroes the per-operation counters.
    pub async fn reset_stats(&self) -> anyhow::Result<()> {
        self.http
            .post(format!("{}/__stub/stats/reset", self.endpoint))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }

    /// Calls and entries of `operation` in `stats`.
    pub fn calls(stats: &Value, operation: &str) -> (u64, u64) {
        let op = &stats["operations"][operation];
        (
            op["calls"].as_u64().unwrap_or(0),
            op["entries"].as_u64().unwrap_or(0),
        )
    }
}

/// Publishes Commands through the stub at `rate` per second for
/// `duration`, round robin over `ids`, each padded by `pad` bytes; batched
/// every 5 ms. Returns how many were published.
pub async fn inject(
    stub: &Stub,
    topic_arn: &str,
    ids: &[String],
    rate: f64,
    duration: Duration,
    pad: usize,
) -> anyhow::Result<u64> {
    if ids.is_empty() || rate <= 0.0 {
        return Ok(0);
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed().min(duration);
        let due = (rate * elapsed.as_secs_f64()) as u64;
        if due > sent {
            let t = frames::now_nanos();
            let batch: Vec<String> = (sent..due)
                .map(|n| frames::command(&ids[n as usize % ids.len()], n, t, pad))
                .collect();
            stub.publish(topic_arn, batch).await?;
            sent = due;
        }
        if elapsed >= duration {
            return Ok(sent);
        }
    }
}

// ---------------------------------------------------------------------------
// The baseline

/// The baseline server process.
pub struct Baseline {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its port.
    pub port: u16,
    probe: Probe,
}

impl Measured for Baseline {
    fn probe(&self) -> Probe {
        self.probe
    }
}

impl Baseline {
    /// Starts it.
    pub async fn start() -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("__baseline")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the baseline")?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("the baseline exited at once"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("no baseline stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no baseline stdout"))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .map_err(|_| anyhow!("the baseline did not start"))??
            .ok_or_else(|| anyhow!("the baseline exited"))?;
        let hello: Value = serde_json::from_str(&line)?;
        let port = hello["port"]
            .as_u64()
            .ok_or_else(|| anyhow!("baseline said {line}"))? as u16;
        Ok(Self {
            _child: child,
            stdin,
            lines,
            port,
            probe: Probe::new(pid),
        })
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    async fn ask(&mut self, line: &str, timeout: Duration) -> anyhow::Result<Value> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| anyhow!("the baseline did not answer {line:?}"))??
            .ok_or_else(|| anyhow!("the baseline exited"))?;
        Ok(serde_json::from_str(&line)?)
    }

    /// Pushes Commands at `rate` for `secs`; returns when pushed (not delivered).
    pub async fn push(&mut self, rate: f64, secs: f64) -> anyhow::Result<Value> {
        self.ask(
            &format!("push {rate} {secs}"),
            Duration::from_secs_f64(secs + 30.0),
        )
        .await
    }

    /// Open connections.
    pub async fn connections(&mut self) -> anyhow::Result<u64> {
        let answer = self.ask("connections", Duration::from_secs(10)).await?;
        Ok(answer["connections"].as_u64().unwrap_or(0))
    }
}

// ---------------------------------------------------------------------------
// The bridge

/// Sends SIGTERM to `pid` within a second of this process going away
/// while `pid` still runs, however this process goes (a `kill -9` of the
/// bench runs no destructor). The bridge, unlike the bench's own workers,
/// does not watch its stdin.
fn watchdog(pid: u32) {
    const SCRIPT: &str = r#"parent="$1"; child="$2"
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1; done
if kill -0 "$child" 2>/dev/null; then kill -TERM "$child"; fi"#;
    let spawned = std::process::Command::new("sh")
        .args(["-c", SCRIPT, "bench-watchdog"])
        .arg(std::process::id().to_string())
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        eprintln!(
            "bench: no watchdog for wsbridge pid {pid} (sh: {e}); it may outlive an interrupted run"
        );
    }
}

/// A `wsbridge serve` process.
pub struct Bridge {
    child: Child,
    /// Its port.
    pub port: u16,
    probe: Probe,
    http: reqwest::Client,
}

impl Measured for Bridge {
    fn probe(&self) -> Probe {
        self.probe
    }
}

impl Bridge {
    /// Starts `bin serve` (under the command line `wrap`, when not empty)
    /// with `env` (plus `BRIDGE_PORT`), logs to `log_dir`; waits until
    /// `/ready` answers 200.
    pub async fn start(
        wrap: &[String],
        bin: &Path,
        env: &[(String, String)],
        log_dir: &Path,
        name: &str,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let mut command = match wrap.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin);
                command
            }
            None => Command::new(bin),
        };
        command
            .arg("serve")
            .current_dir(log_dir)
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BRIDGE_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("wsbridge exited at once"))?;
        watchdog(pid);
        let http = reqwest::Client::new();
        let patience = Duration::from_secs(if wrap.is_empty() { 30 } else { 300 });
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "wsbridge exited ({status}) before it was ready; log {}:\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            let ready = http
                .get(format!("http://127.0.0.1:{port}/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "wsbridge was not ready within {patience:?}; log {}",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            child,
            port,
            probe: Probe::new(pid),
            http,
        })
    }

    /// `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The value of a metric line starting with `prefix` (e.g.
    /// `wsbridge_open_connections` or `wsbridge_connections_closed_total{code="1013"}`).
    pub async fn metric(&self, prefix: &str) -> anyhow::Result<f64> {
        let text = self
            .http
            .get(format!("http://127.0.0.1:{}/metrics", self.port))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// SIGTERM, then a kill after 60 s (a profiler may take a while to write).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }
}
