//! The live connections by client id: [`WsClientRegistry`], the
//! [`ClientRegistry`] the downlink delivers Commands through.
//!
//! The map is split into shards, each behind its own `RwLock`, chosen by a
//! hash of the client id: a delivery takes one shard's read lock for as long
//! as a few `try_send`s take, so clients on other shards — and other
//! deliveries to the same shard — are never held up. No lock is ever held
//! across an `.await` (there is none in here).
//!
//! Each connection owns a bounded queue. A delivery that finds a queue full
//! does not wait: the frame is not counted as taken and the connection is
//! marked slow (its session closes with 1013), so one client that cannot keep
//! up never slows down the others.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use domain::{ClientId, ClientRegistry, Frame};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// How many shards the map is split into; a power of two.
const SHARDS: usize = 64;

/// Identifies one connection for as long as the process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl ConnectionId {
    /// The id as a number (for logs and metrics).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The registry's side of one connection.
struct ConnectionHandle {
    id: ConnectionId,
    outbound: mpsc::Sender<Frame>,
    slow: CancellationToken,
}

type Shard = RwLock<HashMap<ClientId, Vec<ConnectionHandle>>>;

struct Inner {
    shards: Box<[Shard]>,
    hasher: RandomState,
    next_id: AtomicU64,
    connections: AtomicUsize,
}

impl Inner {
    fn shard(&self, client_id: &ClientId) -> &Shard {
        // Truncating the hash is fine: only its low bits pick the shard.
        let index = (self.hasher.hash_one(client_id) as usize) & (SHARDS - 1);
        &self.shards[index]
    }

    // Nothing panics while a shard lock is held, but if something ever did,
    // the map is still consistent: keep serving rather than cascade the panic.
    fn read(
        &self,
        client_id: &ClientId,
    ) -> RwLockReadGuard<'_, HashMap<ClientId, Vec<ConnectionHandle>>> {
        self.shard(client_id)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(
        &self,
        client_id: &ClientId,
    ) -> RwLockWriteGuard<'_, HashMap<ClientId, Vec<ConnectionHandle>>> {
        self.shard(client_id)
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The WebSocket connections of this instance, by client id; several
/// connections may share one id and each gets every frame for it.
///
/// Cheap to clone: clones share the same connections.
#[derive(Clone)]
pub struct WsClientRegistry {
    inner: Arc<Inner>,
}

impl fmt::Debug for WsClientRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsClientRegistry")
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl Default for WsClientRegistry {
    fn default() -> Self {
        Self::new()
    }
}

/// What a connection gets when it registers: its id, the queue its frames
/// arrive on, the signal that it fell behind, and the guard that keeps it
/// registered.
#[derive(Debug)]
pub struct Registration {
    /// The connection's id.
    pub id: ConnectionId,
    /// Frames delivered to the connection, in delivery order. Dropping it
    /// makes further deliveries to this connection count as not taken.
    pub outbound: mpsc::Receiver<Frame>,
    /// Cancelled when a delivery found `outbound` full: the connection must
    /// be closed with 1013. Once cancelled, deliveries skip the connection.
    pub slow: CancellationToken,
    /// Unregisters the connection when dropped, on every exit path.
    pub guard: RegistrationGuard,
}

/// Keeps a connection registered; dropping it removes the connection.
#[must_use = "dropping the guard unregisters the connection at once"]
pub struct RegistrationGuard {
    inner: Arc<Inner>,
    client_id: ClientId,
    id: ConnectionId,
}

impl fmt::Debug for RegistrationGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationGuard")
            .field("client_id", &self.client_id)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        let removed = {
            let mut shard = self.inner.write(&self.client_id);
            let mut removed = false;
            if let Some(connections) = shard.get_mut(&self.client_id) {
                if let Some(at) = connections.iter().position(|c| c.id == self.id) {
                    connections.swap_remove(at);
                    removed = true;
                }
                if connections.is_empty() {
                    shard.remove(&self.client_id);
                }
            }
            removed
        };
        if removed {
            self.inner.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl WsClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                hasher: RandomState::new(),
                next_id: AtomicU64::new(1),
                connections: AtomicUsize::new(0),
            }),
        }
    }

    /// Registers a new connection of `client_id` whose outgoing queue holds
    /// up to `outbound_capacity` frames (at least 1).
    ///
    /// The connection receives deliveries from this moment until the
    /// returned [`Registration::guard`] is dropped.
    pub fn register(&self, client_id: ClientId, outbound_capacity: usize) -> Registration {
        let id = ConnectionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(outbound_capacity.max(1));
        let slow = CancellationToken::new();
        let handle = ConnectionHandle {
            id,
            outbound: tx,
            slow: slow.clone(),
        };
        self.inner
            .write(&client_id)
            .entry(client_id.clone())
            .or_default()
            .push(handle);
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        Registration {
            id,
            outbound: rx,
            slow,
            guard: RegistrationGuard {
                inner: Arc::clone(&self.inner),
                client_id,
                id,
            },
        }
    }

    /// How many connections are registered, over all client ids.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// How many connections `client_id` has registered.
    pub fn connections_of(&self, client_id: &ClientId) -> usize {
        self.inner
            .read(client_id)
            .get(client_id)
            .map_or(0, Vec::len)
    }
}

impl ClientRegistry for WsClientRegistry {
    fn deliver(&self, client_id: &ClientId, frame: &Frame) -> usize {
        let shard = self.inner.read(client_id);
        let Some(connections) = shard.get(client_id) else {
            return 0;
        };
        let mut taken = 0;
        for connection in connections {
            if connection.slow.is_cancelled() {
                // Already being closed: whatever it queued is never written.
                continue;
            }
            match connection.outbound.try_send(Arc::clone(frame)) {
                Ok(()) => taken += 1,
                Err(TrySendError::Full(_)) => {
                    debug!(
                        client_id = %client_id,
                        connection_id = %connection.id,
                        "outgoing queue full, closing slow connection"
                    );
                    connection.slow.cancel();
                }
                Err(TrySendError::Closed(_)) => {}
            }
        }
        taken
    }

    fn connection_count(&self) -> usize {
        WsClientRegistry::connection_count(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id(raw: &str) -> ClientId {
        ClientId::parse(raw).unwrap()
    }

    fn frame(text: &str) -> Frame {
        Arc::from(text)
    }

    #[test]
    fn every_connection_of_the_id_gets_the_frame_and_no_other_id_does() {
        let registry = WsClientRegistry::new();
        let mut first = registry.register(id("alice"), 4);
        let mut second = registry.register(id("alice"), 4);
        let mut other = registry.register(id("bob"), 4);
        assert_ne!(first.id, second.id);

        assert_eq!(registry.deliver(&id("alice"), &frame("hello")), 2);

        assert_eq!(&*first.outbound.try_recv().unwrap(), "hello");
        assert_eq!(&*second.outbound.try_recv().unwrap(), "hello");
        assert!(other.outbound.try_recv().is_err());
        assert_eq!(registry.deliver(&id("nobody"), &frame("x")), 0);
        assert_eq!(registry.connections_of(&id("alice")), 2);
        assert_eq!(registry.connections_of(&id("bob")), 1);
        assert_eq!(registry.connection_count(), 3);
    }

    #[test]
    fn a_full_queue_does_not_count_and_marks_the_connection_slow() {
        let registry = WsClientRegistry::new();
        let mut slow = registry.register(id("alice"), 1);
        let mut quick = registry.register(id("alice"), 8);

        assert_eq!(registry.deliver(&id("alice"), &frame("1")), 2);
        assert!(!slow.slow.is_cancelled());
        assert_eq!(&*quick.outbound.try_recv().unwrap(), "1");

        // `slow` did not read its frame: its queue of one is full.
        assert_eq!(registry.deliver(&id("alice"), &frame("2")), 1);
        assert!(slow.slow.is_cancelled());
        assert!(!quick.slow.is_cancelled());
        assert_eq!(&*quick.outbound.try_recv().unwrap(), "2");

        // Once marked slow it takes nothing more, even with room again.
        assert_eq!(&*slow.outbound.try_recv().unwrap(), "1");
        assert_eq!(registry.deliver(&id("alice"), &frame("3")), 1);
        assert!(slow.outbound.try_recv().is_err());
    }

    #[test]
    fn a_closed_receiver_does_not_count() {
        let registry = WsClientRegistry::new();
        let registration = registry.register(id("alice"), 4);
        let Registration {
            outbound, guard, ..
        } = registration;
        drop(outbound);
        assert_eq!(registry.deliver(&id("alice"), &frame("x")), 0);
        assert_eq!(registry.connection_count(), 1);
        drop(guard);
        assert_eq!(registry.connection_count(), 0);
    }

    #[test]
    fn dropping_the_registration_unregisters_it() {
        let registry = WsClientRegistry::new();
        let first = registry.register(id("alice"), 4);
        let mut second = registry.register(id("alice"), 4);
        assert_eq!(registry.connection_count(), 2);

        drop(first);
        assert_eq!(registry.connection_count(), 1);
        assert_eq!(registry.connections_of(&id("alice")), 1);
        assert_eq!(registry.deliver(&id("alice"), &frame("x")), 1);
        assert_eq!(&*second.outbound.try_recv().unwrap(), "x");

        drop(second);
        assert_eq!(registry.connection_count(), 0);
        assert_eq!(registry.connections_of(&id("alice")), 0);
        assert_eq!(registry.deliver(&id("alice"), &frame("y")), 0);
    }

    #[test]
    fn many_ids_spread_over_shards_stay_apart() {
        let registry = WsClientRegistry::new();
        let mut registrations: Vec<_> = (0..500)
            .map(|n| registry.register(id(&format!("client-{n}")), 2))
            .collect();
        assert_eq!(registry.connection_count(), 500);
        for n in 0..500 {
            assert_eq!(
                registry.deliver(&id(&format!("client-{n}")), &frame(&n.to_string())),
                1
            );
        }
        for (n, registration) in registrations.iter_mut().enumerate() {
            assert_eq!(&*registration.outbound.try_recv().unwrap(), n.to_string());
            assert!(registration.outbound.try_recv().is_err());
        }
        registrations.clear();
        assert_eq!(registry.connection_count(), 0);
    }
}
