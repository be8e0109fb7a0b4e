//! Settling deliveries on the channel that delivered them: `basic.ack`
//! (handed off), `basic.nack` with requeue (release without delay) and
//! without (reject: the queue's dead-letter exchange takes it). Receipts
//! that cannot be settled come back in `SourceError::Partial`.

use domain::{Receipt, SourceError};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use tracing::debug;

use super::{Live, Shared};
use crate::metrics::op;
use crate::receipt::DeliveryRef;

/// What to do with a delivery.
pub(super) enum Settle {
    Ack,
    Requeue,
    Reject,
}

impl Settle {
    fn name(&self) -> &'static str {
        match self {
            Settle::Ack => "basic.ack",
            Settle::Requeue => "basic.nack(requeue)",
            Settle::Reject => "basic.nack(dead-letter)",
        }
    }
}

impl Shared {
    /// One `basic.ack`, timed into the AMQP call metrics.
    pub(super) async fn ack(&self, live: &Live, tag: u64) -> Result<(), lapin::Error> {
        let timer = self.metrics.time(op::ACK);
        let acked = live
            .consume
            .basic_ack(tag, BasicAckOptions::default())
            .await;
        timer.stop();
        acked
    }

    pub(super) async fn settle(
        &self,
        how: Settle,
        receipts: Vec<Receipt>,
    ) -> Result<(), SourceError> {
        let taken = self.take(receipts);
        let mut failed = taken.refused;
        failed.extend(self.stale(&how, taken.stale));
        if let Some(live) = taken.live {
            let deliveries = taken.held.into_iter().map(|(r, d, _)| (r, d));
            failed.extend(self.settle_on(&live, &how, deliveries).await);
        }
        self.finish(failed)
    }

    /// Receipts of a closed channel: nothing to do for a release (the
    /// broker has taken the message back, as asked), a failure otherwise.
    pub(super) fn stale(&self, how: &Settle, stale: Vec<Receipt>) -> Vec<(Receipt, String)> {
        if stale.is_empty() {
            return Vec::new();
        }
        match how {
            Settle::Requeue => {
                debug!(count = stale.len(), "stale receipts released");
                Vec::new()
            }
            Settle::Ack | Settle::Reject => {
                let reason = "delivered on a channel that has closed since: the broker has taken the message back and delivers it again";
                stale.into_iter().map(|r| (r, reason.to_owned())).collect()
            }
        }
    }

    /// Settles each delivery on `live`, the channel that delivered it;
    /// returns those that failed, and why.
    pub(super) async fn settle_on(
        &self,
        live: &Live,
        how: &Settle,
        deliveries: impl IntoIterator<Item = (Receipt, DeliveryRef)>,
    ) -> Vec<(Receipt, String)> {
        let mut failed = Vec::new();
        for (receipt, delivery) in deliveries {
            let result = match how {
                Settle::Ack => {
                    let acked = self.ack(live, delivery.tag).await;
                    if acked.is_ok() {
                        self.metrics.acked();
                    }
                    acked
                }
                Settle::Requeue | Settle::Reject => {
                    let timer = self.metrics.time(op::NACK);
                    let nacked = live
                        .consume
                        .basic_nack(
                            delivery.tag,
                            BasicNackOptions {
                                multiple: false,
                                requeue: matches!(how, Settle::Requeue),
                            },
                        )
                        .await;
                    timer.stop();
                    nacked
                }
            };
            if let Err(error) = result {
                failed.push((receipt, format!("{}: {error}", how.name())));
            }
        }
        failed
    }

    /// The answer to a settle call that could not settle `failed`, counted.
    pub(super) fn finish(&self, failed: Vec<(Receipt, String)>) -> Result<(), SourceError> {
        if !failed.is_empty() {
            self.metrics.settle_failed(failed.len());
        }
        partial(failed)
    }
}

fn partial(failed: Vec<(Receipt, String)>) -> Result<(), SourceError> {
    let Some((_, reason)) = failed.first() else {
        return Ok(());
    };
    let reason = reason.clone();
    Err(SourceError::Partial {
        failed: failed.into_iter().map(|(r, _)| r).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_every_failed_receipt_and_the_first_reason() {
        assert_eq!(partial(Vec::new()), Ok(()));
        let failed = vec![
            (Receipt::new("a"), "first".to_owned()),
            (Receipt::new("b"), "second".to_owned()),
        ];
        assert_eq!(
            partial(failed),
            Err(SourceError::Partial {
                failed: vec![Receipt::new("a"), Receipt::new("b")],
                reason: "first".to_owned()
            })
        );
    }
}
