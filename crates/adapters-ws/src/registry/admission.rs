//! Admission: a new connection takes its slots under the limits and is put
//! in the table in one step, so that however many connections race for the
//! last slot, only one gets it. What it gets back is its [`Registration`].

use std::net::IpAddr;
use std::sync::{Arc, RwLockWriteGuard};
use std::time::SystemTime;

use domain::ClientId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::ConnectionHandle;
use super::registration::{Registration, RegistrationGuard};
use super::slots::{ConnectionLimits, LimitExceeded};
use super::table::Connections;
use super::WsClientRegistry;

impl WsClientRegistry {
    /// Registers a new connection of `client_id` whose outgoing queue holds
    /// up to `outbound_capacity` frames (at least 1), without any limit.
    ///
    /// The connection receives deliveries from this moment until the
    /// returned [`Registration::guard`] is dropped.
    pub fn register(&self, client_id: ClientId, outbound_capacity: usize) -> Registration {
        self.inner.slots.take_unlimited();
        self.insert(
            self.inner.table.write(&client_id),
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
        self.inner.slots.take(ip.as_ref(), limits)?;
        let shard = self.inner.table.write(&client_id);
        let held = shard.get(&client_id).map_or(0, Vec::len);
        if held >= limits.per_client {
            drop(shard);
            self.inner.slots.give_back(ip.as_ref());
            return Err(LimitExceeded::PerClient {
                limit: limits.per_client,
            });
        }
        Ok(self.insert(shard, client_id, ip, outbound_capacity, acknowledging))
    }

    /// Adds the connection to its (already locked) shard; its slots have
    /// been taken by the caller.
    fn insert(
        &self,
        mut shard: RwLockWriteGuard<'_, Connections>,
        client_id: ClientId,
        ip: Option<IpAddr>,
        outbound_capacity: usize,
        acknowledging: bool,
    ) -> Registration {
        let id = self.inner.ids.next();
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use domain::acks::DeliveryId;
    use domain::ClientRegistry;

    use super::super::testing::{frame, id, ip};
    use super::*;

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
