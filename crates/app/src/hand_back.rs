//! What a replica does at shutdown with the Commands it holds for
//! acknowledging clients (and those parked behind them).
//!
//! In fanout mode a replica's queue is deleted when it leaves: released into
//! it, they would go with it. So where the fleet reads Commands from the
//! commands topic (fanout, sharded), each is published there again, marked
//! as handed back (the receivers then wait for its client even under the
//! `drop` policy), and only then is its original deleted; one whose publish
//! fails is released as before. Elsewhere (shared mode, RabbitMQ) the queue
//! outlives the replica and they are released.

use std::sync::Arc;

use domain::{PendingAcks, TakenOut};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::broker::ControlRelay;

/// Publishes in flight at once: a few hundred held Commands must go within
/// the shutdown deadline.
const CONCURRENT_PUBLISHES: usize = 16;

/// Hands every held and parked Command back to the fleet, or releases them;
/// returns how many held deliveries left.
pub async fn hand_back_or_release(acks: &PendingAcks, relay: &Arc<ControlRelay>) -> usize {
    if !relay.hands_back() {
        return acks.release_all().await;
    }
    let taken = acks.take_all();
    if taken.is_empty() {
        return 0;
    }
    let (mut handed_back, mut kept) = (Vec::new(), Vec::new());
    for (taken, published) in publish_all(taken, relay).await {
        if published {
            handed_back.push(taken);
        } else {
            kept.push(taken);
        }
    }
    if !handed_back.is_empty() {
        info!(
            count = handed_back.len(),
            "unacknowledged Commands handed back to the fleet"
        );
    }
    acks.settle_taken(handed_back, kept).await
}

/// Publishes each taken Command again, a bounded number at once; says of
/// each whether it was published.
async fn publish_all(taken: Vec<TakenOut>, relay: &Arc<ControlRelay>) -> Vec<(TakenOut, bool)> {
    let permits = Arc::new(Semaphore::new(CONCURRENT_PUBLISHES));
    let mut publishes = JoinSet::new();
    for taken in taken {
        let (relay, permits) = (relay.clone(), permits.clone());
        publishes.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let result = relay.hand_back(&taken.frame, &taken.client_id).await;
            if let Err(error) = &result {
                warn!(
                    client_id = %taken.client_id,
                    error = format!("{error:#}"),
                    "handing a Command back to the fleet failed; released instead"
                );
            }
            (taken, result.is_ok())
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = publishes.join_next().await {
        // A publish task does not panic; if one did, its Command would stay
        // unsettled, as at a shutdown that misses its deadline.
        if let Ok(one) = joined {
            done.push(one);
        }
    }
    done
}
