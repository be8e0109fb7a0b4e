//! Measuring: a push of Commands timed until its frames have arrived with
//! the CPU each side used ([`measure`]), the rate row it makes, peak RSS
//! sampling, and the units rows are written in.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::clients::{Fleet, Seen};
use crate::frames;
use crate::procfs::Probe;
use crate::report::{round, Row};

pub(super) const MIB: f64 = 1024.0;

/// A measured push of Commands.
pub(super) struct Outcome {
    /// From the start to the last frame (at least the push's duration).
    pub(super) span: Duration,
    pub(super) commands: u64,
    pub(super) seen: Seen,
    pub(super) elapsed: Duration,
    pub(super) cpu_secs: f64,
    pub(super) loadgen_cpu_secs: f64,
    pub(super) stub_cpu_secs: f64,
}

/// The maximum resident memory of a process, sampled every 100 ms.
pub(super) struct Sampler {
    pub(super) max_kib: Arc<AtomicU64>,
    pub(super) task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub(super) fn start(probe: Probe) -> Self {
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

    pub(super) fn stop(self) -> u64 {
        self.max_kib.load(Ordering::Relaxed)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Tasks aborted when this is dropped, on every path out of a workload.
pub(super) struct Tasks(pub(super) Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

pub(super) fn ms(us: Option<u64>) -> Value {
    us.map_or(Value::Null, |us| round(us as f64 / 1000.0, 2))
}

pub(super) fn mib(kib: u64) -> Value {
    round(kib as f64 / MIB, 1)
}

/// Pushes with `push`, then waits until `frames_per_command` frames per
/// Command have arrived (or nothing moved for 3 s); measures the server's
/// CPU over that span.
pub(super) async fn measure<Fut>(
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

pub(super) fn rate_row(
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
