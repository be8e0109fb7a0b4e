//! The connection limits ([`ConnectionLimits`], [`LimitExceeded`]) and the
//! counters they are checked against: the connections in total (one atomic
//! counter) and per IP address (a second sharded map). The per-client-id
//! count is the length of the client's entry in the table, checked by
//! `admission` under that shard's lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::table::SHARDS;

/// How many connections may be open at once; a new one over any of these is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections sharing one client id.
    pub per_client: usize,
    /// Connections from one IP address.
    pub per_ip: usize,
    /// Connections in total, on this instance.
    pub total: usize,
}

impl ConnectionLimits {
    /// No limit at all.
    pub const UNLIMITED: Self = Self {
        per_client: usize::MAX,
        per_ip: usize::MAX,
        total: usize::MAX,
    };
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            per_client: 16,
            per_ip: 1000,
            total: 20_000,
        }
    }
}

/// Which connection limit refused a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// The client id already has `limit` connections.
    #[error("this client id already has {limit} open connections, the limit")]
    PerClient {
        /// The limit.
        limit: usize,
    },
    /// The IP address already has `limit` connections.
    #[error("this address already has {limit} open connections, the limit")]
    PerIp {
        /// The limit.
        limit: usize,
    },
    /// The instance already holds `limit` connections.
    #[error("the server holds {limit} connections, its limit; try again later")]
    Total {
        /// The limit.
        limit: usize,
    },
}

/// The slots registered connections hold: one of the total, and one of
/// their address's when it is known.
pub(super) struct Slots {
    total: AtomicUsize,
    per_ip: Box<[Mutex<HashMap<IpAddr, usize>>]>,
    hasher: RandomState,
}

impl Slots {
    /// No slot taken.
    pub(super) fn new() -> Self {
        Self {
            total: AtomicUsize::new(0),
            per_ip: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Takes a slot of the total, whatever the limit.
    pub(super) fn take_unlimited(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a slot of the total, then one of `ip`'s, unless either is at
    /// its limit; a refusal takes nothing.
    pub(super) fn take(
        &self,
        ip: Option<&IpAddr>,
        limits: ConnectionLimits,
    ) -> Result<(), LimitExceeded> {
        self.total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limits.total).then_some(n + 1)
            })
            .map_err(|_| LimitExceeded::Total {
                limit: limits.total,
            })?;
        if let Some(ip) = ip {
            if !self.take_ip(ip, limits.per_ip) {
                self.total.fetch_sub(1, Ordering::Relaxed);
                return Err(LimitExceeded::PerIp {
                    limit: limits.per_ip,
                });
            }
        }
        Ok(())
    }

    /// Gives back the slots a connection from `ip` held.
    pub(super) fn give_back(&self, ip: Option<&IpAddr>) {
        if let Some(ip) = ip {
            self.give_back_ip(ip);
        }
        self.total.fetch_sub(1, Ordering::Relaxed);
    }

    /// Slots taken of the total: the registered connections.
    pub(super) fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Slots taken by connections from `ip`.
    pub(super) fn of_ip(&self, ip: &IpAddr) -> usize {
        self.ip_shard(ip).get(ip).copied().unwrap_or(0)
    }

    fn ip_shard(&self, ip: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Truncating the hash is fine: only its low bits pick the shard.
        let index = (self.hasher.hash_one(ip) as usize) & (SHARDS - 1);
        self.per_ip[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one of `ip`'s slots; false when it has `limit` already.
    fn take_ip(&self, ip: &IpAddr, limit: usize) -> bool {
        let mut shard = self.ip_shard(ip);
        let count = shard.entry(*ip).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                shard.remove(ip);
            }
            return false;
        }
        *count += 1;
        true
    }

    fn give_back_ip(&self, ip: &IpAddr) {
        let mut shard = self.ip_shard(ip);
        if let Some(count) = shard.get_mut(ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(ip);
            }
        }
    }
}
