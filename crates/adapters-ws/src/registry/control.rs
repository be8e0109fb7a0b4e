//! An operator's disconnect (the admin API, or a control message from the
//! bus): the registry records the close code and reason on the connection
//! and cancels its slow signal; the session, woken by that signal, reads
//! the order back through its guard and closes with it.

use domain::ClientId;

use super::connection::ConnectionId;
use super::registration::RegistrationGuard;
use super::WsClientRegistry;

impl WsClientRegistry {
    /// Closes the connections of `client_id` (only `only`, when given) with
    /// `code` and `reason`; returns how many it closes.
    pub fn disconnect(
        &self,
        client_id: &ClientId,
        only: Option<ConnectionId>,
        code: u16,
        reason: &str,
    ) -> usize {
        let mut shard = self.inner.table.write(client_id);
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
}

impl RegistrationGuard {
    /// The close code and reason an operator's disconnect set, if any.
    pub fn close_order(&self) -> Option<(u16, String)> {
        let shard = self.inner.table.read(&self.client_id);
        shard
            .get(&self.client_id)?
            .iter()
            .find(|c| c.id == self.id)?
            .close_order
            .as_deref()
            .cloned()
    }
}
