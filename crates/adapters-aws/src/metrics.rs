//! The AWS adapters' own metrics and readiness: what [`SqsCommandSource`]
//! and [`SnsEventSink`] saw of SQS and SNS, under the `wsbridge_sqs_*` and
//! `wsbridge_backend_call_duration_seconds` names.
//!
//! The app creates one [`AwsMetrics`] per bridge, hands clones to the source
//! and the sink when it wires them, registers it as a `prometheus_client`
//! [`Collector`] at each scrape, and asks it why the bridge is not ready
//! ([`AwsMetrics::not_ready_reason`]). The domain's `Stats` never sees any of
//! this: a bridge over another broker exports none of these series.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `wsbridge_sqs_receive_errors_total` | counter | |
//! | `wsbridge_sqs_settle_errors_total` | counter | |
//! | `wsbridge_sqs_deleted_messages_total` | counter | |
//! | `wsbridge_sqs_delete_failures_total` | counter | |
//! | `wsbridge_backend_call_duration_seconds` | histogram | `service` (`sqs`, `sns`), `operation` |
//!
//! [`SqsCommandSource`]: crate::SqsCommandSource
//! [`SnsEventSink`]: crate::SnsEventSink

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use domain::stats::{CallLatencies, Histogram, HistogramSnapshot};
use domain::SourceError;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// `/ready`'s reason before the command source has answered once.
pub const NOT_RECEIVED_YET: &str = "starting: the command consumer has not received yet";

/// Counters, call latencies and the last receive's outcome of one bridge's
/// AWS adapters. A cheap clone: every clone shares the same values.
#[derive(Debug, Clone, Default)]
pub struct AwsMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    receive_errors: AtomicU64,
    settle_errors: AtomicU64,
    deleted: AtomicU64,
    delete_failed: AtomicU64,
    calls: CallLatencies,
    last_receive: Mutex<LastReceive>,
}

/// What the last `ReceiveMessage` did, for readiness.
#[derive(Debug, Default)]
enum LastReceive {
    #[default]
    NotYet,
    Succeeded,
    /// Failed, with the classified reason (see `classify::failure_reason`).
    Failed(String),
}

/// A point-in-time copy of the [`AwsMetrics`] counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AwsSnapshot {
    /// Failed `ReceiveMessage` calls.
    pub receive_errors: u64,
    /// Acknowledge, release or reject calls that failed (after retries).
    pub settle_errors: u64,
    /// Messages deleted from the queue (delete calls' successful entries).
    pub deleted: u64,
    /// Messages whose deletion failed for good (after retries): they come
    /// back after their visibility timeout.
    pub delete_failed: u64,
}

impl AwsMetrics {
    /// Fresh metrics: nothing counted, nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> AwsSnapshot {
        let i = &self.inner;
        AwsSnapshot {
            receive_errors: i.receive_errors.load(Ordering::Relaxed),
            settle_errors: i.settle_errors.load(Ordering::Relaxed),
            deleted: i.deleted.load(Ordering::Relaxed),
            delete_failed: i.delete_failed.load(Ordering::Relaxed),
        }
    }

    /// Why the command consumer cannot take traffic, or `None` when its last
    /// receive succeeded. Shutting down is the app's to tell.
    pub fn not_ready_reason(&self) -> Option<String> {
        match &*self.last_receive() {
            LastReceive::Succeeded => None,
            LastReceive::NotYet => Some(NOT_RECEIVED_YET.to_owned()),
            LastReceive::Failed(reason) => Some(format!(
                "the command consumer's last receive failed: {reason}"
            )),
        }
    }

    /// The latency histogram of `service`'s `operation`, taken once by the
    /// adapter that makes the call.
    pub(crate) fn call(&self, service: &'static str, operation: &'static str) -> Arc<Histogram> {
        self.inner.calls.histogram(service, operation)
    }

    /// A `ReceiveMessage` answered.
    pub(crate) fn receive_succeeded(&self) {
        *self.last_receive() = LastReceive::Succeeded;
    }

    /// A `ReceiveMessage` failed for `reason` (classified, bounded).
    pub(crate) fn receive_failed(&self, reason: String) {
        self.inner.receive_errors.fetch_add(1, Ordering::Relaxed);
        *self.last_receive() = LastReceive::Failed(reason);
    }

    /// Counts a failed settle call; passes `result` through.
    pub(crate) fn settled(&self, result: Result<(), SourceError>) -> Result<(), SourceError> {
        if result.is_err() {
            self.inner.settle_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Of the messages a delete was asked for, `deleted` went and `failed`
    /// did not.
    pub(crate) fn deletes(&self, deleted: u64, failed: u64) {
        self.inner.deleted.fetch_add(deleted, Ordering::Relaxed);
        self.inner
            .delete_failed
            .fetch_add(failed, Ordering::Relaxed);
    }

    fn last_receive(&self) -> std::sync::MutexGuard<'_, LastReceive> {
        self.inner
            .last_receive
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Collector for AwsMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let s = self.snapshot();
        counter(
            &mut encoder,
            "wsbridge_sqs_receive_errors",
            "Failed receive calls.",
            s.receive_errors,
        )?;
        counter(
            &mut encoder,
            "wsbridge_sqs_settle_errors",
            "Delete / visibility calls that failed (after retries).",
            s.settle_errors,
        )?;
        counter(
            &mut encoder,
            "wsbridge_sqs_deleted_messages",
            "Messages deleted from the command queue.",
            s.deleted,
        )?;
        counter(
            &mut encoder,
            "wsbridge_sqs_delete_failures",
            "Messages whose deletion failed after retries (they come back after the \
             visibility timeout).",
            s.delete_failed,
        )?;

        let mut metric = encoder.encode_descriptor(
            "wsbridge_backend_call_duration_seconds",
            "Duration of each call to SQS / SNS, answered or failed (ReceiveMessage includes \
             its long-poll wait).",
            None,
            MetricType::Histogram,
        )?;
        for call in self.inner.calls.all() {
            let labels = [("service", call.service), ("operation", call.operation)];
            histogram(
                &mut metric.encode_family(&labels)?,
                &call.histogram.snapshot(),
            )?;
        }
        Ok(())
    }
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// Encodes a histogram snapshot (each bucket's own count; the encoder adds `+Inf`).
fn histogram(metric: &mut MetricEncoder, snapshot: &HistogramSnapshot) -> fmt::Result {
    let buckets = snapshot.own_buckets();
    metric.encode_histogram::<NoLabelSet>(snapshot.sum_secs, snapshot.count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;

    use super::*;

    fn text(metrics: &AwsMetrics) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn exports_exactly_the_aws_series() {
        let metrics = AwsMetrics::new();
        metrics.call("sqs", "ReceiveMessage");
        metrics.call("sns", "PublishBatch");
        let text = text(&metrics);
        let mut families: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .collect();
        families.sort_unstable();
        assert_eq!(
            families,
            [
                "wsbridge_backend_call_duration_seconds histogram",
                "wsbridge_sqs_delete_failures_total counter",
                "wsbridge_sqs_deleted_messages_total counter",
                "wsbridge_sqs_receive_errors_total counter",
                "wsbridge_sqs_settle_errors_total counter",
            ],
            "{text}"
        );
        for help in [
            "# HELP wsbridge_sqs_receive_errors_total Failed receive calls.\n",
            "# HELP wsbridge_sqs_settle_errors_total Delete / visibility calls that failed \
             (after retries).\n",
            "# HELP wsbridge_sqs_deleted_messages_total Messages deleted from the command queue.\n",
        ] {
            assert!(text.contains(help), "{help:?} missing from:\n{text}");
        }
        let mut labels: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("wsbridge_backend_call_duration_seconds_count"))
            .collect();
        labels.sort_unstable();
        assert_eq!(
            labels,
            [
                "{service=\"sns\",operation=\"PublishBatch\"} 0",
                "{service=\"sqs\",operation=\"ReceiveMessage\"} 0",
            ],
            "{text}"
        );
    }

    #[test]
    fn counts_and_latencies_are_encoded() {
        let metrics = AwsMetrics::new();
        metrics.receive_failed("SQS ReceiveMessage: AccessDenied".into());
        let _ = metrics.settled(Err(SourceError::Unavailable("throttled".into())));
        let _ = metrics.settled(Ok(()));
        metrics.deletes(5, 1);
        metrics
            .call("sqs", "DeleteMessageBatch")
            .record(Duration::from_millis(7));
        assert_eq!(
            metrics.snapshot(),
            AwsSnapshot {
                receive_errors: 1,
                settle_errors: 1,
                deleted: 5,
                delete_failed: 1,
            }
        );
        let text = text(&metrics);
        for line in [
            "wsbridge_sqs_receive_errors_total 1\n",
            "wsbridge_sqs_settle_errors_total 1\n",
            "wsbridge_sqs_deleted_messages_total 5\n",
            "wsbridge_sqs_delete_failures_total 1\n",
            "wsbridge_backend_call_duration_seconds_bucket{service=\"sqs\",operation=\"DeleteMessageBatch\",le=\"0.005\"} 0\n",
            "wsbridge_backend_call_duration_seconds_bucket{service=\"sqs\",operation=\"DeleteMessageBatch\",le=\"0.01\"} 1\n",
            "wsbridge_backend_call_duration_seconds_count{service=\"sqs\",operation=\"DeleteMessageBatch\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
    }

    #[test]
    fn readiness_follows_the_last_receive() {
        let metrics = AwsMetrics::new();
        assert_eq!(
            metrics.not_ready_reason().as_deref(),
            Some(NOT_RECEIVED_YET)
        );
        metrics.receive_succeeded();
        assert_eq!(metrics.not_ready_reason(), None);
        metrics.receive_failed("SQS ReceiveMessage: AccessDenied: no".into());
        assert_eq!(
            metrics.not_ready_reason().as_deref(),
            Some(
                "the command consumer's last receive failed: SQS ReceiveMessage: AccessDenied: no"
            )
        );
        // A clone shares the state.
        metrics.clone().receive_succeeded();
        assert_eq!(metrics.not_ready_reason(), None);
        // Settle failures are not receive failures.
        let _ = metrics.settled(Err(SourceError::Unavailable("throttled".into())));
        assert_eq!(metrics.not_ready_reason(), None);
    }
}
