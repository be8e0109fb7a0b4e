//! Load-generating WebSocket clients, in worker processes of their own
//! (`bench __clients`, `bench __storm`): one current-thread runtime each,
//! bound to a source address of their own (127.0.0.x), so file-descriptor
//! and ephemeral-port limits apply per worker.
//!
//! The parent talks to a `__clients` worker over its stdin/stdout, one line
//! each way: `reset`, `report`, `uplink <msgs/s> <secs>`, `close`, `exit`.
//!
//! Here: what every worker shares (the [`ClientSpec`], opening a
//! connection, reading stdin); in the parts: what a worker saw (`seen`), the
//! `__clients` worker (`worker`), connect storms (`storm`), and the parent's
//! side (`fleet`).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

mod fleet;
mod seen;
mod storm;
mod worker;

pub use fleet::Fleet;
pub use seen::Seen;
pub use storm::{storm, storm_worker, StormSpec};
pub use worker::client_worker;

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
