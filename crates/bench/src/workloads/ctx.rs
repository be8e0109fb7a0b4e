//! The run's context ([`Ctx`]): options, the report, the shared SQS/SNS
//! stub, and how a workload starts the server it measures ([`Server`]: the
//! raw baseline or the bridge with fresh resources) and the client fleets
//! that connect to it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use adapters_aws::bootstrap::{self, Infrastructure, Plan};
use anyhow::anyhow;
use serde_json::Value;
use testkit::Aws;

use crate::clients::ClientSpec;
use crate::procfs::Probe;
use crate::report::{Report, Row};
use crate::servers::{Baseline, Bridge, Measured, Stub};

/// Connections per client worker process (fds and ports stay far from the limits).
pub(super) const PER_WORKER: usize = 5000;

/// What the run shares between workloads.
pub struct Ctx {
    /// Tiny sizes, seconds in all.
    pub smoke: bool,
    /// The `wsbridge` binary.
    pub bin: PathBuf,
    /// Where logs go (`target/bench/logs`).
    pub log_dir: PathBuf,
    /// Latency of every stub call (ms).
    pub latency_ms: u64,
    /// Pollers of the bridge (`BRIDGE_POLLERS`); `None`: its default.
    pub pollers: Option<usize>,
    /// A command line the bridge runs under (e.g. valgrind), empty: none.
    pub wrap: Vec<String>,
    /// W4's rates, instead of the default ladder.
    pub rates: Option<Vec<f64>>,
    /// W1's connection counts, instead of 1k, 5k, 15k.
    pub sizes: Option<Vec<usize>>,
    /// Passes per W4 rate (default 3; 1 in smoke mode).
    pub passes: Option<usize>,
    /// Connect storms in W2 (default 2).
    pub storms: Option<usize>,
    /// Only the bridge, no baseline (W1, W2, W4, W4b).
    pub bridge_only: bool,
    /// The results so far.
    pub report: Report,
    stub: Option<(Stub, Aws)>,
    next_ip: u8,
    names: u32,
}

/// The server a workload runs against.
pub enum Server {
    /// The raw baseline.
    Baseline(Baseline),
    /// The bridge, and the resources it reads.
    Bridge(Bridge, Infrastructure),
}

impl Server {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::Baseline(_) => "baseline",
            Self::Bridge(..) => "wsbridge",
        }
    }

    pub(super) fn url(&self) -> String {
        match self {
            Self::Baseline(b) => b.url(),
            Self::Bridge(b, _) => b.url(),
        }
    }

    pub(super) fn path(&self) -> &'static str {
        match self {
            Self::Baseline(_) => "/{id}",
            Self::Bridge(..) => "/ws?client_id={id}",
        }
    }

    pub(super) fn probe(&self) -> Probe {
        match self {
            Self::Baseline(b) => b.probe(),
            Self::Bridge(b, _) => b.probe(),
        }
    }

    pub(super) async fn connections(&mut self) -> anyhow::Result<u64> {
        match self {
            Self::Baseline(b) => b.connections().await,
            Self::Bridge(b, _) => Ok(b.metric("wsbridge_open_connections").await? as u64),
        }
    }

    pub(super) async fn stop(self) -> anyhow::Result<()> {
        match self {
            Self::Baseline(b) => {
                drop(b);
                Ok(())
            }
            Self::Bridge(b, _) => b.stop().await,
        }
    }
}

/// Which server to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Baseline,
    Bridge,
}

impl Ctx {
    /// A context; nothing started yet.
    pub fn new(smoke: bool, bin: PathBuf, log_dir: PathBuf, latency_ms: u64) -> Self {
        Self {
            smoke,
            bin,
            log_dir,
            latency_ms,
            pollers: None,
            wrap: Vec::new(),
            rates: None,
            sizes: None,
            passes: None,
            storms: None,
            bridge_only: false,
            report: Report::default(),
            stub: None,
            next_ip: 10,
            names: 0,
        }
    }

    /// Stops what the context started.
    pub async fn finish(&mut self) {
        self.stub = None;
    }

    pub(super) fn source_ip(&mut self) -> IpAddr {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, self.next_ip));
        self.next_ip = if self.next_ip >= 250 {
            10
        } else {
            self.next_ip + 1
        };
        ip
    }

    pub(super) fn name(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("bench-{prefix}-{}-{}", std::process::id(), self.names)
    }

    pub(super) async fn stub(&mut self) -> anyhow::Result<&(Stub, Aws)> {
        if self.stub.is_none() {
            let stub = Stub::start(self.latency_ms).await?;
            let aws = Aws::new(testkit::sdk_config_at(&stub.endpoint).await);
            self.stub = Some((stub, aws));
        }
        self.stub.as_ref().ok_or_else(|| anyhow!("no stub"))
    }

    /// Fresh resources for one bridge on `aws`.
    pub(super) async fn infra(
        &mut self,
        aws: &Aws,
        prefix: &str,
    ) -> anyhow::Result<Infrastructure> {
        let plan = Plan {
            events_topic: self.name(&format!("{prefix}-events")),
            commands_topic: self.name(&format!("{prefix}-commands")),
            command_queue: self.name(&format!("{prefix}-queue")),
            max_receive_count: 100,
        };
        bootstrap::ensure(&aws.sqs, &aws.sns, &plan)
            .await
            .map_err(|e| anyhow!("bootstrap: {e}"))
    }

    pub(super) fn bridge_env(
        &self,
        endpoint: &str,
        infra: &Infrastructure,
        extra: &[(&str, String)],
    ) -> Vec<(String, String)> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut env: Vec<(String, String)> = testkit::env_vars_at(endpoint)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let settings = [
            ("BRIDGE_HOST", "127.0.0.1".to_owned()),
            (
                "BRIDGE_CONFIG_DIR",
                root.join("config").display().to_string(),
            ),
            ("BRIDGE_COMMAND_QUEUE_URL", infra.command_queue_url.clone()),
            ("BRIDGE_EVENTS_TOPIC_ARN", infra.events_topic_arn.clone()),
            (
                "BRIDGE_COMMANDS_TOPIC_ARN",
                infra.commands_topic_arn.clone(),
            ),
            ("BRIDGE_UNDELIVERABLE", "drop".to_owned()),
            ("BRIDGE_MAX_CONNECTIONS", "100000".to_owned()),
            ("BRIDGE_MAX_CONNECTIONS_PER_IP", "100000".to_owned()),
            ("BRIDGE_MAX_CONNECTIONS_PER_CLIENT", "1000".to_owned()),
            ("BRIDGE_MESSAGE_RATE_PER_SEC", "100000".to_owned()),
            ("BRIDGE_MESSAGE_BURST", "100000".to_owned()),
            ("BRIDGE_SHUTDOWN_TIMEOUT_SECS", "5".to_owned()),
            ("BRIDGE_LOG_FORMAT", "text".to_owned()),
        ];
        env.extend(settings.into_iter().map(|(k, v)| (k.to_owned(), v)));
        if let Some(pollers) = self.pollers {
            env.push(("BRIDGE_POLLERS".into(), pollers.to_string()));
        }
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env
    }

    pub(super) async fn start_bridge_at(
        &mut self,
        endpoint: &str,
        infra: &Infrastructure,
        name: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Bridge> {
        let env = self.bridge_env(endpoint, infra, extra);
        let log_name = format!("{name}-{}", self.names);
        Bridge::start(&self.wrap, &self.bin, &env, &self.log_dir, &log_name).await
    }

    pub(super) async fn start(
        &mut self,
        kind: Kind,
        name: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<Server> {
        match kind {
            Kind::Baseline => Ok(Server::Baseline(Baseline::start().await?)),
            Kind::Bridge => {
                let (endpoint, aws) = {
                    let (stub, aws) = self.stub().await?;
                    (stub.endpoint.clone(), aws.clone())
                };
                let infra = self.infra(&aws, name).await?;
                let bridge = self.start_bridge_at(&endpoint, &infra, name, extra).await?;
                Ok(Server::Bridge(bridge, infra))
            }
        }
    }

    /// Client specs for `ids` distinct ids × `sockets` each, split over workers.
    pub(super) fn specs(
        &mut self,
        target: &Server,
        prefix: &str,
        ids: usize,
        sockets: usize,
    ) -> Vec<ClientSpec> {
        if ids == 1 && sockets >= 20 {
            // One id on many sockets: half the sockets in each of two workers.
            let mut specs = self.specs(target, prefix, 1, sockets / 2);
            specs.extend(self.specs(target, prefix, 1, sockets - sockets / 2));
            return specs;
        }
        let per_worker_ids = (PER_WORKER / sockets.max(1)).max(1);
        let workers = ids
            .div_ceil(per_worker_ids)
            .max(if ids * sockets >= 500 { 2 } else { 1 });
        let per = ids.div_ceil(workers);
        (0..workers)
            .filter_map(|w| {
                let first = w * per;
                let count = per.min(ids.saturating_sub(first));
                (count > 0).then(|| ClientSpec {
                    url: target.url(),
                    path: target.path().into(),
                    prefix: prefix.into(),
                    first,
                    ids: count,
                    sockets_per_id: sockets,
                    source_ip: self.source_ip(),
                    concurrency: 100,
                    stall: false,
                    restall_ms: None,
                    rcvbuf: None,
                })
            })
            .collect()
    }

    /// Waits `full` seconds (a tenth of it in smoke mode).
    pub(super) async fn pause(&self, full: f64) {
        let secs = if self.smoke { full / 10.0 } else { full };
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }

    pub(super) fn kinds(&self) -> Vec<Kind> {
        if self.bridge_only {
            vec![Kind::Bridge]
        } else {
            vec![Kind::Baseline, Kind::Bridge]
        }
    }

    pub(super) fn secs(&self, full: f64) -> f64 {
        if self.smoke {
            1.0
        } else {
            full
        }
    }

    /// How long to push at `rate` frames per second: `full` seconds, longer
    /// at low rates so that a window holds at least 20 000 frames (CPU time
    /// is read in 10 ms ticks).
    pub(super) fn window(&self, full: f64, frames_per_s: f64) -> f64 {
        if self.smoke {
            1.0
        } else {
            full.max(15_000.0 / frames_per_s.max(1.0)).min(20.0)
        }
    }

    pub(super) fn push_row(&mut self, row: Row) {
        println!(
            "  {} {} {}: {}",
            row.workload,
            row.server,
            row.case,
            Value::Object(row.metrics.clone())
        );
        self.report.rows.push(row);
    }
}
