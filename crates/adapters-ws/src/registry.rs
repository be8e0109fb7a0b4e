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
//!
//! [`WsClientRegistry::try_register`] also enforces the connection limits
//! (per client id, per IP address, in total): the check and the registration
//! are one step, under the same shard locks, so two connections racing for
//! the last slot cannot both get it. Per-IP counts live in a second sharded
//! map; the total is one atomic counter.
//!
//! The registry also owns the instance's [`FragmentBudget`]: the bytes all
//! its connections hold in incomplete messages, which every session charges.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};
use std::time::SystemTime;

use domain::acks::{ack_frame, DeliveryId};
use domain::{ClientId, ClientRegistry, Control, Frame, Handoff};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::fragment_budget::FragmentBudget;

/// How many shards the map is split into; a power of two.
const SHARDS: usize = 64;

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

/// A random first id, below 2^52 so that ids (and a few billion after them)
/// stay exact as JavaScript numbers.
fn first_connection_id() -> u64 {
    (RandomState::new().hash_one(0u8) >> 12) | 1
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
    /// Opened with `ack=true`: gets Commands wrapped with a delivery id and
    /// acknowledges them.
    acknowledging: bool,
    /// The client's address, when known.
    ip: Option<IpAddr>,
    /// When it registered.
    since: SystemTime,
    /// Set by an operator's disconnect: the close code and reason (the
    /// session learns of it through `slow`).
    close_order: Option<Box<(u16, String)>>,
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

type Shard = RwLock<HashMap<ClientId, Vec<ConnectionHandle>>>;
type IpShard = Mutex<HashMap<IpAddr, usize>>;

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

struct Inner {
    shards: Box<[Shard]>,
    ip_shards: Box<[IpShard]>,
    hasher: RandomState,
    next_id: AtomicU64,
    connections: AtomicUsize,
    /// Connections closed but still finishing their publishes (see
    /// [`RegistrationGuard::into_closing`]).
    closing: AtomicUsize,
    /// Told the client id whose last acknowledging connection closed.
    on_last_acknowledging_gone: OnceLock<ClientGone>,
    fragments: FragmentBudget,
}

/// Told a client id that can no longer acknowledge anything.
type ClientGone = Box<dyn Fn(&ClientId) + Send + Sync>;

impl Inner {
    fn ip_shard(&self, ip: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Truncating the hash is fine: only its low bits pick the shard.
        let index = (self.hasher.hash_one(ip) as usize) & (SHARDS - 1);
        self.ip_shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one of `ip`'s slots; false when it has `limit` already.
    fn reserve_ip(&self, ip: &IpAddr, limit: usize) -> bool {
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

    fn release_ip(&self, ip: &IpAddr) {
        let mut shard = self.ip_shard(ip);
        if let Some(count) = shard.get_mut(ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                shard.remove(ip);
            }
        }
    }

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
    ip: Option<IpAddr>,
}

impl fmt::Debug for RegistrationGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationGuard")
            .field("client_id", &self.client_id)
            .field("id", &self.id)
            .field("ip", &self.ip)
            .finish()
    }
}

impl RegistrationGuard {
    /// The close code and reason an operator's disconnect set, if any.
    pub fn close_order(&self) -> Option<(u16, String)> {
        let shard = self.inner.read(&self.client_id);
        shard
            .get(&self.client_id)?
            .iter()
            .find(|c| c.id == self.id)?
            .close_order
            .as_deref()
            .cloned()
    }
}

impl RegistrationGuard {
    /// Unregisters the connection now (its slot under every limit is free
    /// for a new one at once) and returns the token that counts it among the
    /// connections still finishing their publishes, until dropped.
    pub fn into_closing(self) -> Closing {
        self.inner.closing.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(&self.inner);
        drop(self);
        Closing { inner }
    }
}

/// A connection whose socket is closed but whose publishes (its last client
/// messages, its `$disconnect`) are still under way; counted by
/// [`WsClientRegistry::closing_count`] until dropped.
#[must_use = "dropping it ends the count at once"]
pub struct Closing {
    inner: Arc<Inner>,
}

impl fmt::Debug for Closing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closing").finish_non_exhaustive()
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        self.inner.closing.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        let (removed, last_acknowledging) = {
            let mut shard = self.inner.write(&self.client_id);
            let mut removed = false;
            let mut last_acknowledging = false;
            if let Some(connections) = shard.get_mut(&self.client_id) {
                if let Some(at) = connections.iter().position(|c| c.id == self.id) {
                    let gone = connections.swap_remove(at);
                    removed = true;
                    last_acknowledging =
                        gone.acknowledging && !connections.iter().any(|c| c.acknowledging);
                }
                if connections.is_empty() {
                    shard.remove(&self.client_id);
                }
            }
            (removed, last_acknowledging)
        };
        if last_acknowledging {
            if let Some(notify) = self.inner.on_last_acknowledging_gone.get() {
                notify(&self.client_id);
            }
        }
        if removed {
            if let Some(ip) = &self.ip {
                self.inner.release_ip(ip);
            }
            self.inner.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl WsClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        let shards = (0..SHARDS).map(|_| Shard::default()).collect();
        let ip_shards = (0..SHARDS).map(|_| IpShard::default()).collect();
        Self {
            inner: Arc::new(Inner {
                shards,
                ip_shards,
                hasher: RandomState::new(),
                next_id: AtomicU64::new(first_connection_id()),
                connections: AtomicUsize::new(0),
                closing: AtomicUsize::new(0),
                on_last_acknowledging_gone: OnceLock::new(),
                fragments: FragmentBudget::default(),
            }),
        }
    }

    /// `notify` is told the client id whenever the last acknowledging
    /// (`ack=true`) connection of a client closes: nobody can acknowledge
    /// its held deliveries any more. Set once; called with no lock held.
    pub fn on_last_acknowledging_gone(&self, notify: impl Fn(&ClientId) + Send + Sync + 'static) {
        let _ = self.inner.on_last_acknowledging_gone.set(Box::new(notify));
    }

    /// Registers a new connection of `client_id` whose outgoing queue holds
    /// up to `outbound_capacity` frames (at least 1), without any limit.
    ///
    /// The connection receives deliveries from this moment until the
    /// returned [`Registration::guard`] is dropped.
    pub fn register(&self, client_id: ClientId, outbound_capacity: usize) -> Registration {
        self.inner.connections.fetch_add(1, Ordering::Relaxed);
        self.insert(
            self.inner.write(&client_id),
            client_id,
            None,
            outbound_capacity,
            false,
        )
    }

    /// Registers a new connection of `client_id` from `ip` like
    /// [`WsClientRegistry::register`], unless that would take the client id,
    /// the address or the instance over `limits`; then nothing is registered.
    ///
    /// Checking and registering are one step: however many connections race
    /// for the last slot, only one gets it.
    pub fn try_register(
        &self,
        client_id: ClientId,
        ip: Option<IpAddr>,
        outbound_capacity: usize,
        limits: ConnectionLimits,
    ) -> Result<Registration, LimitExceeded> {
        self.try_register_with(client_id, ip, outbound_capacity, limits, false)
    }

    /// Like [`WsClientRegistry::try_register`]; with `acknowledging`, the
    /// connection gets Commands wrapped with a delivery id that it
    /// acknowledges (`ack=true`).
    pub fn try_register_with(
        &self,
        client_id: ClientId,
        ip: Option<IpAddr>,
        outbound_capacity: usize,
        limits: ConnectionLimits,
        acknowledging: bool,
    ) -> Result<Registration, LimitExceeded> {
        // Reserve in order total → IP → client id, and give back what was
        // reserved when a later step refuses.
        self.inner
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limits.total).then_some(n + 1)
            })
            .map_err(|_| LimitExceeded::Total {
                limit: limits.total,
            })?;
        if let Some(ip) = &ip {
            if !self.inner.reserve_ip(ip, limits.per_ip) {
                self.inner.connections.fetch_sub(1, Ordering::Relaxed);
                return Err(LimitExceeded::PerIp {
                    limit: limits.per_ip,
                });
            }
        }
        let shard = self.inner.write(&client_id);
        let held = shard.get(&client_id).map_or(0, Vec::len);
        if held >= limits.per_client {
            drop(shard);
            if let Some(ip) = &ip {
                self.inner.release_ip(ip);
            }
            self.inner.connections.fetch_sub(1, Ordering::Relaxed);
            return Err(LimitExceeded::PerClient {
                limit: limits.per_client,
            });
        }
        Ok(self.insert(shard, client_id, ip, outbound_capacity, acknowledging))
    }

    /// Adds the connection to its (already locked) shard; the total counter
    /// has been incremented by the caller.
    fn insert(
        &self,
        mut shard: RwLockWriteGuard<'_, HashMap<ClientId, Vec<ConnectionHandle>>>,
        client_id: ClientId,
        ip: Option<IpAddr>,
        outbound_capacity: usize,
        acknowledging: bool,
    ) -> Registration {
        let id = ConnectionId(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(outbound_capacity.max(1));
        let slow = CancellationToken::new();
        let handle = ConnectionHandle {
            id,
            outbound: tx,
            slow: slow.clone(),
            acknowledging,
            ip,
            since: SystemTime::now(),
            close_order: None,
        };
        shard.entry(client_id.clone()).or_default().push(handle);
        drop(shard);
        Registration {
            id,
            outbound: rx,
            slow,
            guard: RegistrationGuard {
                inner: Arc::clone(&self.inner),
                client_id,
                id,
                ip,
            },
        }
    }

    /// Client ids with their connection counts, in id order, after `after`
    /// (a cursor: the last id of the previous page), at most `limit`; and
    /// the cursor of the next page, when there is one.
    pub fn clients(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(ClientId, usize)>, Option<String>) {
        let mut all: Vec<(ClientId, usize)> = self
            .inner
            .shards
            .iter()
            .flat_map(|shard| {
                let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
                shard
                    .iter()
                    .filter(|(id, _)| after.is_none_or(|after| id.as_str() > after))
                    .map(|(id, connections)| (id.clone(), connections.len()))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let more = all.len() > limit;
        all.truncate(limit);
        let next = more
            .then(|| all.last().map(|(id, _)| id.as_str().to_owned()))
            .flatten();
        (all, next)
    }

    /// The connections of `client_id`.
    pub fn connection_details(&self, client_id: &ClientId) -> Vec<ConnectionInfo> {
        let shard = self.inner.read(client_id);
        shard.get(client_id).map_or_else(Vec::new, |connections| {
            connections
                .iter()
                .map(|c| ConnectionInfo {
                    id: c.id,
                    ip: c.ip,
                    since: c.since,
                    acknowledging: c.acknowledging,
                    queued: c.outbound.max_capacity() - c.outbound.capacity(),
                })
                .collect()
        })
    }

    /// Closes the connections of `client_id` (only `only`, when given) with
    /// `code` and `reason`; returns how many it closes.
    pub fn disconnect(
        &self,
        client_id: &ClientId,
        only: Option<ConnectionId>,
        code: u16,
        reason: &str,
    ) -> usize {
        let mut shard = self.inner.write(client_id);
        let Some(connections) = shard.get_mut(client_id) else {
            return 0;
        };
        let mut closed = 0;
        for connection in connections
            .iter_mut()
            .filter(|c| only.is_none_or(|id| c.id == id))
        {
            connection.close_order = Some(Box::new((code, reason.to_owned())));
            connection.slow.cancel();
            closed += 1;
        }
        closed
    }

    /// Queues `frame` as it is on every connection of `client_id` (no
    /// delivery id, nothing to acknowledge); returns how many took it.
    pub fn send_frame(&self, client_id: &ClientId, frame: &Frame) -> usize {
        let shard = self.inner.read(client_id);
        shard.get(client_id).map_or(0, |connections| {
            connections
                .iter()
                .filter(|c| !c.slow.is_cancelled())
                .filter(|c| c.outbound.try_send(Arc::clone(frame)).is_ok())
                .count()
        })
    }

    /// How many connections are registered, over all client ids.
    pub fn connection_count(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// How many closed connections are still finishing their publishes
    /// (bounded in time by the session); a graceful shutdown waits for them.
    pub fn closing_count(&self) -> usize {
        self.inner.closing.load(Ordering::Relaxed)
    }

    /// Bytes the connections hold in incomplete (fragmented) messages now,
    /// at most the sessions' `fragment_budget_bytes`.
    pub fn fragment_bytes_held(&self) -> usize {
        self.inner.fragments.held()
    }

    /// The most bytes the connections ever held in incomplete messages at
    /// once.
    pub fn fragment_bytes_peak(&self) -> usize {
        self.inner.fragments.peak()
    }

    /// The budget every session charges the fragments it holds to.
    pub(crate) fn fragment_budget(&self) -> &FragmentBudget {
        &self.inner.fragments
    }

    /// How many connections `client_id` has registered.
    pub fn connections_of(&self, client_id: &ClientId) -> usize {
        self.inner
            .read(client_id)
            .get(client_id)
            .map_or(0, Vec::len)
    }

    /// How many connections registered with [`WsClientRegistry::try_register`]
    /// come from `ip`.
    pub fn connections_from(&self, ip: &IpAddr) -> usize {
        self.inner.ip_shard(ip).get(ip).copied().unwrap_or(0)
    }
}

impl ClientRegistry for WsClientRegistry {
    fn deliver(&self, client_id: &ClientId, frame: &Frame, delivery: DeliveryId) -> Handoff {
        let shard = self.inner.read(client_id);
        let Some(connections) = shard.get(client_id) else {
            return Handoff::default();
        };
        let mut handoff = Handoff::default();
        // Built once, for the first acknowledging connection, and shared.
        let mut wrapped: Option<Frame> = None;
        for connection in connections {
            if connection.slow.is_cancelled() {
                // Already being closed: whatever it queued is never written.
                continue;
            }
            let frame = if connection.acknowledging {
                Arc::clone(wrapped.get_or_insert_with(|| ack_frame(delivery, frame)))
            } else {
                Arc::clone(frame)
            };
            match connection.outbound.try_send(frame) {
                Ok(()) if connection.acknowledging => handoff.awaiting_ack += 1,
                Ok(()) => handoff.immediate += 1,
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
        handoff
    }

    fn connection_count(&self) -> usize {
        WsClientRegistry::connection_count(self)
    }

    fn control(&self, client_id: &ClientId, control: &Control) -> usize {
        match control {
            Control::Disconnect {
                connection_id,
                code,
                reason,
            } => self.disconnect(client_id, connection_id.map(ConnectionId), *code, reason),
            Control::Send { frame } => self.send_frame(client_id, frame),
        }
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
    fn acknowledging_connections_get_the_command_wrapped_with_its_delivery_id() {
        let registry = WsClientRegistry::new();
        let mut plain = registry.register(id("alice"), 4);
        let mut acking = registry
            .try_register_with(id("alice"), None, 4, ConnectionLimits::default(), true)
            .unwrap();
        let handoff = registry.deliver(
            &id("alice"),
            &frame(r#"{"command":"go"}"#),
            DeliveryId::from(7),
        );
        assert_eq!(
            handoff,
            Handoff {
                immediate: 1,
                awaiting_ack: 1
            }
        );
        assert_eq!(&*plain.outbound.try_recv().unwrap(), r#"{"command":"go"}"#);
        assert_eq!(
            &*acking.outbound.try_recv().unwrap(),
            r#"{"delivery_id":"7","command":{"command":"go"}}"#
        );
    }

    #[test]
    fn every_connection_of_the_id_gets_the_frame_and_no_other_id_does() {
        let registry = WsClientRegistry::new();
        let mut first = registry.register(id("alice"), 4);
        let mut second = registry.register(id("alice"), 4);
        let mut other = registry.register(id("bob"), 4);
        assert_ne!(first.id, second.id);

        assert_eq!(
            registry
                .deliver(&id("alice"), &frame("hello"), DeliveryId::from(1))
                .taken(),
            2
        );

        assert_eq!(&*first.outbound.try_recv().unwrap(), "hello");
        assert_eq!(&*second.outbound.try_recv().unwrap(), "hello");
        assert!(other.outbound.try_recv().is_err());
        assert_eq!(
            registry
                .deliver(&id("nobody"), &frame("x"), DeliveryId::from(1))
                .taken(),
            0
        );
        assert_eq!(registry.connections_of(&id("alice")), 2);
        assert_eq!(registry.connections_of(&id("bob")), 1);
        assert_eq!(registry.connection_count(), 3);
    }

    #[test]
    fn a_full_queue_does_not_count_and_marks_the_connection_slow() {
        let registry = WsClientRegistry::new();
        let mut slow = registry.register(id("alice"), 1);
        let mut quick = registry.register(id("alice"), 8);

        assert_eq!(
            registry
                .deliver(&id("alice"), &frame("1"), DeliveryId::from(1))
                .taken(),
            2
        );
        assert!(!slow.slow.is_cancelled());
        assert_eq!(&*quick.outbound.try_recv().unwrap(), "1");

        // `slow` did not read its frame: its queue of one is full.
        assert_eq!(
            registry
                .deliver(&id("alice"), &frame("2"), DeliveryId::from(1))
                .taken(),
            1
        );
        assert!(slow.slow.is_cancelled());
        assert!(!quick.slow.is_cancelled());
        assert_eq!(&*quick.outbound.try_recv().unwrap(), "2");

        // Once marked slow it takes nothing more, even with room again.
        assert_eq!(&*slow.outbound.try_recv().unwrap(), "1");
        assert_eq!(
            registry
                .deliver(&id("alice"), &frame("3"), DeliveryId::from(1))
                .taken(),
            1
        );
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
        assert_eq!(
            registry
                .deliver(&id("alice"), &frame("x"), DeliveryId::from(1))
                .taken(),
            0
        );
        assert_eq!(registry.connection_count(), 1);
        drop(guard);
        assert_eq!(registry.connection_count(), 0);
    }

    #[test]
    fn the_last_acknowledging_connection_of_a_client_is_reported_when_it_goes() {
        let registry = WsClientRegistry::new();
        let gone = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = gone.clone();
        registry.on_last_acknowledging_gone(move |client| {
            log.lock().unwrap().push(client.as_str().to_owned());
        });
        let open = |client: &str, acknowledging: bool| {
            registry
                .try_register_with(
                    id(client),
                    None,
                    4,
                    ConnectionLimits::UNLIMITED,
                    acknowledging,
                )
                .unwrap()
        };
        let acking_a = open("alice", true);
        let acking_b = open("alice", true);
        let plain = open("alice", false);
        let bob_plain = open("bob", false);

        drop(acking_a);
        assert!(
            gone.lock().unwrap().is_empty(),
            "another acknowledging one is open"
        );
        drop(bob_plain);
        assert!(gone.lock().unwrap().is_empty(), "bob never acknowledged");
        drop(acking_b);
        assert_eq!(*gone.lock().unwrap(), vec!["alice".to_owned()]);
        drop(plain);
        assert_eq!(
            gone.lock().unwrap().len(),
            1,
            "a plain connection holds nothing"
        );
    }

    #[test]
    fn a_closing_connection_frees_its_slots_and_is_counted_until_done() {
        let registry = WsClientRegistry::new();
        let limits = ConnectionLimits {
            per_client: 1,
            per_ip: 1,
            total: 1,
        };
        let ip: IpAddr = [10, 0, 0, 1].into();
        let first = registry
            .try_register_with(id("a"), Some(ip), 4, limits, false)
            .unwrap();
        assert!(registry
            .try_register_with(id("a"), Some(ip), 4, limits, false)
            .is_err());
        let closing = first.guard.into_closing();
        assert_eq!(registry.connection_count(), 0);
        assert_eq!(registry.closing_count(), 1);
        let second = registry
            .try_register_with(id("a"), Some(ip), 4, limits, false)
            .expect("the closed connection's slots are free");
        drop(closing);
        assert_eq!(registry.closing_count(), 0);
        assert_eq!(registry.connection_count(), 1);
        drop(second);
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
        assert_eq!(
            registry
                .deliver(&id("alice"), &frame("x"), DeliveryId::from(1))
                .taken(),
            1
        );
        assert_eq!(&*second.outbound.try_recv().unwrap(), "x");

        drop(second);
        assert_eq!(registry.connection_count(), 0);
        assert_eq!(registry.connections_of(&id("alice")), 0);
        assert_eq!(
            registry
                .deliver(&id("alice"), &frame("y"), DeliveryId::from(1))
                .taken(),
            0
        );
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
                registry
                    .deliver(
                        &id(&format!("client-{n}")),
                        &frame(&n.to_string()),
                        DeliveryId::from(1)
                    )
                    .taken(),
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn try_register_refuses_over_each_limit_and_registers_nothing() {
        let registry = WsClientRegistry::new();
        let limits = ConnectionLimits {
            per_client: 2,
            per_ip: 3,
            total: 4,
        };
        let a1 = registry
            .try_register(id("a"), Some(ip(1)), 4, limits)
            .unwrap();
        let _a2 = registry
            .try_register(id("a"), Some(ip(1)), 4, limits)
            .unwrap();
        // A third connection of "a" is one too many for the client id.
        assert_eq!(
            registry
                .try_register(id("a"), Some(ip(2)), 4, limits)
                .unwrap_err(),
            LimitExceeded::PerClient { limit: 2 }
        );
        assert_eq!(registry.connections_of(&id("a")), 2);
        assert_eq!(registry.connections_from(&ip(2)), 0);
        assert_eq!(registry.connection_count(), 2);

        let _b = registry
            .try_register(id("b"), Some(ip(1)), 4, limits)
            .unwrap();
        // A fourth from 10.0.0.1 is one too many for the address.
        assert_eq!(
            registry
                .try_register(id("c"), Some(ip(1)), 4, limits)
                .unwrap_err(),
            LimitExceeded::PerIp { limit: 3 }
        );
        assert_eq!(registry.connections_of(&id("c")), 0);
        assert_eq!(registry.connections_from(&ip(1)), 3);

        let _d = registry
            .try_register(id("d"), Some(ip(9)), 4, limits)
            .unwrap();
        assert_eq!(
            registry
                .try_register(id("e"), Some(ip(7)), 4, limits)
                .unwrap_err(),
            LimitExceeded::Total { limit: 4 }
        );
        assert_eq!(registry.connection_count(), 4);
        assert_eq!(registry.connections_from(&ip(7)), 0);
        // The refused ids got nothing.
        assert_eq!(
            registry
                .deliver(&id("c"), &frame("x"), DeliveryId::from(1))
                .taken(),
            0
        );
        assert_eq!(
            registry
                .deliver(&id("e"), &frame("x"), DeliveryId::from(1))
                .taken(),
            0
        );

        // Closing one frees its slots everywhere.
        drop(a1);
        assert_eq!(registry.connection_count(), 3);
        assert_eq!(registry.connections_from(&ip(1)), 2);
        let _a3 = registry
            .try_register(id("a"), Some(ip(1)), 4, limits)
            .unwrap();
        assert_eq!(registry.connections_of(&id("a")), 2);
    }

    #[test]
    fn racing_registrations_never_exceed_the_limits() {
        let registry = WsClientRegistry::new();
        let limits = ConnectionLimits {
            per_client: 5,
            per_ip: 7,
            total: 9,
        };
        let held = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for t in 0..8u8 {
                let registry = &registry;
                let held = &held;
                scope.spawn(move || {
                    for n in 0..50u8 {
                        let client = id(&format!("c{}", n % 2));
                        if let Ok(r) = registry.try_register(client, Some(ip(t % 2)), 1, limits) {
                            held.lock().unwrap().push(r);
                        }
                    }
                });
            }
        });
        let held = held.into_inner().unwrap();
        assert_eq!(held.len(), 9, "exactly the total limit was admitted");
        assert_eq!(registry.connection_count(), 9);
        for c in ["c0", "c1"] {
            assert!(registry.connections_of(&id(c)) <= 5);
        }
        for last in [0, 1] {
            assert!(registry.connections_from(&ip(last)) <= 7);
        }
        drop(held);
        assert_eq!(registry.connection_count(), 0);
        assert_eq!(registry.connections_from(&ip(0)), 0);
        assert_eq!(registry.connections_from(&ip(1)), 0);
    }
}
