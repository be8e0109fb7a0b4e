//! Releases with a delay. [`ReleaseDelay::DelayQueue`]: a copy of each
//! message goes, with publisher confirms, on the publishing connection
//! ([`super::publisher`]), to the delay queue `<queue>.delay` with a
//! per-message TTL, and only once the broker has confirmed the copy is the
//! original acknowledged. [`ReleaseDelay::Hold`] (also the fallback when
//! the delay queue cannot be used): the delivery stays unacknowledged for
//! the delay, then is requeued. See the source's module docs for why.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use domain::{Receipt, SourceError};
use lapin::options::BasicNackOptions;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use tracing::{debug, warn};

use super::consumer::believable_timestamp;
use super::in_flight::Held;
use super::publisher::{CopyChannel, Destination, Outgoing, Refusal};
use super::{
    Live, ReleaseDelay, Shared, DELIVERY_COUNT_HEADER, FIRST_RECEIVED_HEADER, RECEIVE_COUNT_HEADER,
};
use crate::bootstrap;
use crate::link;
use crate::metrics::op;
use crate::receipt::DeliveryRef;

impl Shared {
    /// Takes the receipts' deliveries and gives them back after `delay`,
    /// in the background: the caller (a poller) never waits for the broker.
    pub(super) fn release_later(
        self: &Arc<Self>,
        receipts: Vec<Receipt>,
        delay: Duration,
    ) -> Result<(), SourceError> {
        let taken = self.take(receipts);
        if !taken.stale.is_empty() {
            debug!(count = taken.stale.len(), "stale receipts released");
        }
        if let Some(live) = taken.live.filter(|_| !taken.held.is_empty()) {
            match self.settings.release_delay {
                ReleaseDelay::Hold => {
                    let tags = taken.held.into_iter().map(|(_, d, _)| d.tag).collect();
                    self.hold(live, tags, delay);
                }
                ReleaseDelay::DelayQueue => {
                    let shared = self.clone();
                    self.background(async move {
                        shared.copy_released(live, taken.held, delay).await;
                    });
                }
            }
        }
        self.finish(taken.refused)
    }

    /// Copies each delivery to the delay queue, then acknowledges it; what
    /// cannot be copied in time (no publishing connection, the broker
    /// blocking it, no confirm) is held for the delay instead.
    async fn copy_released(
        &self,
        live: Arc<Live>,
        held: Vec<(Receipt, DeliveryRef, Held)>,
        delay: Duration,
    ) {
        let Some(publisher) = self.publisher(&live, Destination::DelayQueue).await else {
            self.hold(
                live,
                held.into_iter().map(|(_, d, _)| d.tag).collect(),
                delay,
            );
            return;
        };
        let mut to_hold = Vec::new();
        let mut failed = 0;
        for (_, delivery, outcome) in self.copy_to_delay_queue(&publisher, held, delay).await {
            match outcome {
                Ok(()) => {
                    // The copy is safe on the broker; a failed ack only
                    // means the original comes back as well.
                    if let Err(error) = self.ack(&live, delivery.tag).await {
                        debug!(%error, "basic.ack after the delayed copy failed");
                        failed += 1;
                    }
                }
                Err(refusal) => {
                    warn!(queue = %self.settings.queue, reason = %refusal.text, "delayed copy not confirmed, holding the delivery instead");
                    to_hold.push(delivery.tag);
                }
            }
        }
        if failed > 0 {
            self.metrics.settle_failed(failed);
        }
        if !to_hold.is_empty() {
            self.hold(live, to_hold, delay);
        }
    }

    /// Publishes a copy of each message to the delay queue, then waits for
    /// the broker's confirms.
    async fn copy_to_delay_queue(
        &self,
        publisher: &CopyChannel,
        held: Vec<(Receipt, DeliveryRef, Held)>,
        delay: Duration,
    ) -> Vec<(Receipt, DeliveryRef, Result<(), Refusal>)> {
        let delay_queue = bootstrap::delay_queue_name(&self.settings.queue);
        let routing_key: ShortString = match link::short(&delay_queue) {
            Ok(key) => key,
            Err(e) => {
                return held
                    .into_iter()
                    .map(|(r, d, _)| (r, d, Err(Refusal::now(format!("delay queue name: {e}")))))
                    .collect()
            }
        };
        let copies = held
            .iter()
            .map(|(_, _, held)| Outgoing {
                routing_key: routing_key.clone(),
                body: &held.body,
                properties: delayed_copy(held, delay),
            })
            .collect();
        let what = format!("delay queue {delay_queue:?}");
        let outcomes = self
            .publish_confirmed(
                &publisher.channel,
                publisher.blocked,
                "",
                copies,
                &what,
                op::PUBLISH_DELAYED,
            )
            .await;
        held.into_iter()
            .zip(outcomes)
            .map(|((receipt, delivery, _), outcome)| (receipt, delivery, outcome))
            .collect()
    }

    /// Keeps deliveries unacknowledged for `delay`, then requeues them. If
    /// the channel dies meanwhile the broker has requeued them already.
    pub(super) fn hold(&self, live: Arc<Live>, tags: Vec<u64>, delay: Duration) {
        let metrics = self.metrics.clone();
        self.background(async move {
            tokio::time::sleep(delay).await;
            for tag in tags {
                let requeue = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                let timer = metrics.time(op::NACK);
                let nacked = live.consume.basic_nack(tag, requeue).await;
                timer.stop();
                if let Err(error) = nacked {
                    debug!(%error, tag, "held delivery not requeued: its channel is gone, the broker has it back");
                }
            }
        });
    }
}

/// The properties of the copy that waits out `delay` in the delay queue:
/// the original's, plus the expiration, the receive count so far, a stable
/// message id, and the first receive time when there is no timestamp.
fn delayed_copy(held: &Held, delay: Duration) -> BasicProperties {
    let headers = held.properties.headers().clone().unwrap_or_default();
    // The broker's count is of the original; the copy's starts anew and
    // adds to the count carried below.
    let mut headers: FieldTable = headers
        .inner()
        .iter()
        .filter(|(name, _)| name.as_str() != DELIVERY_COUNT_HEADER)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    headers.insert(
        RECEIVE_COUNT_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(held.receive_count)),
    );
    // A missing or unbelievable timestamp: the first receive time, so the
    // retry window ends all the same.
    let timestamp = *held.properties.timestamp();
    if !believable_timestamp(timestamp, SystemTime::now())
        && !headers.contains_key(FIRST_RECEIVED_HEADER)
    {
        headers.insert(
            FIRST_RECEIVED_HEADER.into(),
            AMQPValue::LongLongInt(i64::try_from(held.received_at_ms).unwrap_or(i64::MAX)),
        );
    }
    let millis = delay.as_millis().max(1);
    let mut properties = held
        .properties
        .clone()
        .with_headers(headers)
        .with_expiration(millis.to_string().into());
    if properties.message_id().is_none() {
        if let Ok(id) = link::short(&held.message_id) {
            properties = properties.with_message_id(id);
        }
    }
    properties
}

#[cfg(test)]
mod tests {
    use super::super::consumer::as_u64;
    use super::*;

    fn held(properties: BasicProperties) -> Held {
        Held {
            message_id: "amqp-1-1-7".to_owned(),
            body: b"{}".to_vec(),
            properties,
            routing_key: "q".into(),
            receive_count: 3,
            received_at_ms: 1_700_000_000_123,
            consumer: 0,
            taken: true,
        }
    }

    #[test]
    fn a_delayed_copy_keeps_the_original_and_carries_the_count() {
        let mut headers = FieldTable::default();
        headers.insert("trace".into(), AMQPValue::LongString("t-1".into()));
        headers.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(2));
        let original = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_timestamp(1_700_000_000)
            .with_delivery_mode(2)
            .with_headers(headers);
        let copy = delayed_copy(&held(original), Duration::from_millis(1500));
        assert_eq!(copy.expiration().as_ref().map(|e| e.as_str()), Some("1500"));
        assert_eq!(copy.message_id().as_ref().map(|e| e.as_str()), Some("m-1"));
        assert_eq!(*copy.timestamp(), Some(1_700_000_000));
        assert_eq!(*copy.delivery_mode(), Some(2));
        let headers = copy.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get(RECEIVE_COUNT_HEADER).and_then(as_u64),
            Some(3)
        );
        assert!(headers.contains_key("trace"));
        assert!(!headers.contains_key(DELIVERY_COUNT_HEADER));
        assert!(!headers.contains_key(FIRST_RECEIVED_HEADER));
    }

    #[test]
    fn a_copy_without_timestamp_or_id_gets_the_first_receive_time_and_a_stable_id() {
        let copy = delayed_copy(&held(BasicProperties::default()), Duration::from_micros(10));
        assert_eq!(copy.expiration().as_ref().map(|e| e.as_str()), Some("1"));
        assert_eq!(
            copy.message_id().as_ref().map(|e| e.as_str()),
            Some("amqp-1-1-7")
        );
        let headers = copy.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get(FIRST_RECEIVED_HEADER).and_then(as_u64),
            Some(1_700_000_000_123)
        );
    }

    #[test]
    fn a_copy_with_a_timestamp_in_milliseconds_gets_the_first_receive_time() {
        let original = BasicProperties::default().with_timestamp(1_700_000_000_000);
        let copy = delayed_copy(&held(original), Duration::from_secs(1));
        let headers = copy.headers().clone().unwrap();
        assert_eq!(
            headers.inner().get(FIRST_RECEIVED_HEADER).and_then(as_u64),
            Some(1_700_000_000_123)
        );
    }
}
