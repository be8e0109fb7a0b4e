//! The table of held deliveries, indexed three ways: by delivery id (the
//! client's acknowledgement), by de-duplication key (a redelivered copy of
//! a held message), and by client (its limit, and its release when it goes).

use std::collections::HashMap;

use tokio::time::Instant;

use super::DeliveryId;
use crate::client_id::ClientId;
use crate::ports::{Frame, InboundMessage, Receipt};

/// One Command handed to acknowledging connections, waiting for their answer.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) client_id: ClientId,
    /// The newest receipt of the message (a redelivered copy replaces it).
    pub(super) receipt: Receipt,
    /// The source's id of the message (SQS `MessageId`).
    pub(super) message_id: String,
    /// The message as last received, for the dead-letter queue should it
    /// have to be given up.
    pub(super) message: InboundMessage,
    /// The key the de-duplication memory knows the Command by.
    pub(super) dedup_key: String,
    /// The Command as its client gets it, for a delivery again from here.
    pub(super) frame: Frame,
    /// When the acknowledgement is overdue.
    pub(super) deadline: Instant,
    /// When the message was received (SQS counts its 12 h cap from there).
    pub(super) received_at: Instant,
    /// When its visibility was last set to the full timeout: at receive,
    /// then at each extension.
    pub(super) visible_since: Instant,
}

/// The held deliveries.
#[derive(Debug, Default)]
pub(super) struct Table {
    by_id: HashMap<DeliveryId, Held>,
    by_key: HashMap<String, DeliveryId>,
    per_client: HashMap<ClientId, usize>,
}

impl Table {
    pub(super) fn insert(&mut self, id: DeliveryId, held: Held) {
        *self.per_client.entry(held.client_id.clone()).or_default() += 1;
        self.by_key.insert(held.dedup_key.clone(), id);
        if let Some(old) = self.by_id.insert(id, held) {
            // Ids are never reused; keep the indexes right regardless.
            self.unindex(&old);
        }
    }

    pub(super) fn remove(&mut self, id: DeliveryId) -> Option<Held> {
        let held = self.by_id.remove(&id)?;
        self.unindex(&held);
        Some(held)
    }

    fn unindex(&mut self, held: &Held) {
        if let Some(count) = self.per_client.get_mut(&held.client_id) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&held.client_id);
            }
        }
        self.by_key.remove(&held.dedup_key);
    }

    pub(super) fn get(&self, id: DeliveryId) -> Option<&Held> {
        self.by_id.get(&id)
    }

    pub(super) fn id_of_key(&self, dedup_key: &str) -> Option<DeliveryId> {
        self.by_key.get(dedup_key).copied()
    }

    pub(super) fn get_mut(&mut self, id: DeliveryId) -> Option<&mut Held> {
        self.by_id.get_mut(&id)
    }

    pub(super) fn count_of(&self, client_id: &ClientId) -> usize {
        self.per_client.get(client_id).copied().unwrap_or(0)
    }

    /// Removes and returns every held delivery for which `due` holds.
    pub(super) fn take_where(&mut self, due: impl Fn(&Held) -> bool) -> Vec<Held> {
        let ids: Vec<DeliveryId> = self
            .by_id
            .iter()
            .filter(|(_, held)| due(held))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Held> {
        self.by_id.values_mut()
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(client: &str, key: &str) -> Held {
        let now = Instant::now();
        Held {
            client_id: ClientId::parse(client).unwrap(),
            receipt: Receipt::new(format!("r-{key}")),
            message_id: format!("m-{key}"),
            message: InboundMessage::default(),
            dedup_key: key.into(),
            frame: Frame::from("{}"),
            deadline: now,
            received_at: now,
            visible_since: now,
        }
    }

    #[test]
    fn indexes_follow_inserts_and_removals() {
        let mut table = Table::default();
        let alice = ClientId::parse("alice").unwrap();
        table.insert(DeliveryId(1), held("alice", "k1"));
        table.insert(DeliveryId(2), held("alice", "k2"));
        table.insert(DeliveryId(3), held("bob", "k3"));
        assert_eq!(table.count_of(&alice), 2);
        assert_eq!(table.id_of_key("k2"), Some(DeliveryId(2)));

        let removed = table.take_where(|h| h.client_id == alice);
        assert_eq!(removed.len(), 2);
        assert_eq!(table.count_of(&alice), 0);
        assert_eq!(table.id_of_key("k1"), None);
        assert_eq!(table.len(), 1);
        assert!(table.remove(DeliveryId(3)).is_some());
        assert!(table.remove(DeliveryId(3)).is_none());
        assert_eq!(table.len(), 0);
    }
}
