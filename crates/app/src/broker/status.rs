//! What the broker's adapters tell the HTTP surface: why the command
//! consumer cannot take traffic (`/ready`), and their own series for
//! `/metrics`. The wiring ([`crate::broker::connect`]) builds one per bridge
//! from the adapters it made; the routes only ask it, never knowing which
//! broker is behind it.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

type NotReady = dyn Fn() -> Option<String> + Send + Sync;

/// The broker adapters' readiness and metrics.
#[derive(Clone)]
pub struct BrokerStatus {
    not_ready: Arc<NotReady>,
    collector: Option<Arc<dyn Collector>>,
}

impl BrokerStatus {
    /// Readiness told by `not_ready`: why the consumer cannot take traffic,
    /// or `None` when it can. No series of its own until
    /// [`BrokerStatus::with_collector`].
    pub fn new(not_ready: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            not_ready: Arc::new(not_ready),
            collector: None,
        }
    }

    /// Adds the adapters' series to `/metrics`.
    pub fn with_collector(mut self, collector: impl Collector) -> Self {
        self.collector = Some(Arc::new(collector));
        self
    }

    /// Why the command consumer cannot take traffic, from the adapter
    /// (shutting down is the app's own reason, checked before this).
    pub fn not_ready_reason(&self) -> Option<String> {
        (self.not_ready)()
    }

    /// The adapters' collector, to register for one scrape.
    pub fn collector(&self) -> Option<Box<dyn Collector>> {
        self.collector
            .clone()
            .map(|collector| Box::new(Shared(collector)) as Box<dyn Collector>)
    }
}

impl fmt::Debug for BrokerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerStatus")
            .field("not_ready", &self.not_ready_reason())
            .field("collector", &self.collector)
            .finish()
    }
}

/// A collector shared between scrapes (each scrape's registry owns a box).
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }
}
