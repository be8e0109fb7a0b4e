//! Fan-out to sessions: a frame for a client id is queued on each of its
//! connections with `try_send`, under the shard's read lock and never
//! waiting. A connection whose queue is full is marked slow (its session
//! closes with 1013) and the frame counts as not taken there; one already
//! marked slow is skipped.

use std::sync::Arc;

use domain::acks::{ack_frame, DeliveryId};
use domain::{ClientId, Frame, Handoff};
use tokio::sync::mpsc::error::TrySendError;
use tracing::debug;

use super::table::Table;
use super::WsClientRegistry;

/// Queues `frame`, a Command with its delivery id, on every connection of
/// `client_id`: acknowledging connections get it wrapped with the id.
pub(super) fn deliver(
    table: &Table,
    client_id: &ClientId,
    frame: &Frame,
    delivery: DeliveryId,
) -> Handoff {
    let shard = table.read(client_id);
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

impl WsClientRegistry {
    /// Queues `frame` as it is on every connection of `client_id` (no
    /// delivery id, nothing to acknowledge); returns how many took it.
    pub fn send_frame(&self, client_id: &ClientId, frame: &Frame) -> usize {
        let shard = self.inner.table.read(client_id);
        shard.get(client_id).map_or(0, |connections| {
            connections
                .iter()
                .filter(|c| !c.slow.is_cancelled())
                .filter(|c| c.outbound.try_send(Arc::clone(frame)).is_ok())
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use domain::ClientRegistry;

    use super::super::testing::{frame, id};
    use super::super::{ConnectionLimits, Registration};
    use super::*;

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
}
