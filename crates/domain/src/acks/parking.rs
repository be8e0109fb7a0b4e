//! Commands parked for a client at its limit of unacknowledged deliveries.
//!
//! Releasing such a Command to be received again later is a receive for the
//! queue, and SQS moves a message received `maxReceiveCount` times to its
//! dead-letter queue without a word: a connected client that acknowledges
//! slowly would lose Commands that way. So on a source that counts receives,
//! they wait here, in order, their visibility kept like a held delivery's,
//! and go out as the client's acknowledgements free its slots. Bounded per
//! client and in total; past that they are released as before.

use std::collections::{HashMap, HashSet, VecDeque};

use tokio::time::Instant;

use super::{lock, PendingAcks};
use crate::client_id::ClientId;
use crate::downlink::CommandInHand;
#[cfg(test)]
use crate::ports::{Frame, InboundMessage, Receipt};

/// Commands one client may have parked: as many as it may hold, and at
/// least a few, so a small limit still rides out a short burst.
pub(super) fn per_client_bound(max_unacked_per_client: usize) -> usize {
    max_unacked_per_client.max(16)
}

/// Commands parked at once on one replica, whatever the clients.
pub(super) const TOTAL_BOUND: usize = 1_000;

/// A decoded Command waiting for a free slot of its client.
#[derive(Debug, Clone)]
pub struct Parked {
    /// The Command.
    pub command: CommandInHand,
    /// When it was received (SQS counts its 12 h cap from there).
    pub(super) received_at: Instant,
    /// When its visibility was last set to the full timeout.
    pub(super) visible_since: Instant,
}

impl Parked {
    /// A Command received just now.
    pub fn new(command: CommandInHand) -> Self {
        let now = Instant::now();
        Self {
            command,
            received_at: now,
            visible_since: now,
        }
    }

    fn client_id(&self) -> &ClientId {
        &self.command.client_id
    }
}

impl PendingAcks {
    /// Parks a Command for a client at its limit; gives it back when the
    /// parking is full.
    pub(crate) fn park(&self, parked: Parked) -> Result<(), Box<Parked>> {
        let bound = per_client_bound(self.max_per_client);
        lock(&self.parking).push(parked, bound)
    }

    /// Whether Commands for `client_id` are parked (a newer one waits too).
    pub(crate) fn has_parked(&self, client_id: &ClientId) -> bool {
        lock(&self.parking).has(client_id)
    }

    /// The parked Commands whose client has a free slot, as many per client
    /// as it has free slots, in order.
    pub(crate) fn take_parked_ready(&self) -> Vec<Parked> {
        let table = self.lock();
        let mut parking = lock(&self.parking);
        parking.take_ready(|client_id| {
            self.max_per_client
                .saturating_sub(table.count_of(client_id))
        })
    }

    /// The Commands taken with [`PendingAcks::take_parked_ready`] have all
    /// been handed off or put back: a newer Command for their clients no
    /// longer waits behind them.
    pub(crate) fn parked_handed_out(&self) {
        lock(&self.parking).done_handing_out();
    }

    /// Puts back at the head of its client's queue a parked Command that
    /// could not go out after all.
    pub(crate) fn unpark_failed(&self, parked: Parked) {
        lock(&self.parking).push_front(parked);
    }

    /// How many Commands are parked.
    pub fn parked_len(&self) -> usize {
        lock(&self.parking).len()
    }
}

/// The parked Commands, per client in the order they were received.
#[derive(Debug, Default)]
pub(super) struct Parking {
    per_client: HashMap<ClientId, VecDeque<Parked>>,
    len: usize,
    /// Clients whose parked Commands are being handed out: a Command for
    /// them received meanwhile waits behind, so it cannot overtake one that
    /// turns out to have no slot after all.
    handing_out: HashSet<ClientId>,
}

impl Parking {
    /// Parks `parked` behind the client's others; gives it back when a
    /// bound is reached.
    pub(super) fn push(&mut self, parked: Parked, per_client: usize) -> Result<(), Box<Parked>> {
        let queue = self
            .per_client
            .entry(parked.client_id().clone())
            .or_default();
        if queue.len() >= per_client || self.len >= TOTAL_BOUND {
            if queue.is_empty() {
                self.per_client.remove(parked.client_id());
            }
            return Err(Box::new(parked));
        }
        queue.push_back(parked);
        self.len += 1;
        Ok(())
    }

    /// Puts back at the head of its client's queue a Command taken with
    /// [`Parking::take_ready`] that could not go out after all; bounds do
    /// not apply (it was counted in them).
    pub(super) fn push_front(&mut self, parked: Parked) {
        self.per_client
            .entry(parked.client_id().clone())
            .or_default()
            .push_front(parked);
        self.len += 1;
    }

    /// Whether `client_id` has Commands parked (a newer one waits behind them).
    pub(super) fn has(&self, client_id: &ClientId) -> bool {
        self.per_client.contains_key(client_id) || self.handing_out.contains(client_id)
    }

    /// See [`PendingAcks::parked_handed_out`].
    pub(super) fn done_handing_out(&mut self) {
        self.handing_out.clear();
    }

    /// Takes, per client, as many parked Commands from the head as `free`
    /// says it has free slots.
    pub(super) fn take_ready(&mut self, free: impl Fn(&ClientId) -> usize) -> Vec<Parked> {
        let mut ready = Vec::new();
        let handing_out = &mut self.handing_out;
        self.per_client.retain(|client_id, queue| {
            let take = free(client_id).min(queue.len());
            if take > 0 {
                handing_out.insert(client_id.clone());
            }
            ready.extend(queue.drain(..take));
            !queue.is_empty()
        });
        self.len -= ready.len();
        ready
    }

    /// Takes every Command parked for a client `due` says.
    pub(super) fn take_where(&mut self, due: impl Fn(&ClientId) -> bool) -> Vec<Parked> {
        let mut taken = Vec::new();
        self.per_client.retain(|client_id, queue| {
            if due(client_id) {
                taken.extend(queue.drain(..));
                false
            } else {
                true
            }
        });
        self.len -= taken.len();
        taken
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Parked> {
        self.per_client
            .values_mut()
            .flat_map(|queue| queue.iter_mut())
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The receipts of every parked Command.
    #[cfg(test)]
    fn receipts(&self) -> Vec<Receipt> {
        let mut all: Vec<Receipt> = self
            .per_client
            .values()
            .flat_map(|q| q.iter().map(|p| p.command.message.receipt.clone()))
            .collect();
        all.sort_by(|a, b| a.token().cmp(b.token()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(client: &str, n: u32) -> Parked {
        let message = InboundMessage {
            message_id: format!("{client}-{n}"),
            receipt: Receipt::new(format!("{client}-{n}")),
            ..InboundMessage::default()
        };
        Parked::new(CommandInHand {
            message,
            client_id: ClientId::parse(client).unwrap(),
            frame: Frame::from("{}"),
            dedup_key: format!("{client}-{n}"),
            sns_message_id: None,
            sns_timestamp: None,
        })
    }

    fn ids(parked: &[Parked]) -> Vec<String> {
        parked
            .iter()
            .map(|p| p.command.message.message_id.clone())
            .collect()
    }

    #[test]
    fn commands_leave_in_order_as_slots_free_up() {
        let mut parking = Parking::default();
        for n in 1..=3 {
            parking.push(parked("alice", n), 10).unwrap();
        }
        parking.push(parked("bob", 1), 10).unwrap();
        let alice = ClientId::parse("alice").unwrap();

        let ready = parking.take_ready(|c| if c == &alice { 2 } else { 0 });
        assert_eq!(ids(&ready), ["alice-1", "alice-2"]);
        assert_eq!(parking.len(), 2);
        assert!(parking.has(&alice));

        let back = ready.into_iter().nth(1).unwrap();
        parking.push_front(back);
        let ready = parking.take_ready(|c| if c == &alice { 5 } else { 0 });
        assert_eq!(ids(&ready), ["alice-2", "alice-3"]);
        // Until they are handed out, a newer Command waits behind them.
        assert!(parking.has(&alice));
        parking.done_handing_out();
        assert!(!parking.has(&alice));
        assert_eq!(parking.receipts(), vec![Receipt::new("bob-1")]);
    }

    #[test]
    fn bounds_per_client_and_in_total_give_the_command_back() {
        let mut parking = Parking::default();
        parking.push(parked("alice", 1), 1).unwrap();
        let refused = parking.push(parked("alice", 2), 1).unwrap_err();
        assert_eq!(refused.command.message.message_id, "alice-2");
        for n in 0..TOTAL_BOUND - 1 {
            parking.push(parked(&format!("c{n}"), 1), 1).unwrap();
        }
        assert_eq!(parking.len(), TOTAL_BOUND);
        assert!(parking.push(parked("late", 1), 1).is_err());
        assert!(!parking.has(&ClientId::parse("late").unwrap()));

        let alice = ClientId::parse("alice").unwrap();
        let taken = parking.take_where(|c| c == &alice);
        assert_eq!(ids(&taken), ["alice-1"]);
        assert_eq!(parking.len(), TOTAL_BOUND - 1);
    }
}
