//! Handing the held and parked Commands back to the fleet at shutdown.
//!
//! A replica whose queue goes with it (fanout) cannot release what it holds
//! into that queue: the Commands would be deleted with it. Instead the app
//! takes them all out ([`PendingAcks::take_all`]), publishes each again to
//! where the fleet reads Commands, marked with
//! [`RELEASED_ATTRIBUTE`](crate::ports::RELEASED_ATTRIBUTE), and settles them
//! here ([`PendingAcks::settle_taken`]): the originals of those published are
//! deleted, the others released as before.

use tracing::{debug, warn};

use super::{lock, Held, Parked, PendingAcks, ACK_BATCH};
use crate::client_id::ClientId;
use crate::ports::{Frame, Receipt};
use crate::stats::bump;

/// A held or parked Command taken out of the bridge's hands.
#[derive(Debug)]
pub struct TakenOut {
    /// Its client.
    pub client_id: ClientId,
    /// The Command's JSON, as published.
    pub frame: Frame,
    /// The receipt that settles its message.
    pub receipt: Receipt,
    origin: Origin,
}

#[derive(Debug)]
enum Origin {
    /// Handed to the client, not acknowledged.
    Held(Box<Held>),
    /// Waiting for a free slot of its client.
    Parked(Box<Parked>),
}

impl TakenOut {
    /// Whether its client was handed it (rather than it being parked).
    pub fn was_delivered(&self) -> bool {
        matches!(self.origin, Origin::Held(_))
    }
}

impl PendingAcks {
    /// Takes every held delivery and parked Command out; each must then go
    /// through [`PendingAcks::settle_taken`].
    pub fn take_all(&self) -> Vec<TakenOut> {
        let held = self.lock().take_where(|_| true);
        let parked = lock(&self.parking).take_where(|_| true);
        let held = held.into_iter().map(|held| TakenOut {
            client_id: held.client_id.clone(),
            frame: held.frame.clone(),
            receipt: held.receipt.clone(),
            origin: Origin::Held(Box::new(held)),
        });
        let parked = parked.into_iter().map(|parked| TakenOut {
            client_id: parked.command.client_id.clone(),
            frame: parked.command.frame.clone(),
            receipt: parked.command.message.receipt.clone(),
            origin: Origin::Parked(Box::new(parked)),
        });
        held.chain(parked).collect()
    }

    /// Settles what [`PendingAcks::take_all`] took: the messages of
    /// `handed_back` (published again elsewhere) are deleted, those of
    /// `kept` released as at any shutdown. Returns how many held deliveries
    /// left, either way.
    pub async fn settle_taken(&self, handed_back: Vec<TakenOut>, kept: Vec<TakenOut>) -> usize {
        let handed_back_held = handed_back.iter().filter(|t| t.was_delivered()).count();
        bump(&self.stats.downlink.ack_released, handed_back_held as u64);
        let receipts: Vec<Receipt> = handed_back.into_iter().map(|t| t.receipt).collect();
        if !receipts.is_empty() {
            debug!(count = receipts.len(), "commands handed back to the fleet");
        }
        for batch in receipts.chunks(ACK_BATCH) {
            if let Err(error) = self.source.acknowledge(batch.to_vec()).await {
                // Comes back after its visibility timeout, where the queue
                // survives (sharded), and is then delivered twice at worst.
                warn!(%error, "deleting commands handed back to the fleet failed");
            }
        }
        let (mut held, mut parked) = (Vec::new(), Vec::new());
        for taken in kept {
            match taken.origin {
                Origin::Held(one) => held.push(*one),
                Origin::Parked(one) => parked.push(*one),
            }
        }
        handed_back_held + self.give_back(held, parked).await
    }
}
