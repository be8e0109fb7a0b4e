//! The deliveries handed out and not yet settled, on the current consuming
//! channel only: each is settled at most once, and only on the channel
//! that delivered it (a receipt of an earlier generation is stale).
//!
//! It also keeps the count that decides when the consumer's prefetch
//! window is renewed (see `consumer.rs`): deliveries of the current
//! consumer that a `receive` took and that are not settled yet.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use domain::Receipt;
use lapin::types::ShortString;
use lapin::BasicProperties;

use super::{lock, Live, Shared};
use crate::receipt::DeliveryRef;

/// The current consuming channel and what it delivered, unsettled.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    live: Option<Arc<Live>>,
    held: HashMap<u64, Held>,
    /// The consumer (of the channel's consumers, numbered from 0) whose
    /// prefetch window is open.
    consumer: u64,
    /// Deliveries of that consumer taken by a `receive`, not settled.
    taken: usize,
}

/// What a release with a delay or a dead letter needs to publish a copy.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) message_id: String,
    pub(super) body: Vec<u8>,
    pub(super) properties: BasicProperties,
    /// The routing key it was published with (the broker's own
    /// dead-lettering keeps it).
    pub(super) routing_key: ShortString,
    pub(super) receive_count: u32,
    pub(super) received_at_ms: u64,
    /// The consumer that delivered it.
    pub(super) consumer: u64,
    /// Taken by a `receive` (out of the inbox, with the domain).
    pub(super) taken: bool,
}

/// Receipts sorted by what can be done with them.
pub(super) struct Taken {
    /// The channel the held deliveries are settled on.
    pub(super) live: Option<Arc<Live>>,
    /// Deliveries of the current channel, now out of the in-flight set.
    pub(super) held: Vec<(Receipt, DeliveryRef, Held)>,
    /// Receipts of a channel that has closed since.
    pub(super) stale: Vec<Receipt>,
    /// Receipts that name nothing held, and why.
    pub(super) refused: Vec<(Receipt, String)>,
}

impl InFlight {
    /// Registers a delivery of `reference`'s channel, if it is the current one.
    pub(super) fn hold(&mut self, reference: DeliveryRef, held: Held) {
        if self
            .live
            .as_ref()
            .is_some_and(|l| l.generation == reference.generation)
        {
            self.held.insert(reference.tag, held);
        }
    }

    /// Whether the open window should be renewed: at least half of it is
    /// taken by deliveries the domain keeps (in process, or held for a
    /// client's acknowledgement), and a new window keeps the channel's
    /// unsettled deliveries within `most`.
    pub(super) fn renewal_due(&self, prefetch: u16, most: usize) -> bool {
        self.live.is_some()
            && self.taken.saturating_mul(2) >= usize::from(prefetch)
            && self.held.len().saturating_add(usize::from(prefetch)) <= most
    }

    /// A new consumer's window is open: what the earlier ones delivered no
    /// longer counts against it.
    pub(super) fn renewed(&mut self, consumer: u64) {
        self.consumer = consumer;
        self.taken = 0;
    }
}

impl Shared {
    /// A new consuming channel: whatever was held on the previous one is gone.
    pub(super) fn begin(&self, live: &Arc<Live>) {
        let mut in_flight = lock(&self.in_flight);
        in_flight.live = Some(live.clone());
        in_flight.held.clear();
        in_flight.renewed(0);
    }

    /// The consuming channel is gone, and with it what it delivered.
    pub(super) fn end(&self) {
        let mut in_flight = lock(&self.in_flight);
        in_flight.live = None;
        in_flight.held.clear();
    }

    /// Marks a delivery as taken by a `receive`; says whether it is held
    /// on the current channel (else the broker has it back: drop it).
    pub(super) fn hand_out(&self, delivery: DeliveryRef) -> bool {
        let mut in_flight = lock(&self.in_flight);
        let in_flight = &mut *in_flight;
        if in_flight
            .live
            .as_ref()
            .is_none_or(|l| l.generation != delivery.generation)
        {
            return false;
        }
        let Some(held) = in_flight.held.get_mut(&delivery.tag) else {
            return false;
        };
        if !held.taken {
            held.taken = true;
            if held.consumer == in_flight.consumer {
                in_flight.taken += 1;
                if in_flight.renewal_due(self.settings.prefetch, self.most_unsettled()) {
                    self.renew.notify_one();
                }
            }
        }
        true
    }

    /// Takes the receipts' deliveries out of the in-flight set: each is
    /// settled at most once, and only on the channel that delivered it.
    pub(super) fn take(&self, receipts: Vec<Receipt>) -> Taken {
        let mut seen = HashSet::new();
        let mut in_flight = lock(&self.in_flight);
        let mut taken = Taken {
            live: in_flight.live.clone(),
            held: Vec::new(),
            stale: Vec::new(),
            refused: Vec::new(),
        };
        let generation = taken.live.as_ref().map(|l| l.generation);
        for receipt in receipts {
            if !seen.insert(receipt.clone()) {
                continue;
            }
            let Some(delivery) = DeliveryRef::parse(&receipt) else {
                taken
                    .refused
                    .push((receipt, "not a receipt of an AMQP source".to_owned()));
                continue;
            };
            if Some(delivery.generation) != generation {
                taken.stale.push(receipt);
                continue;
            }
            match in_flight.held.remove(&delivery.tag) {
                Some(held) => {
                    if held.taken && held.consumer == in_flight.consumer {
                        in_flight.taken = in_flight.taken.saturating_sub(1);
                    }
                    taken.held.push((receipt, delivery, held));
                }
                None => taken.refused.push((
                    receipt,
                    "not held: already settled, or never received".to_owned(),
                )),
            }
        }
        taken
    }
}
