//! `/metrics`, encoded by `prometheus-client` (the Prometheus project's Rust
//! client) from the bridge's own atomics and the broker adapter's metrics.
//!
//! The use cases count into `domain::Stats` (plain atomics, no metrics crate
//! there); at each scrape a [`Snapshot`] is taken and handed to a
//! `prometheus_client` [`Collector`], which describes and encodes it. The
//! broker adapter's own collector (its call counts and latencies, under the
//! broker's names: `wsbridge_sqs_*` for `broker = "aws"`, handed in through
//! [`BrokerProbe`](crate::BrokerProbe)) is registered next to it, so a
//! bridge exports only its own broker's series.
//! The Prometheus text format (0.0.4) is the default; a scraper that asks for
//! OpenMetrics (`Accept: application/openmetrics-text`) gets that.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `wsbridge_open_connections` | gauge | |
//! | `wsbridge_fragment_bytes_held` | gauge | |
//! | `wsbridge_ready` | gauge | |
//! | `wsbridge_commands_total` | counter | `outcome` |
//! | `wsbridge_client_messages_total` | counter | `outcome` |
//! | `wsbridge_upgrades_refused_total` | counter | `reason` |
//! | `wsbridge_admin_requests_refused_total` | counter | `reason` |
//! | `wsbridge_connections_closed_total` | counter | `code` |
//! | `wsbridge_command_forward_latency_seconds` | histogram | |
//! | the broker adapter's series | | |

use std::fmt;
use std::sync::atomic::Ordering;

use domain::stats::{ControlSnapshot, DownlinkSnapshot, HistogramSnapshot, UplinkSnapshot};
use domain::Stats;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::refusals::Refusals;

/// `Content-Type` of the Prometheus text format (0.0.4).
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of the OpenMetrics text format (1.0.0).
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every value `/metrics` shows, read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Open WebSocket connections.
    pub open_connections: u64,
    /// Bytes held in incomplete (fragmented) client messages.
    pub fragment_bytes_held: u64,
    /// Whether `/ready` answers 200.
    pub ready: bool,
    /// The downlink's counters.
    pub downlink: DownlinkSnapshot,
    /// The uplink's counters.
    pub uplink: UplinkSnapshot,
    /// The control-plane events' counters.
    pub control: ControlSnapshot,
    /// Connections closed, by close code label.
    pub close_codes: Vec<(String, u64)>,
    /// Upgrades refused before the handshake, by reason.
    pub refused: Vec<(&'static str, u64)>,
    /// Admin API calls refused, by reason.
    pub admin_refused: Vec<(&'static str, u64)>,
    /// Published → hand-off latency of forwarded Commands.
    pub forward_latency: HistogramSnapshot,
    /// Deliveries waiting for an acknowledgement.
    pub held_deliveries: u64,
    /// Tasks started again after a panic.
    pub restarts: domain::stats::TaskSnapshot,
    /// How long forwarded message ids are remembered now, in seconds.
    pub dedup_window_secs: f64,
}

impl Snapshot {
    /// Reads `stats`, the refusals and the values kept outside them.
    pub fn take(
        stats: &Stats,
        open_connections: usize,
        fragment_bytes_held: usize,
        ready: bool,
        refused: &Refusals,
    ) -> Self {
        Self {
            open_connections: open_connections as u64,
            fragment_bytes_held: fragment_bytes_held as u64,
            ready,
            downlink: stats.downlink.snapshot(),
            uplink: stats.uplink.snapshot(),
            control: stats.control.snapshot(),
            held_deliveries: stats.held_deliveries.load(Ordering::Relaxed),
            restarts: stats.restarts.snapshot(),
            dedup_window_secs: stats.dedup_window_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            close_codes: stats.close_codes.snapshot(),
            refused: refused.upgrades(),
            admin_refused: refused.admin(),
            forward_latency: stats.forward_latency.snapshot(),
        }
    }
}

/// Which text format to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4 (`text/plain`).
    Prometheus,
    /// OpenMetrics 1.0.0 text.
    OpenMetrics,
}

impl Format {
    /// The format a request's `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => PROMETHEUS_TEXT,
            Self::OpenMetrics => OPENMETRICS_TEXT,
        }
    }
}

/// Encodes `snapshot`, then what `broker` (the broker adapter's collector,
/// if it has one) reports, in `format`.
pub fn render(snapshot: Snapshot, broker: Option<Box<dyn Collector>>, format: Format) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    if let Some(broker) = broker {
        registry.register_collector(broker);
    }
    let mut out = String::with_capacity(8 * 1024);
    let encoded = match format {
        Format::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    // Writing into a String cannot fail; the collector's own encoding does
    // not either (fixed names, escaped label values).
    debug_assert!(encoded.is_ok());
    out
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_gauges(&mut encoder)?;
        self.encode_commands(&mut encoder)?;
        self.encode_client_side(&mut encoder)?;
        self.encode_refusals_and_closes(&mut encoder)?;
        let mut metric = encoder.encode_descriptor(
            "wsbridge_command_forward_latency_seconds",
            "From when a Command was published (SNS Timestamp; SQS SentTimestamp for bare \
             Commands) to its hand-off to the connections' outgoing queues.",
            None,
            MetricType::Histogram,
        )?;
        histogram(&mut metric, &self.forward_latency)
    }
}

// One method per group of families, in the order a scrape lists them.
impl Snapshot {
    /// Connections, readiness, task restarts, held deliveries, the
    /// de-duplication window.
    fn encode_gauges(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        gauge(
            encoder,
            "wsbridge_open_connections",
            "Open WebSocket connections.",
            self.open_connections,
        )?;
        gauge(
            encoder,
            "wsbridge_fragment_bytes_held",
            "Bytes held in incomplete (fragmented) client messages, over all connections; \
             at most fragment_budget_bytes.",
            self.fragment_bytes_held,
        )?;
        gauge(
            encoder,
            "wsbridge_ready",
            "1 while the command consumer runs and its last receive succeeded (/ready is 200).",
            u64::from(self.ready),
        )?;

        let r = &self.restarts;
        labelled_counter(
            encoder,
            "wsbridge_task_restarts",
            "The bridge's tasks that panicked and were started again, by task: poller (a \
             batch of Commands being routed; its messages come back after their visibility \
             timeout), tender (held and parked deliveries), ack_settler. A panic is a bug: \
             the log has it at error.",
            "task",
            &[
                ("poller", r.poller),
                ("tender", r.tender),
                ("ack_settler", r.ack_settler),
            ],
        )?;

        gauge(
            encoder,
            "wsbridge_held_deliveries",
            "Commands delivered to ack=true connections and waiting for the acknowledgement.",
            self.held_deliveries,
        )?;
        encoder
            .encode_descriptor(
                "wsbridge_dedup_window_seconds",
                "How long a forwarded message id is remembered for de-duplication now: the \
                 configured TTL, or less while the memory is full (raise dedup_capacity).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&self.dedup_window_secs)?;
        Ok(())
    }

    /// Commands by outcome.
    fn encode_commands(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let d = &self.downlink;
        labelled_counter(
            encoder,
            "wsbridge_commands",
            "Commands by outcome: received from the queue; forwarded (handed to at least one \
             connection); undeliverable (deleted, client absent); released (made visible again \
             for a later attempt); malformed; duplicate; frames_queued (one per connection \
             written to); acknowledged_by_client, ack_released, ack_redelivered (delivered \
             again from the hold after the ack timeout), visibility_extended and \
             deferred (ack=true connections); dead_lettered (given up: sent to the dead-letter \
             queue, or deleted where there is none).",
            "outcome",
            &[
                ("received", d.received),
                ("forwarded", d.forwarded),
                ("undeliverable", d.undeliverable),
                ("released", d.released),
                ("malformed", d.malformed),
                ("duplicate", d.duplicate),
                ("frames_queued", d.frames_queued),
                ("acknowledged_by_client", d.acknowledged_by_client),
                ("ack_released", d.ack_released),
                ("ack_redelivered", d.ack_redelivered),
                ("visibility_extended", d.visibility_extended),
                ("deferred", d.deferred),
                ("dead_lettered", d.dead_lettered),
            ],
        )
    }

    /// Client messages, presence events, delivery receipts, admin orders.
    fn encode_client_side(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let u = &self.uplink;
        labelled_counter(
            encoder,
            "wsbridge_client_messages",
            "Client messages by outcome: published; failed (the event bus failed or refused \
             it); invalid (not a ClientMessage); rate_limited (over the connection's rate, \
             refused unread).",
            "outcome",
            &[
                ("published", u.published),
                ("failed", u.failed),
                ("invalid", u.invalid),
                ("rate_limited", u.rate_limited),
            ],
        )?;
        let c = self.control;
        labelled_counter(
            encoder,
            "wsbridge_presence_events",
            "Presence events ($connect, $disconnect) by outcome: published; failed (the \
             event bus failed or refused it).",
            "outcome",
            &[
                ("published", c.presence_published),
                ("failed", c.presence_failed),
            ],
        )?;
        labelled_counter(
            encoder,
            "wsbridge_receipts",
            "Delivery receipts by outcome: published; failed (given up after retries); \
             dropped (their queue was full).",
            "outcome",
            &[
                ("published", c.receipts_published),
                ("failed", c.receipts_failed),
                ("dropped", c.receipts_dropped),
            ],
        )?;
        labelled_counter(
            encoder,
            "wsbridge_admin_orders",
            "Admin API disconnect and send orders: here (carried out on this replica); \
             forwarded (published to the bus as control messages); failed (the bus \
             refused them).",
            "outcome",
            &[
                ("here", c.admin_here),
                ("forwarded", c.admin_forwarded),
                ("failed", c.admin_failed),
            ],
        )
    }

    /// Refused upgrades and admin calls, closed connections.
    fn encode_refusals_and_closes(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        labelled_counter(
            encoder,
            "wsbridge_upgrades_refused",
            "WebSocket upgrades refused before the handshake, by reason.",
            "reason",
            &self.refused,
        )?;
        labelled_counter(
            encoder,
            "wsbridge_admin_requests_refused",
            "Admin API calls refused, by reason (a 4xx answer; a control message the \
             bus refused is a failed admin order).",
            "reason",
            &self.admin_refused,
        )?;
        let close_codes: Vec<(&str, u64)> = self
            .close_codes
            .iter()
            .map(|(code, n)| (code.as_str(), *n))
            .collect();
        labelled_counter(
            encoder,
            "wsbridge_connections_closed",
            "WebSocket connections closed, by the close code the server sent (none: the \
             connection was gone, no close frame could be sent).",
            "code",
            &close_codes,
        )
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    // Gauges are encoded as i64; no value here comes near its limit.
    let value = i64::try_from(value).unwrap_or(i64::MAX);
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

fn labelled_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (key, value) in values {
        metric
            .encode_family(&[(label, *key)])?
            .encode_counter::<NoLabelSet, _, u64>(value, None)?;
    }
    Ok(())
}

/// Encodes a histogram snapshot (each bucket's own count; the encoder adds `+Inf`).
fn histogram(metric: &mut MetricEncoder, snapshot: &HistogramSnapshot) -> fmt::Result {
    let buckets = snapshot.own_buckets();
    metric.encode_histogram::<NoLabelSet>(snapshot.sum_secs, snapshot.count, &buckets, None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::refusals::{AdminRefusal, Refusal};

    fn sample() -> Snapshot {
        let stats = Stats::default();
        stats
            .downlink
            .received
            .store(5, std::sync::atomic::Ordering::Relaxed);
        stats
            .downlink
            .forwarded
            .store(3, std::sync::atomic::Ordering::Relaxed);
        stats
            .uplink
            .rate_limited
            .store(2, std::sync::atomic::Ordering::Relaxed);
        stats.close_codes.record(Some(1000));
        stats.forward_latency.record(Duration::from_millis(3));
        stats.forward_latency.record(Duration::from_millis(40));
        let refused = Refusals::default();
        refused.count(Refusal::Origin);
        refused.count_admin(AdminRefusal::Unauthorized);
        Snapshot::take(&stats, 4, 1500, true, &refused)
    }

    /// The `# TYPE` lines of `text`: every family's name and type.
    fn families(text: &str) -> BTreeSet<&str> {
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .collect()
    }

    /// A broker adapter's collector: one counter of its own.
    #[derive(Debug)]
    struct BrokerSeries;

    impl Collector for BrokerSeries {
        fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
            labelled_counter(
                &mut encoder,
                "wsbridge_broker_calls",
                "A broker adapter's own series.",
                "operation",
                &[("receive", 7)],
            )
        }
    }

    #[test]
    fn renders_every_family_in_the_prometheus_text_format() {
        let text = render(sample(), None, Format::Prometheus);
        for line in [
            "# TYPE wsbridge_open_connections gauge\n",
            "wsbridge_open_connections 4\n",
            "# TYPE wsbridge_fragment_bytes_held gauge\n",
            "wsbridge_fragment_bytes_held 1500\n",
            "wsbridge_ready 1\n",
            "# TYPE wsbridge_commands_total counter\n",
            "wsbridge_commands_total{outcome=\"received\"} 5\n",
            "wsbridge_commands_total{outcome=\"forwarded\"} 3\n",
            "wsbridge_commands_total{outcome=\"malformed\"} 0\n",
            "wsbridge_client_messages_total{outcome=\"rate_limited\"} 2\n",
            "wsbridge_upgrades_refused_total{reason=\"origin_not_allowed\"} 1\n",
            "wsbridge_upgrades_refused_total{reason=\"invalid_handshake\"} 0\n",
            "wsbridge_admin_requests_refused_total{reason=\"unauthorized\"} 1\n",
            "wsbridge_admin_requests_refused_total{reason=\"invalid_body\"} 0\n",
            "wsbridge_connections_closed_total{code=\"1000\"} 1\n",
            "wsbridge_connections_closed_total{code=\"1013\"} 0\n",
            "# TYPE wsbridge_command_forward_latency_seconds histogram\n",
            "wsbridge_command_forward_latency_seconds_bucket{le=\"0.001\"} 0\n",
            "wsbridge_command_forward_latency_seconds_bucket{le=\"0.005\"} 1\n",
            "wsbridge_command_forward_latency_seconds_bucket{le=\"0.05\"} 2\n",
            "wsbridge_command_forward_latency_seconds_bucket{le=\"+Inf\"} 2\n",
            "wsbridge_command_forward_latency_seconds_count 2\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn renders_openmetrics_when_asked() {
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        let text = render(sample(), Some(Box::new(BrokerSeries)), Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE wsbridge_commands counter\n"),
            "{text}"
        );
        assert!(
            text.contains("wsbridge_commands_total{outcome=\"received\"} 5\n"),
            "{text}"
        );
    }

    #[test]
    fn without_a_broker_collector_no_broker_series_are_exported() {
        // An AMQP bridge, until its adapter's collector is registered.
        let text = render(sample(), None, Format::Prometheus);
        assert!(!text.contains("wsbridge_sqs_"), "{text}");
        assert!(!text.contains("wsbridge_backend_call"), "{text}");
        assert!(!text.contains("wsbridge_broker_calls"), "{text}");
        assert!(text.contains("wsbridge_commands_total"), "{text}");
    }

    #[test]
    fn a_broker_collector_adds_exactly_its_series() {
        let bridge = render(sample(), None, Format::Prometheus);
        let with_broker = render(sample(), Some(Box::new(BrokerSeries)), Format::Prometheus);
        assert!(
            with_broker.contains("wsbridge_broker_calls_total{operation=\"receive\"} 7\n"),
            "{with_broker}"
        );
        let (bridge, with_broker) = (families(&bridge), families(&with_broker));
        let added: Vec<&str> = with_broker.difference(&bridge).copied().collect();
        assert_eq!(added, ["wsbridge_broker_calls_total counter"]);
        assert!(bridge.is_subset(&with_broker));
    }
}
