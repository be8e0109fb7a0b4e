//! The parent's side: a worker process and its pipes ([`Worker`]) and a set
//! of `__clients` workers driven together ([`Fleet`]).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::seen::Seen;
use super::ClientSpec;
use crate::procfs::Probe;

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
