//! The deliveries handed out and not yet settled, on the current consuming
//! channel only: each is settled at most once, and only on the channel
//! that delivered it (a receipt of an earlier generation is stale).

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
}

impl Shared {
    /// A new consuming channel: whatever was held on the previous one is gone.
    pub(super) fn begin(&self, live: &Arc<Live>) {
        let mut in_flight = lock(&self.in_flight);
        in_flight.live = Some(live.clone());
        in_flight.held.clear();
    }

    /// The consuming channel is gone, and with it what it delivered.
    pub(super) fn end(&self) {
        let mut in_flight = lock(&self.in_flight);
        in_flight.live = None;
        in_flight.held.clear();
    }

    /// Whether a delivery is held on the current channel.
    pub(super) fn is_held(&self, delivery: DeliveryRef) -> bool {
        let in_flight = lock(&self.in_flight);
        in_flight
            .live
            .as_ref()
            .is_some_and(|l| l.generation == delivery.generation)
            && in_flight.held.contains_key(&delivery.tag)
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
                Some(held) => taken.held.push((receipt, delivery, held)),
                None => taken.refused.push((
                    receipt,
                    "not held: already settled, or never received".to_owned(),
                )),
            }
        }
        taken
    }
}
