//! The AMQP adapters' own metrics: what the source and the sink did at the
//! broker, counted where it happens and encoded here, so neither the domain
//! nor the app knows about AMQP operations.
//!
//! The app creates one [`AmqpMetrics`], hands clones to the command source
//! and the event sink at wiring (`spawn_with_metrics`), registers it with
//! its `prometheus_client` registry (it is a [`Collector`]), and asks it
//! [`AmqpMetrics::not_ready_reason`] for `/ready`.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `wsbridge_amqp_receive_errors_total` | counter | |
//! | `wsbridge_amqp_settle_errors_total` | counter | |
//! | `wsbridge_amqp_acked_messages_total` | counter | |
//! | `wsbridge_amqp_reconnects_total` | counter | |
//! | `wsbridge_amqp_task_panics_total` | counter | |
//! | `wsbridge_amqp_prefetch_renewals_total` | counter | |
//! | `wsbridge_amqp_connected` | gauge | |
//! | `wsbridge_backend_call_duration_seconds` | histogram | `service="amqp"`, `operation` |
//!
//! The histogram family has the name the AWS adapters' calls are exported
//! under; only one broker is active in a bridge.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use domain::stats::{CallLatencies, Histogram, HistogramSnapshot};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// The `service` label of every AMQP call latency.
const SERVICE: &str = "amqp";

/// The broker operations whose latency is recorded, by `operation` label.
pub(crate) mod op {
    /// Opening a connection (TCP, AMQP handshake), answered or failed.
    pub(crate) const CONNECT: &str = "connection.open";
    /// Opening a link's channels on a connection (`channel.open` and what
    /// the link needs: `basic.qos` + `basic.consume`, or `confirm.select`).
    pub(crate) const CHANNEL_OPEN: &str = "channel.open";
    /// A `receive`: the wait for a batch of deliveries the broker pushes.
    pub(crate) const CONSUME_WAIT: &str = "consume.wait";
    /// `basic.ack` of one delivery.
    pub(crate) const ACK: &str = "basic.ack";
    /// `basic.nack` of one delivery (requeued or dead-lettered).
    pub(crate) const NACK: &str = "basic.nack";
    /// `basic.publish` of one event, until the broker's confirm.
    pub(crate) const PUBLISH: &str = "basic.publish";
    /// `basic.publish` of one delivery receipt, until the broker's confirm.
    pub(crate) const PUBLISH_RECEIPT: &str = "basic.publish.receipt";
    /// `basic.publish` of a batch of delayed copies, until every confirm.
    pub(crate) const PUBLISH_DELAYED: &str = "basic.publish.delay";
    /// `basic.publish` of a batch of dead-letter copies, until every confirm.
    pub(crate) const PUBLISH_DEAD_LETTER: &str = "basic.publish.dead_letter";

    /// Every operation, in the order they are exported.
    pub(crate) const ALL: [&str; 9] = [
        CONNECT,
        CHANNEL_OPEN,
        CONSUME_WAIT,
        ACK,
        NACK,
        PUBLISH,
        PUBLISH_RECEIPT,
        PUBLISH_DELAYED,
        PUBLISH_DEAD_LETTER,
    ];
}

/// Counters, link states and call latencies of the AMQP adapters.
///
/// Cheap to clone (one `Arc`); every clone counts into the same values.
/// The constructors without metrics give each adapter a private one.
#[derive(Debug, Clone, Default)]
pub struct AmqpMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    receive_errors: AtomicU64,
    settle_errors: AtomicU64,
    acked: AtomicU64,
    reconnects: AtomicU64,
    panics: AtomicU64,
    renewals: AtomicU64,
    links: Mutex<Vec<Arc<LinkHealth>>>,
    receive: Mutex<LastReceive>,
    calls: CallLatencies,
    /// The histogram of every operation in [`op::ALL`], taken from `calls`
    /// once so that recording never locks.
    ops: Vec<(&'static str, Arc<Histogram>)>,
}

impl Default for Inner {
    fn default() -> Self {
        let calls = CallLatencies::default();
        // Every operation is taken now, so its series exist (at zero)
        // from the first scrape.
        let ops = op::ALL
            .iter()
            .map(|&operation| (operation, calls.histogram(SERVICE, operation)))
            .collect();
        Self {
            receive_errors: AtomicU64::new(0),
            settle_errors: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            links: Mutex::new(Vec::new()),
            receive: Mutex::new(LastReceive::None),
            calls,
            ops,
        }
    }
}

/// What the command source's last `receive` said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum LastReceive {
    #[default]
    None,
    Ok,
    Failed(String),
}

/// Which link a supervisor keeps, for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The command source's consuming link: readiness follows it.
    Commands,
    /// The event sink's publishing link.
    Events,
    /// The receipt sink's publishing link (only with receipts on).
    Receipts,
}

/// One supervised link's state as the metrics see it: `None` while up,
/// else why not.
#[derive(Debug)]
pub(crate) struct LinkHealth {
    role: Role,
    down: Mutex<Option<String>>,
}

impl LinkHealth {
    /// The link is up.
    pub(crate) fn up(&self) {
        *lock(&self.down) = None;
    }

    /// The link is not up, for `why`.
    pub(crate) fn down(&self, why: impl Into<String>) {
        *lock(&self.down) = Some(why.into());
    }

    fn reason(&self) -> Option<String> {
        lock(&self.down).clone()
    }
}

/// A latency measurement under way; recorded when [`Timer::stop`] is called.
pub(crate) struct Timer {
    histogram: Arc<Histogram>,
    started: Instant,
}

impl Timer {
    /// Records the time since the timer started.
    pub(crate) fn stop(self) {
        self.histogram.record(self.started.elapsed());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AmqpMetrics {
    /// Fresh metrics: every counter at zero, no link yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Why the bridge should not get traffic now, or `None` when it
    /// should: the command source is connected and its last `receive`
    /// succeeded. Before the first `receive` it says so (`starting: …`);
    /// when the consuming link is down or the last `receive` failed, it
    /// says why (`RabbitMQ: …`).
    pub fn not_ready_reason(&self) -> Option<String> {
        let last = lock(&self.inner.receive).clone();
        if last == LastReceive::None {
            return Some("starting: no receive yet".to_owned());
        }
        let links = lock(&self.inner.links).clone();
        if let Some(why) = links
            .iter()
            .filter(|l| l.role == Role::Commands)
            .find_map(|l| l.reason())
        {
            return Some(format!("RabbitMQ: {why}"));
        }
        match last {
            LastReceive::Failed(why) => Some(format!("RabbitMQ: {why}")),
            LastReceive::None | LastReceive::Ok => None,
        }
    }

    /// Whether every link these metrics were handed to is up (and there
    /// is at least one).
    pub fn connected(&self) -> bool {
        let links = lock(&self.inner.links);
        !links.is_empty() && links.iter().all(|l| l.reason().is_none())
    }

    /// A new link, not up yet (`why` says so) until its supervisor says otherwise.
    pub(crate) fn link(&self, role: Role, why: impl Into<String>) -> Arc<LinkHealth> {
        let link = Arc::new(LinkHealth {
            role,
            down: Mutex::new(Some(why.into())),
        });
        lock(&self.inner.links).push(link.clone());
        link
    }

    /// A link ended for good: it no longer counts for `connected`.
    pub(crate) fn forget(&self, link: &Arc<LinkHealth>) {
        lock(&self.inner.links).retain(|l| !Arc::ptr_eq(l, link));
    }

    /// The histogram of `operation` (one of [`op`]).
    fn histogram(&self, operation: &'static str) -> Arc<Histogram> {
        match self.inner.ops.iter().find(|(name, _)| *name == operation) {
            Some((_, histogram)) => histogram.clone(),
            None => self.inner.calls.histogram(SERVICE, operation),
        }
    }

    /// Starts timing one call of `operation` (one of [`op`]).
    pub(crate) fn time(&self, operation: &'static str) -> Timer {
        Timer {
            histogram: self.histogram(operation),
            started: Instant::now(),
        }
    }

    /// Records one call of `operation` that took `latency`.
    #[cfg(test)]
    fn record(&self, operation: &'static str, latency: std::time::Duration) {
        self.histogram(operation).record(latency);
    }

    /// A `receive` succeeded.
    pub(crate) fn received(&self) {
        *lock(&self.inner.receive) = LastReceive::Ok;
    }

    /// A `receive` failed, for `why`.
    pub(crate) fn receive_failed(&self, why: impl Into<String>) {
        self.inner.receive_errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.inner.receive) = LastReceive::Failed(why.into());
    }

    /// `n` receipts could not be settled.
    pub(crate) fn settle_failed(&self, n: usize) {
        self.inner
            .settle_errors
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One delivery was acknowledged.
    pub(crate) fn acked(&self) {
        self.inner.acked.fetch_add(1, Ordering::Relaxed);
    }

    /// A link is up again on a new connection after it had been lost.
    pub(crate) fn reconnected(&self) {
        self.inner.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// A link's task panicked; its supervisor reconnected.
    pub(crate) fn panicked(&self) {
        self.inner.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// The command source opened a new prefetch window (a new consumer).
    pub(crate) fn window_renewed(&self) {
        self.inner.renewals.fetch_add(1, Ordering::Relaxed);
    }

    /// How many prefetch windows the command source opened beyond its first.
    pub fn window_renewals(&self) -> u64 {
        self.inner.renewals.load(Ordering::Relaxed)
    }

    /// How many times a link's task panicked.
    pub fn panics(&self) -> u64 {
        self.inner.panics.load(Ordering::Relaxed)
    }

    fn calls(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        self.inner
            .calls
            .all()
            .into_iter()
            .map(|c| (c.operation, c.histogram.snapshot()))
            .collect()
    }
}

impl Collector for AmqpMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let inner = &self.inner;
        counter(
            &mut encoder,
            "wsbridge_amqp_receive_errors",
            "Command source receive calls that failed (not connected, consumer lost).",
            inner.receive_errors.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "wsbridge_amqp_settle_errors",
            "Receipts that could not be acknowledged, requeued, dead-lettered or released \
             (the call failed, or the delivering channel had closed).",
            inner.settle_errors.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "wsbridge_amqp_acked_messages",
            "Deliveries acknowledged (basic.ack) after their Command was handled.",
            inner.acked.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "wsbridge_amqp_reconnects",
            "Links (command source, event sink, receipt sink) up again on a new connection after \
             losing one.",
            inner.reconnects.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "wsbridge_amqp_task_panics",
            "Panics caught in a link's work (the command source's delivery pump, a supervisor): \
             the link reconnected, and the broker redelivers what was not acknowledged. A bug to \
             report.",
            inner.panics.load(Ordering::Relaxed),
        )?;
        counter(
            &mut encoder,
            "wsbridge_amqp_prefetch_renewals",
            "New prefetch windows (consumers) the command source opened because half of its window \
             was kept by deliveries waiting for clients' acknowledgements.",
            inner.renewals.load(Ordering::Relaxed),
        )?;
        let connected = i64::from(self.connected());
        encoder
            .encode_descriptor(
                "wsbridge_amqp_connected",
                "1 while every AMQP link (command source, event sink, receipt sink when on) has its \
                 channel open.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&connected)?;

        let mut metric = encoder.encode_descriptor(
            "wsbridge_backend_call_duration_seconds",
            "Duration of each call to the broker, answered or failed (consume.wait is a \
             receive's wait for pushed deliveries; basic.publish includes the confirm).",
            None,
            MetricType::Histogram,
        )?;
        for (operation, latency) in self.calls() {
            let labels = [("service", SERVICE), ("operation", operation)];
            histogram(&mut metric.encode_family(&labels)?, &latency)?;
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

    fn render(metrics: &AmqpMetrics) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(metrics.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn renders_counters_gauge_and_call_latencies() {
        let metrics = AmqpMetrics::new();
        let commands = metrics.link(Role::Commands, "connecting");
        let events = metrics.link(Role::Events, "connecting");
        metrics.receive_failed("not connected");
        metrics.settle_failed(2);
        metrics.acked();
        metrics.acked();
        metrics.acked();
        metrics.reconnected();
        metrics.panicked();
        metrics.window_renewed();
        metrics.record(op::ACK, Duration::from_micros(700));
        metrics.record(op::PUBLISH, Duration::from_millis(30));

        let text = render(&metrics);
        for line in [
            "# TYPE wsbridge_amqp_receive_errors counter\n",
            "wsbridge_amqp_receive_errors_total 1\n",
            "wsbridge_amqp_settle_errors_total 2\n",
            "wsbridge_amqp_acked_messages_total 3\n",
            "wsbridge_amqp_reconnects_total 1\n",
            "wsbridge_amqp_task_panics_total 1\n",
            "wsbridge_amqp_prefetch_renewals_total 1\n",
            "# TYPE wsbridge_amqp_acked_messages counter\n",
            "# TYPE wsbridge_amqp_connected gauge\n",
            "wsbridge_amqp_connected 0\n",
            "# TYPE wsbridge_backend_call_duration_seconds histogram\n",
            "wsbridge_backend_call_duration_seconds_bucket{le=\"0.001\",service=\"amqp\",operation=\"basic.ack\"} 1\n",
            "wsbridge_backend_call_duration_seconds_count{service=\"amqp\",operation=\"basic.ack\"} 1\n",
            "wsbridge_backend_call_duration_seconds_bucket{le=\"0.025\",service=\"amqp\",operation=\"basic.publish\"} 0\n",
            "wsbridge_backend_call_duration_seconds_bucket{le=\"0.05\",service=\"amqp\",operation=\"basic.publish\"} 1\n",
            // Shown before its first call.
            "wsbridge_backend_call_duration_seconds_count{service=\"amqp\",operation=\"connection.open\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");

        commands.up();
        assert!(render(&metrics).contains("wsbridge_amqp_connected 0\n"));
        events.up();
        assert!(render(&metrics).contains("wsbridge_amqp_connected 1\n"));
        metrics.forget(&events);
        assert!(metrics.connected());
    }

    #[test]
    fn not_ready_until_connected_and_received() {
        let metrics = AmqpMetrics::new();
        assert!(!metrics.connected());
        let commands = metrics.link(Role::Commands, "not connected to amqp://guest@rabbit yet");
        let events = metrics.link(Role::Events, "connection refused");
        assert_eq!(
            metrics.not_ready_reason().as_deref(),
            Some("starting: no receive yet")
        );
        metrics.receive_failed("not connected to amqp://guest@rabbit yet");
        assert_eq!(
            metrics.not_ready_reason().as_deref(),
            Some("RabbitMQ: not connected to amqp://guest@rabbit yet")
        );
        commands.up();
        // Connected, but the last receive failed.
        assert!(metrics.not_ready_reason().is_some());
        metrics.received();
        // The event sink's link does not decide readiness.
        assert_eq!(metrics.not_ready_reason(), None);
        assert!(!metrics.connected());
        events.up();
        assert!(metrics.connected());

        commands.down("consume: connection reset");
        assert_eq!(
            metrics.not_ready_reason().as_deref(),
            Some("RabbitMQ: consume: connection reset")
        );
        commands.up();
        assert_eq!(metrics.not_ready_reason(), None);
    }
}
