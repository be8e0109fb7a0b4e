//! Counters kept by the use cases ([`Stats`]), and the technology-free
//! primitives ([`Histogram`], [`CallLatencies`], [`CloseCodes`]) the
//! adapters also build their own metrics from.
//!
//! [`Stats`] holds only what the domain decides: what became of Commands and
//! client messages, acknowledgements, close codes, and whether the consumer
//! has stopped. How the broker's calls went (errors, deletes, latencies,
//! readiness reasons) is the broker adapter's to count, under its own names.
//!
//! Everything here is a plain atomic (no metrics crate in the domain): the
//! hot paths only `fetch_add`, and the app reads snapshots when scraped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident / $snap:ident { $($(#[$fmeta:meta])* $field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name { $($(#[$fmeta])* pub $field: AtomicU64,)* }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct $snap { $($(#[$fmeta])* pub $field: u64,)* }

        impl $name {
            /// Reads every counter.
            pub fn snapshot(&self) -> $snap {
                $snap { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// What the downlink did with the messages it received.
    DownlinkStats / DownlinkSnapshot {
        /// Messages received from the source.
        received,
        /// Commands handed to at least one connection.
        forwarded,
        /// Commands deleted without a connection to take them.
        undeliverable,
        /// Commands released to be received again (client absent here).
        released,
        /// Bodies that are not Commands.
        malformed,
        /// Repeats of an already forwarded message.
        duplicate,
        /// Frames queued on connections (one Command, several sockets).
        frames_queued,
        /// Deliveries a client acknowledged (`ack=true` connections).
        acknowledged_by_client,
        /// Deliveries released unacknowledged (timeout, client gone, shutdown).
        ack_released,
        /// Deliveries whose acknowledgement timed out, delivered again from
        /// the hold to the client's connections here.
        ack_redelivered,
        /// Held deliveries whose visibility was extended (one per message and extension).
        visibility_extended,
        /// Commands deferred because their client had its limit of
        /// unacknowledged deliveries.
        deferred,
        /// Commands given up (malformed, undeliverable) and sent to the
        /// dead-letter queue (or deleted where there is none).
        dead_lettered,
    }
}

counters! {
    /// What the uplink did with client frames.
    UplinkStats / UplinkSnapshot {
        /// Events accepted by the sink.
        published,
        /// Events the sink failed or refused.
        failed,
        /// Frames that were not valid ClientMessages.
        invalid,
        /// Messages refused unread for being over the connection's rate.
        rate_limited,
    }
}

counters! {
    /// The control-plane events the bridge published (presence, receipts),
    /// and the admin API's orders.
    ControlStats / ControlSnapshot {
        /// Presence events accepted by the sink.
        presence_published,
        /// Presence events the sink failed or refused.
        presence_failed,
        /// Delivery receipts published.
        receipts_published,
        /// Delivery receipts given up after their retries.
        receipts_failed,
        /// Delivery receipts dropped because their queue was full.
        receipts_dropped,
        /// Admin API orders (disconnect, send) carried out on the replica
        /// asked.
        admin_here,
        /// Admin API orders published to the bus as control messages.
        admin_forwarded,
        /// Admin API orders the bus refused (answered 502).
        admin_failed,
    }
}

counters! {
    /// The bridge's own tasks that panicked and were started again (a
    /// panic is a bug: it is logged at error with its message).
    TaskStats / TaskSnapshot {
        /// Command pollers (a batch being routed).
        poller,
        /// The tender of held and parked deliveries.
        tender,
        /// The task that deletes acknowledged deliveries.
        ack_settler,
    }
}

/// Shared by all use cases of one bridge.
#[derive(Debug, Default)]
pub struct Stats {
    /// Downlink counters.
    pub downlink: DownlinkStats,
    /// Uplink counters.
    pub uplink: UplinkStats,
    /// Control-plane event counters.
    pub control: ControlStats,
    /// Tasks started again after a panic.
    pub restarts: TaskStats,
    /// How connections ended, by close code.
    pub close_codes: CloseCodes,
    /// From when a Command was published (SNS `Timestamp`, else the queue's
    /// `SentTimestamp`) to its hand-off to the connections' outgoing queues.
    pub forward_latency: Histogram,
    /// Deliveries waiting for a client's acknowledgement (a gauge).
    pub held_deliveries: AtomicU64,
    /// How long a forwarded message id is remembered now, in milliseconds:
    /// the TTL, or less while the de-duplication memory is full (a gauge).
    pub dedup_window_ms: AtomicU64,
    consumer_stopped: AtomicBool,
}

impl Stats {
    /// The consumer stops receiving for good (shutdown).
    pub fn set_consumer_stopped(&self) {
        self.consumer_stopped.store(true, Ordering::Relaxed);
    }

    /// Whether the consumer has stopped receiving for good.
    pub fn consumer_stopped(&self) -> bool {
        self.consumer_stopped.load(Ordering::Relaxed)
    }
}

/// Upper bounds, in seconds, of the buckets of every latency [`Histogram`]
/// (a last, unbounded bucket is implied). They span a fast in-process hand-off
/// (1 ms) to a Command retried for a minute, and SQS's 20 s long polls.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`]: lock-free to record.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative,
    /// ending with `f64::INFINITY` (equal to `count`).
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations, in seconds.
    pub sum_secs: f64,
    /// Number of observations.
    pub count: u64,
}

impl HistogramSnapshot {
    /// `(upper bound, observations in that bucket alone)` for every finite
    /// bound: what Prometheus encoders take (they add the `+Inf` bucket
    /// from the count themselves).
    pub fn own_buckets(&self) -> Vec<(f64, u64)> {
        let mut below = 0;
        self.buckets
            .iter()
            .filter(|(bound, _)| bound.is_finite())
            .map(|&(bound, cumulative)| {
                let own = cumulative - below;
                below = cumulative;
                (bound, own)
            })
            .collect()
    }
}

impl Histogram {
    /// Records one observation.
    pub fn record(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the histogram. Concurrent recording may make `count` and the
    /// buckets differ by the observations in flight; the buckets are made
    /// consistent with each other (cumulative, ending at their own total).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
        for (i, bound) in LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .enumerate()
        {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            buckets.push((bound, cumulative));
        }
        HistogramSnapshot {
            buckets,
            sum_secs: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            count: cumulative,
        }
    }
}

/// One histogram per `(service, operation)` an adapter calls, e.g.
/// `("sqs", "ReceiveMessage")`. An adapter takes its histograms once, with
/// [`CallLatencies::histogram`], and records into them without locking.
#[derive(Debug, Default)]
pub struct CallLatencies {
    calls: Mutex<Vec<CallHistogram>>,
}

/// The histogram of one service operation.
#[derive(Debug, Clone)]
pub struct CallHistogram {
    /// The service called (`sqs`, `sns`, …).
    pub service: &'static str,
    /// The operation (`ReceiveMessage`, `PublishBatch`, …).
    pub operation: &'static str,
    /// Its latencies.
    pub histogram: Arc<Histogram>,
}

impl CallLatencies {
    /// The histogram of `service`'s `operation`, created on first use.
    pub fn histogram(&self, service: &'static str, operation: &'static str) -> Arc<Histogram> {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(call) = calls
            .iter()
            .find(|c| c.service == service && c.operation == operation)
        {
            return call.histogram.clone();
        }
        let histogram = Arc::new(Histogram::default());
        calls.push(CallHistogram {
            service,
            operation,
            histogram: histogram.clone(),
        });
        histogram
    }

    /// Every histogram taken so far, in the order they were first taken.
    pub fn all(&self) -> Vec<CallHistogram> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Close codes counted one by one: the RFC 6455 range 1000..=1015 (higher
/// codes land in `other`).
const CLOSE_CODES: std::ops::RangeInclusive<u16> = 1000..=1015;

/// How connections ended: by the close code the server sent, or without a
/// close frame (the connection was gone).
#[derive(Debug, Default)]
pub struct CloseCodes {
    /// One per code of [`CLOSE_CODES`], then `other`, then `none`.
    counts: [AtomicU64; 18],
}

impl CloseCodes {
    const OTHER: usize = 16;
    const NONE: usize = 17;

    /// Counts one connection closed with `code` (`None`: no close frame).
    pub fn record(&self, code: Option<u16>) {
        let slot = match code {
            None => Self::NONE,
            Some(code) if CLOSE_CODES.contains(&code) => usize::from(code - CLOSE_CODES.start()),
            Some(_) => Self::OTHER,
        };
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// `(label, count)`: the label is the code (`"1000"`), `"other"` or
    /// `"none"`. Codes the bridge sends are always listed; others once seen.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        const SENT: [u16; 9] = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 1013];
        let mut out = Vec::new();
        for code in CLOSE_CODES {
            let count =
                self.counts[usize::from(code - CLOSE_CODES.start())].load(Ordering::Relaxed);
            if count > 0 || SENT.contains(&code) {
                out.push((code.to_string(), count));
            }
        }
        out.push((
            "other".to_owned(),
            self.counts[Self::OTHER].load(Ordering::Relaxed),
        ));
        out.push((
            "none".to_owned(),
            self.counts[Self::NONE].load(Ordering::Relaxed),
        ));
        out
    }
}

/// Adds `by` to a counter (relaxed: counters order nothing).
pub fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_the_count() {
        let histogram = Histogram::default();
        histogram.record(Duration::from_micros(500)); // ≤ 1 ms
        histogram.record(Duration::from_millis(1)); // ≤ 1 ms (bounds are inclusive)
        histogram.record(Duration::from_millis(30)); // ≤ 50 ms
        histogram.record(Duration::from_secs(90)); // above every bound
        let snap = histogram.snapshot();
        assert_eq!(snap.count, 4);
        assert_eq!(snap.buckets.len(), LATENCY_BUCKETS.len() + 1);
        let at = |bound: f64| {
            snap.buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
                .unwrap_or(u64::MAX)
        };
        assert_eq!(at(0.001), 2);
        assert_eq!(at(0.025), 2);
        assert_eq!(at(0.05), 3);
        assert_eq!(at(60.0), 3);
        assert_eq!(at(f64::INFINITY), 4);
        let own = snap.own_buckets();
        assert_eq!(own.len(), LATENCY_BUCKETS.len(), "finite bounds only");
        assert_eq!(own[0], (0.001, 2));
        assert_eq!(own.iter().find(|(b, _)| *b == 0.05), Some(&(0.05, 1)));
        assert_eq!(
            own.iter().map(|(_, n)| n).sum::<u64>(),
            3,
            "the 90 s one is in +Inf"
        );
        assert!((snap.sum_secs - 90.0315).abs() < 1e-9, "{}", snap.sum_secs);
    }

    #[test]
    fn call_histograms_are_shared_per_operation() {
        let calls = CallLatencies::default();
        let receive = calls.histogram("sqs", "ReceiveMessage");
        calls
            .histogram("sqs", "ReceiveMessage")
            .record(Duration::from_millis(2));
        receive.record(Duration::from_millis(3));
        calls.histogram("sns", "PublishBatch");
        let all = calls.all();
        assert_eq!(all.len(), 2);
        assert_eq!(
            (all[0].service, all[0].operation),
            ("sqs", "ReceiveMessage")
        );
        assert_eq!(all[0].histogram.snapshot().count, 2);
        assert_eq!((all[1].service, all[1].operation), ("sns", "PublishBatch"));
        assert_eq!(all[1].histogram.snapshot().count, 0);
    }

    #[test]
    fn close_codes_are_counted_by_code() {
        let codes = CloseCodes::default();
        codes.record(Some(1000));
        codes.record(Some(1000));
        codes.record(Some(1013));
        codes.record(Some(1012));
        codes.record(Some(4000));
        codes.record(None);
        let snap: std::collections::HashMap<String, u64> = codes.snapshot().into_iter().collect();
        assert_eq!(snap["1000"], 2);
        assert_eq!(snap["1013"], 1);
        assert_eq!(snap["1001"], 0, "codes the bridge sends are listed at zero");
        assert_eq!(snap["1012"], 1, "a code seen is listed");
        assert!(
            !snap.contains_key("1010"),
            "a code never seen nor sent is not"
        );
        assert_eq!(snap["other"], 1);
        assert_eq!(snap["none"], 1);
    }

    #[test]
    fn the_consumer_runs_until_it_is_stopped_for_good() {
        let stats = Stats::default();
        assert!(!stats.consumer_stopped());
        stats.set_consumer_stopped();
        assert!(stats.consumer_stopped());
    }
}
