//! The raw baseline: a minimal tokio-tungstenite push server fed by an
//! in-process channel — what the machine does with no bridge logic. It runs
//! as a process of its own (`bench __baseline`), measured like the bridge.
//!
//! A connection to `/<client id>` registers a bounded queue (256 frames,
//! like the bridge's default); a generator pushes the same Commands the
//! bridge workloads send, round robin over the registered client ids, every
//! socket of an id getting each. Each frame is one `send` (write + flush).
//! Commands on stdin: `push <commands/s> <secs>`; answers one JSON line.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::frames;

/// Frames a connection may have queued (the bridge's default `outbound_queue`).
const QUEUE: usize = 256;
/// Read buffer of each connection.
pub const READ_BUFFER: usize = 4096;

type Registry = Arc<Mutex<BTreeMap<String, Vec<(u64, mpsc::Sender<Arc<str>>)>>>>;

/// `bench __baseline`: prints `{"port": N}`, serves until stdin ends.
pub fn baseline_server() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let port = listener.local_addr()?.port();
            let registry: Registry = Arc::default();
            tokio::spawn(accept(listener, registry.clone()));
            println!("{}", json!({ "port": port }));
            let mut stdin = crate::clients::stdin_lines();
            while let Some(line) = stdin.recv().await {
                let words: Vec<&str> = line.split_whitespace().collect();
                let answer = match words.as_slice() {
                    ["push", rate, secs] => {
                        let (rate, secs): (f64, f64) = (rate.parse()?, secs.parse()?);
                        push(&registry, rate, Duration::from_secs_f64(secs)).await
                    }
                    ["connections"] => {
                        let n: usize = lock(&registry).values().map(Vec::len).sum();
                        json!({ "connections": n })
                    }
                    ["exit"] => break,
                    _ => json!({ "error": format!("unknown command {line:?}") }),
                };
                println!("{answer}");
            }
            anyhow::Ok(())
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept(listener: TcpListener, registry: Registry) {
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        next_id += 1;
        tokio::spawn(connection(stream, next_id, registry.clone()));
    }
}

async fn connection(stream: TcpStream, id: u64, registry: Registry) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    // The error type is tungstenite's, not ours.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().trim_start_matches('/').to_owned();
        Ok(response)
    };
    // A 4 KiB read buffer (tungstenite's default is 128 KiB, zero-filled):
    // what a server tuned for many small frames would use.
    let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER);
    let Ok(mut ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(QUEUE);
    lock(&registry)
        .entry(path.clone())
        .or_default()
        .push((id, tx));
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(frame) => {
                    if ws.send(Message::text(&*frame)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            message = ws.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    {
        let mut map = lock(&registry);
        if let Some(list) = map.get_mut(&path) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                map.remove(&path);
            }
        }
    }
    let _ = ws.close(None).await;
}

/// Pushes Commands at `rate` per second for `duration`, round robin over
/// the client ids; returns what was pushed and dropped (queue full).
async fn push(registry: &Registry, rate: f64, duration: Duration) -> serde_json::Value {
    let ids: Vec<String> = lock(registry).keys().cloned().collect();
    if ids.is_empty() || rate <= 0.0 {
        return json!({ "commands": 0, "frames": 0, "dropped": 0 });
    }
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let (mut commands, mut frames_pushed, mut dropped) = (0u64, 0u64, 0u64);
    loop {
        tick.tick().await;
        let elapsed = started.elapsed().min(duration);
        let due = (rate * elapsed.as_secs_f64()) as u64;
        while commands < due {
            let id = &ids[commands as usize % ids.len()];
            let frame: Arc<str> = Arc::from(frames::command(id, commands, frames::now_nanos(), 0));
            if let Some(list) = lock(registry).get(id) {
                for (_, tx) in list {
                    match tx.try_send(frame.clone()) {
                        Ok(()) => frames_pushed += 1,
                        Err(_) => dropped += 1,
                    }
                }
            }
            commands += 1;
        }
        if elapsed >= duration {
            return json!({ "commands": commands, "frames": frames_pushed, "dropped": dropped });
        }
    }
}
