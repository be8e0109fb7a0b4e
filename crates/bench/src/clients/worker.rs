//! The `bench __clients` worker process: opens its connections, records
//! what arrives, sends ClientMessages when told to, and answers the
//! parent's commands on stdin with one JSON line each.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use super::seen::Seen;
use super::{lock, open, stdin_lines, ClientSpec, Ws};
use crate::frames;

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
