//! A connection's stay in the registry and how it leaves: the
//! [`Registration`] it gets on admission, the [`RegistrationGuard`] whose
//! drop takes it out of the table, gives its slots back and reports a
//! client's last acknowledging connection gone, and the [`Closing`] token
//! that keeps it counted while its last publishes finish.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use domain::{ClientId, Frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::ConnectionId;
use super::Inner;

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
    pub(super) inner: Arc<Inner>,
    pub(super) client_id: ClientId,
    pub(super) id: ConnectionId,
    pub(super) ip: Option<IpAddr>,
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
    /// Unregisters the connection now (its slot under every limit is free
    /// for a new one at once) and returns the token that counts it among the
    /// connections still finishing their publishes, until dropped.
    pub fn into_closing(self) -> Closing {
        self.inner.closing.fetch_add(1, Ordering::Relaxed);
        let inner = Arc::clone(&self.inner);
        drop(self);
        Closing { inner }
    }

    /// Takes the connection out of its shard; returns whether it was there,
    /// and whether it was the client's last acknowledging connection.
    fn remove(&self) -> (bool, bool) {
        let mut shard = self.inner.table.write(&self.client_id);
        let Some(connections) = shard.get_mut(&self.client_id) else {
            return (false, false);
        };
        let mut removed = false;
        let mut last_acknowledging = false;
        if let Some(at) = connections.iter().position(|c| c.id == self.id) {
            let gone = connections.swap_remove(at);
            removed = true;
            last_acknowledging = gone.acknowledging && !connections.iter().any(|c| c.acknowledging);
        }
        if connections.is_empty() {
            shard.remove(&self.client_id);
        }
        (removed, last_acknowledging)
    }
}

impl Drop for RegistrationGuard {
    fn drop(&mut self) {
        // The shard lock is released before anyone is told.
        let (removed, last_acknowledging) = self.remove();
        if last_acknowledging {
            if let Some(notify) = self.inner.on_last_acknowledging_gone.get() {
                notify(&self.client_id);
            }
        }
        if removed {
            self.inner.slots.give_back(self.ip.as_ref());
        }
    }
}

/// A connection whose socket is closed but whose publishes (its last client
/// messages, its `$disconnect`) are still under way; counted by
/// [`WsClientRegistry::closing_count`](super::WsClientRegistry::closing_count)
/// until dropped.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use domain::acks::DeliveryId;
    use domain::ClientRegistry;

    use super::super::testing::{frame, id};
    use super::super::{ConnectionLimits, WsClientRegistry};
    use super::*;

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
}
