//! What the broker's adapters tell the HTTP surface: why the command
//! consumer cannot take traffic (`/ready`), and their own series for
//! `/metrics`. The wiring ([`crate::broker::connect`]) builds one per bridge
//! from the adapters it made; the routes only ask it, never knowing which
//! broker is behind it.
//!
//! The adapters' reasons are detailed (an AWS error names the IAM principal
//! and account, a RabbitMQ one the host): they go to the log, once each time
//! they change, and the public `/ready` says only what is not ready in
//! generic words ([`NotReady::public`]).

use std::fmt;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use tracing::{info, warn};

type NotReadyFn = dyn Fn() -> Option<String> + Send + Sync;

/// The broker adapters' readiness and metrics.
#[derive(Clone)]
pub struct BrokerStatus {
    not_ready: Arc<NotReadyFn>,
    collector: Option<Arc<dyn Collector>>,
    /// The reason last logged, so each is logged once, not per request.
    logged: Arc<Mutex<Option<String>>>,
}

/// Why the command consumer cannot take traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// For anyone who can reach the public port: what is not ready, in
    /// words that name no account, principal, host or queue.
    pub public: &'static str,
    /// The adapter's own words, for the log.
    pub detail: String,
}

impl NotReady {
    /// Classifies an adapter's reason: the adapters say `starting…` until
    /// their first receive; anything else is a failing command source.
    pub fn of(detail: String) -> Self {
        let public = if detail.starts_with("starting") {
            "starting: the command source has not answered yet"
        } else {
            "command source unavailable"
        };
        Self { public, detail }
    }
}

impl BrokerStatus {
    /// Readiness told by `not_ready`: why the consumer cannot take traffic,
    /// or `None` when it can. No series of its own until
    /// [`BrokerStatus::with_collector`].
    pub fn new(not_ready: impl Fn() -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            not_ready: Arc::new(not_ready),
            collector: None,
            logged: Arc::new(Mutex::new(None)),
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

    /// [`BrokerStatus::not_ready_reason`], classified for the public
    /// `/ready`; the detail is logged when it differs from the last one
    /// logged (and the return to ready once).
    pub fn not_ready(&self) -> Option<NotReady> {
        let detail = self.not_ready_reason();
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if *logged != detail {
            match &detail {
                Some(reason) if reason.starts_with("starting") => info!(%reason, "not ready"),
                Some(reason) => warn!(%reason, "not ready"),
                None => info!("ready: the command source answers"),
            }
            logged.clone_from(&detail);
        }
        detail.map(NotReady::of)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_reason_names_nothing_of_the_detail() {
        let denied = "SQS ReceiveMessage: AccessDenied for sqs:ReceiveMessage: User: \
                      arn:aws:iam::123456789012:user/bridge is not authorized";
        let not_ready = NotReady::of(denied.to_owned());
        assert_eq!(not_ready.public, "command source unavailable");
        assert_eq!(not_ready.detail, denied);
        assert_eq!(
            NotReady::of("starting: the command consumer has not received yet".into()).public,
            "starting: the command source has not answered yet"
        );
    }
}
