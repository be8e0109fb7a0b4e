//! Connect storms: the `bench __storm` worker (connections opened, the
//! handshake timed, and closed at once) and the parent's side that runs
//! storm workers and merges what they report ([`storm`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::fleet::Worker;
use super::open;
use crate::hist::{Histogram, Sparse};

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
