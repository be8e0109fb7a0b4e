//! The live connections by client id: [`WsClientRegistry`], the
//! [`ClientRegistry`] the downlink delivers Commands through.
//!
//! The map is split into shards, each behind its own `RwLock`, chosen by a
//! hash of the client id (see `table`): a delivery takes one shard's read
//! lock for as long as a few `try_send`s take, so clients on other shards —
//! and other deliveries to the same shard — are never held up. No lock is
//! ever held across an `.await` (there is none in here).
//!
//! Each connection owns a bounded queue. A delivery that finds a queue full
//! does not wait: the frame is not counted as taken and the connection is
//! marked slow (its session closes with 1013), so one client that cannot keep
//! up never slows down the others (see `fanout`).
//!
//! [`WsClientRegistry::try_register`] also enforces the connection limits
//! (per client id, per IP address, in total): the check and the registration
//! are one step, under the same shard locks, so two connections racing for
//! the last slot cannot both get it (see `admission`; the counters are in
//! `slots`). A connection leaves through its [`RegistrationGuard`] (see
//! `registration`); an operator closes one through a control message (see
//! `control`) and lists them through the admin views (see `views`).
//!
//! The registry also owns the instance's [`FragmentBudget`]: the bytes all
//! its connections hold in incomplete messages, which every session charges.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use domain::acks::DeliveryId;
use domain::{ClientId, ClientRegistry, Control, Frame, Handoff};

use crate::fragment_budget::FragmentBudget;

mod admission;
mod connection;
mod control;
mod fanout;
mod registration;
mod slots;
mod table;
mod views;

pub use connection::{ConnectionId, ConnectionInfo};
pub use registration::{Registration, RegistrationGuard};
pub use slots::{ConnectionLimits, LimitExceeded};

use connection::IdSource;
use slots::Slots;
use table::Table;

/// What every clone of the registry, and every registration guard, shares.
struct Inner {
    table: Table,
    slots: Slots,
    ids: IdSource,
    /// Connections closed but still finishing their publishes (see
    /// [`RegistrationGuard::into_closing`]).
    closing: AtomicUsize,
    /// Told the client id whose last acknowledging connection closed.
    on_last_acknowledging_gone: OnceLock<ClientGone>,
    fragments: FragmentBudget,
}

/// Told a client id that can no longer acknowledge anything.
type ClientGone = Box<dyn Fn(&ClientId) + Send + Sync>;

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

impl WsClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                table: Table::new(),
                slots: Slots::new(),
                ids: IdSource::new(),
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

    /// How many connections are registered, over all client ids.
    pub fn connection_count(&self) -> usize {
        self.inner.slots.total()
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
}

impl ClientRegistry for WsClientRegistry {
    fn deliver(&self, client_id: &ClientId, frame: &Frame, delivery: DeliveryId) -> Handoff {
        fanout::deliver(&self.inner.table, client_id, frame, delivery)
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
            } => self.disconnect(
                client_id,
                connection_id.map(ConnectionId::from_raw),
                *code,
                reason,
            ),
            Control::Send { frame } => self.send_frame(client_id, frame),
        }
    }
}

/// What the tests of every part of the registry build their cases from.
#[cfg(test)]
mod testing {
    #![allow(clippy::unwrap_used)]

    use std::net::IpAddr;
    use std::sync::Arc;

    use domain::{ClientId, Frame};

    pub(super) fn id(raw: &str) -> ClientId {
        ClientId::parse(raw).unwrap()
    }

    pub(super) fn frame(text: &str) -> Frame {
        Arc::from(text)
    }

    pub(super) fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }
}
