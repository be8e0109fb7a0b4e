//! What the proxy reports back: each request it saw ([`Seen`], with its
//! [`Outcome`]) and the counts of what it did ([`ProxyStats`]).

use std::collections::BTreeMap;
use std::time::Instant;

/// What the proxy did with one request or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded to the target (perhaps late).
    Forwarded,
    /// The connection was reset: a new connection while refusing (then the
    /// operation is unknown, and empty), or a request under [`Fault::Refuse`](super::Fault::Refuse).
    Refused,
    /// Read and never answered.
    BlackHoled,
    /// Answered by the proxy with this status.
    Answered(u16),
}

/// One request (or refused connection) the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// When the proxy saw it.
    pub at: Instant,
    /// The operation (`ReceiveMessage`, `Publish`, …); empty when unknown.
    pub operation: String,
    /// What the proxy did.
    pub outcome: Outcome,
    /// The access key id that signed it (`Credential=KEY/…` of its SigV4
    /// `Authorization` header); empty for a refused connection or an
    /// unsigned request. Lets a test check which credentials were used when.
    pub access_key_id: String,
}

/// Counts of what the proxy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted (including those reset at once).
    pub connections: u64,
    /// Complete requests read, whatever happened to them.
    pub requests: u64,
    /// Requests forwarded to the target.
    pub forwarded: u64,
    /// Requests answered by the proxy itself.
    pub answered: u64,
    /// Requests swallowed by a black hole.
    pub black_holed: u64,
    /// Connections reset as soon as they were accepted (standing mode
    /// [`Fault::Refuse`](super::Fault::Refuse)), before any request could be read.
    pub refused: u64,
    /// Connections reset in all: refused ones, ones reset at a request, and
    /// ones reset by [`FaultProxy::reset_connections`](super::FaultProxy::reset_connections) or a switch to [`Fault::Refuse`](super::Fault::Refuse).
    pub resets: u64,
}

impl ProxyStats {
    /// What clients tried: requests read plus connections refused before any
    /// request could be read (each attempt of an SDK call is one or the other).
    pub fn attempts(&self) -> u64 {
        self.requests + self.refused
    }
}

/// How many of each operation were seen (handy in failure messages).
pub fn operations(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in seen {
        *counts.entry(s.operation.clone()).or_insert(0) += 1;
    }
    counts
}
