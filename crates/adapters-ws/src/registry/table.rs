//! The connection table: client id → its connections, split into shards
//! that each sit behind their own `RwLock`, the shard chosen by a hash of
//! the client id. Everything else in the registry reaches connections
//! through here, one shard at a time.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use domain::ClientId;

use super::connection::ConnectionHandle;

/// How many shards the table is split into; a power of two.
pub(super) const SHARDS: usize = 64;

/// One shard's part of the table.
pub(super) type Connections = HashMap<ClientId, Vec<ConnectionHandle>>;

/// The connections by client id, sharded.
pub(super) struct Table {
    shards: Box<[RwLock<Connections>]>,
    hasher: RandomState,
}

impl Table {
    /// An empty table.
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, client_id: &ClientId) -> &RwLock<Connections> {
        // Truncating the hash is fine: only its low bits pick the shard.
        let index = (self.hasher.hash_one(client_id) as usize) & (SHARDS - 1);
        &self.shards[index]
    }

    // Nothing panics while a shard lock is held, but if something ever did,
    // the map is still consistent: keep serving rather than cascade the panic.

    /// The shard of `client_id`, for reading.
    pub(super) fn read(&self, client_id: &ClientId) -> RwLockReadGuard<'_, Connections> {
        self.shard(client_id)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The shard of `client_id`, for writing.
    pub(super) fn write(&self, client_id: &ClientId) -> RwLockWriteGuard<'_, Connections> {
        self.shard(client_id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every shard in turn, for reading (one lock at a time).
    pub(super) fn each_shard(&self) -> impl Iterator<Item = RwLockReadGuard<'_, Connections>> {
        self.shards
            .iter()
            .map(|shard| shard.read().unwrap_or_else(PoisonError::into_inner))
    }
}
