//! One connection as the registry holds it: its id ([`ConnectionId`], drawn
//! from an [`IdSource`]), the registry's side of it (`ConnectionHandle`:
//! the sender of its outgoing queue, its slow signal, an operator's close
//! order) and what an operator sees of it ([`ConnectionInfo`]).

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use domain::Frame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Identifies one connection for as long as the process runs — and, in
/// practice, across replicas: each registry counts from a random start, so
/// a control message naming a connection (it travels to every replica in
/// fanout mode) closes that one and not another replica's namesake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The id as a number (for logs and metrics).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The id of that number (as [`ConnectionId::get`] gave it).
    pub fn from_raw(n: u64) -> Self {
        Self(n)
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Hands out the ids of one registry's connections, each once.
#[derive(Debug)]
pub(super) struct IdSource(AtomicU64);

impl IdSource {
    /// Starts at a random id below 2^52, so that ids (and a few billion
    /// after them) stay exact as JavaScript numbers.
    pub(super) fn new() -> Self {
        Self(AtomicU64::new((RandomState::new().hash_one(0u8) >> 12) | 1))
    }

    /// The next id.
    pub(super) fn next(&self) -> ConnectionId {
        ConnectionId(self.0.fetch_add(1, Ordering::Relaxed))
    }
}

/// The registry's side of one connection.
pub(super) struct ConnectionHandle {
    pub(super) id: ConnectionId,
    pub(super) outbound: mpsc::Sender<Frame>,
    pub(super) slow: CancellationToken,
    /// Opened with `ack=true`: gets Commands wrapped with a delivery id and
    /// acknowledges them.
    pub(super) acknowledging: bool,
    /// The client's address, when known.
    pub(super) ip: Option<IpAddr>,
    /// When it registered.
    pub(super) since: SystemTime,
    /// Set by an operator's disconnect: the close code and reason (the
    /// session learns of it through `slow`).
    pub(super) close_order: Option<Box<(u16, String)>>,
}

impl ConnectionHandle {
    /// What an operator sees of it.
    pub(super) fn info(&self) -> ConnectionInfo {
        ConnectionInfo {
            id: self.id,
            ip: self.ip,
            since: self.since,
            acknowledging: self.acknowledging,
            queued: self.outbound.max_capacity() - self.outbound.capacity(),
        }
    }
}

/// What an operator sees of one connection (admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// The client's address, when known.
    pub ip: Option<IpAddr>,
    /// When it opened.
    pub since: SystemTime,
    /// Opened with `ack=true`.
    pub acknowledging: bool,
    /// Frames waiting in its outgoing queue.
    pub queued: usize,
}
