//! What the admin API and the tests read of the registry: the client ids
//! page by page, the connections of one client id, and the counts per
//! client id and per address. Each reads one shard at a time and holds no
//! lock once it returns.

use std::net::IpAddr;

use domain::ClientId;

use super::connection::ConnectionInfo;
use super::WsClientRegistry;

impl WsClientRegistry {
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
            .table
            .each_shard()
            .flat_map(|shard| {
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
        let shard = self.inner.table.read(client_id);
        shard.get(client_id).map_or_else(Vec::new, |connections| {
            connections.iter().map(|c| c.info()).collect()
        })
    }

    /// How many connections `client_id` has registered.
    pub fn connections_of(&self, client_id: &ClientId) -> usize {
        self.inner
            .table
            .read(client_id)
            .get(client_id)
            .map_or(0, Vec::len)
    }

    /// How many connections registered with [`WsClientRegistry::try_register`]
    /// come from `ip`.
    pub fn connections_from(&self, ip: &IpAddr) -> usize {
        self.inner.slots.of_ip(ip)
    }
}
