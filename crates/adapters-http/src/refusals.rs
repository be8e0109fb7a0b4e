//! Every refusal counted, by reason, for `/metrics`:
//! `wsbridge_upgrades_refused_total{reason}` (a WebSocket upgrade refused
//! before the handshake was answered) and
//! `wsbridge_admin_requests_refused_total{reason}` (an admin API call
//! refused). The handlers' error types name their reason; the counts are
//! shared by the public listener and the admin one.

use std::sync::atomic::{AtomicU64, Ordering};

/// One reason an upgrade is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` not in the allow-list.
    Origin,
    /// No token, or one that does not verify.
    Unauthenticated,
    /// A token for another client id than the URL's.
    ClientIdMismatch,
    /// The client id has too many connections.
    PerClient,
    /// The address has too many connections.
    PerAddress,
    /// The instance has too many connections.
    AtCapacity,
    /// Sharded mode: the client's shard is owned by another replica.
    Misdirected,
    /// The client id in the URL is not a valid one.
    InvalidClientId,
    /// No client id: neither in the URL nor (`auth = "none"`) from a token.
    MissingClientId,
    /// The bridge is shutting down.
    ShuttingDown,
    /// Not a valid WebSocket handshake.
    InvalidHandshake,
}

impl Refusal {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Refusal; 11] = [
        Refusal::Origin,
        Refusal::Unauthenticated,
        Refusal::ClientIdMismatch,
        Refusal::PerClient,
        Refusal::PerAddress,
        Refusal::AtCapacity,
        Refusal::Misdirected,
        Refusal::InvalidClientId,
        Refusal::MissingClientId,
        Refusal::ShuttingDown,
        Refusal::InvalidHandshake,
    ];

    /// The `reason` label; also the error code of the answer, except for
    /// `unauthenticated` (`missing_token` or `invalid_token`).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Origin => "origin_not_allowed",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::ClientIdMismatch => "client_id_mismatch",
            Refusal::PerClient => "too_many_connections",
            Refusal::PerAddress => "too_many_connections_from_address",
            Refusal::AtCapacity => "server_at_capacity",
            Refusal::Misdirected => "misdirected_client",
            Refusal::InvalidClientId => "invalid_client_id",
            Refusal::MissingClientId => "missing_client_id",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::InvalidHandshake => "invalid_handshake",
        }
    }
}

/// One reason an admin API call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// Without the admin token.
    Unauthorized,
    /// The client id in the path is not a valid one.
    InvalidClientId,
    /// The client has no connection here (`GET /admin/clients/{id}`).
    NotConnected,
    /// `?via=` is neither `here` nor `bus`.
    InvalidVia,
    /// The body is not what the call takes.
    InvalidBody,
    /// A close code other than 1000 or 3000-4999.
    InvalidCode,
    /// A close reason over 123 bytes.
    InvalidReason,
    /// A connection id that is not a number.
    InvalidConnectionId,
}

impl AdminRefusal {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [AdminRefusal; 8] = [
        AdminRefusal::Unauthorized,
        AdminRefusal::InvalidClientId,
        AdminRefusal::NotConnected,
        AdminRefusal::InvalidVia,
        AdminRefusal::InvalidBody,
        AdminRefusal::InvalidCode,
        AdminRefusal::InvalidReason,
        AdminRefusal::InvalidConnectionId,
    ];

    /// The `reason` label, also the error code of the answer.
    pub fn label(self) -> &'static str {
        match self {
            AdminRefusal::Unauthorized => "unauthorized",
            AdminRefusal::InvalidClientId => "invalid_client_id",
            AdminRefusal::NotConnected => "not_connected",
            AdminRefusal::InvalidVia => "invalid_via",
            AdminRefusal::InvalidBody => "invalid_body",
            AdminRefusal::InvalidCode => "invalid_code",
            AdminRefusal::InvalidReason => "invalid_reason",
            AdminRefusal::InvalidConnectionId => "invalid_connection_id",
        }
    }
}

/// The refusals counted since the start, by reason.
#[derive(Debug, Default)]
pub struct Refusals {
    upgrades: [AtomicU64; Refusal::ALL.len()],
    admin: [AtomicU64; AdminRefusal::ALL.len()],
}

impl Refusals {
    /// Counts an upgrade refused for `reason`.
    pub fn count(&self, reason: Refusal) {
        self.upgrades[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an admin API call refused for `reason`.
    pub fn count_admin(&self, reason: AdminRefusal) {
        self.admin[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `(label, count)` of every upgrade refusal reason.
    pub fn upgrades(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| {
                (
                    r.label(),
                    self.upgrades[*r as usize].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// `(label, count)` of every admin refusal reason.
    pub fn admin(&self) -> Vec<(&'static str, u64)> {
        AdminRefusal::ALL
            .iter()
            .map(|r| (r.label(), self.admin[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_reason_counts_under_its_own_label() {
        let refusals = Refusals::default();
        refusals.count(Refusal::Misdirected);
        refusals.count(Refusal::Misdirected);
        refusals.count(Refusal::InvalidHandshake);
        refusals.count_admin(AdminRefusal::InvalidConnectionId);
        let upgrades = refusals.upgrades();
        assert_eq!(upgrades.len(), Refusal::ALL.len());
        for (label, count) in upgrades {
            let expected = match label {
                "misdirected_client" => 2,
                "invalid_handshake" => 1,
                _ => 0,
            };
            assert_eq!(count, expected, "{label}");
        }
        let admin = refusals.admin();
        assert_eq!(admin.len(), AdminRefusal::ALL.len());
        for (label, count) in admin {
            assert_eq!(
                count,
                u64::from(label == "invalid_connection_id"),
                "{label}"
            );
        }
    }

    #[test]
    fn the_lists_hold_every_reason_once_at_its_index() {
        for (i, reason) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
        for (i, reason) in AdminRefusal::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i, "{reason:?}");
        }
    }
}
