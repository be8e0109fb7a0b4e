//! Building and running one bridge: adapters wired into the use cases, the
//! HTTP server, the command consumer, and the graceful shutdown of them all.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use adapters_aws::AwsMetrics;
use adapters_ws::WsClientRegistry;
use anyhow::Context;
use domain::{Downlink, Outcome, PendingAcks, Presence, SkipOutcome, Stats, Uplink};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::broker::{self, BrokerStatus, Closer, Connection, Ports};
use crate::config::{Config, Scale};
use crate::consumer;
use crate::hand_back::hand_back_or_release;
use crate::{http_adapter, routes};

/// A built bridge, listening but not yet serving.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    shutdown: CancellationToken,
    config: Config,
    downlink: Arc<Downlink>,
    closer: Closer,
    registry: Arc<WsClientRegistry>,
    stats: Arc<Stats>,
    aws_metrics: Option<AwsMetrics>,
    /// Why the broker cannot take traffic, in its adapters' own words.
    status: BrokerStatus,
    closing: CancellationToken,
    /// Where held Commands go back to the fleet at shutdown, in fanout and
    /// sharded mode.
    relay: Arc<broker::ControlRelay>,
    /// The admin API's port and server, when it is on.
    admin: Option<(u16, actix_web::dev::Server)>,
}

impl Application {
    /// Binds the listener and wires everything; nothing runs until
    /// [`Application::run_until_stopped`].
    pub async fn build(config: Config, connection: impl Into<Connection>) -> anyhow::Result<Self> {
        let stats = Arc::new(Stats::default());
        let registry = Arc::new(WsClientRegistry::new());
        let Ports {
            source,
            sink,
            closer,
            status,
            aws_metrics,
            receipts,
            relay,
        } = broker::connect(&config, connection.into(), &stats)?;
        let mut downlink = Downlink::new(
            source,
            registry.clone(),
            config.downlink.delivery.clone(),
            stats.clone(),
        );
        if let Some(mut receipts) = receipts {
            if matches!(config.scale, Scale::Fanout { .. }) {
                receipts = Arc::new(SkipOutcome::new(receipts, Outcome::Undeliverable));
            }
            downlink = downlink.with_receipts(receipts);
        }
        let downlink = Arc::new(downlink);
        let mut uplink = Uplink::new(sink, stats.clone()).with_acks(downlink.acks());
        if let Some(instance) = &config.uplink.presence_instance {
            uplink = uplink.with_presence(Presence::new(instance.clone()));
        }
        let uplink = Arc::new(uplink);
        let closing = CancellationToken::new();

        let server = &config.server;
        let listener = TcpListener::bind((server.host.as_str(), server.port))
            .with_context(|| format!("cannot listen on {}:{}", server.host, server.port))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(http_adapter::state(
            &config,
            registry.clone(),
            uplink,
            stats.clone(),
            status.clone(),
            closing.clone(),
        )?);
        let refused = state.refused.clone();
        state
            .access
            .start()
            .await
            .map_err(|e| anyhow::anyhow!("jwt_jwks_url: the keys could not be fetched: {e}"))?;
        let mut http = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .configure(routes::configure)
        })
        // Commands are small frames pushed as they come: without this, a
        // frame written while the previous one is unacknowledged waits for
        // the client's delayed ACK (up to 40 ms on Linux).
        .tcp_nodelay(true)
        .client_request_timeout(server.handshake_timeout)
        .disable_signals()
        .shutdown_timeout(server.shutdown_timeout.as_secs())
        .listen(listener)?;
        if config.server.workers > 0 {
            http = http.workers(config.server.workers);
        }
        let admin = match &config.server.admin {
            None => None,
            Some(admin) => {
                let listener =
                    TcpListener::bind((admin.host.as_str(), admin.port)).with_context(|| {
                        format!("admin API: cannot listen on {}:{}", admin.host, admin.port)
                    })?;
                let port = listener.local_addr()?.port();
                let server = http_adapter::admin_server(
                    listener,
                    admin,
                    registry.clone(),
                    relay.clone(),
                    stats.clone(),
                    refused,
                )?;
                Some((port, server))
            }
        };
        Ok(Self {
            port,
            server: http.run(),
            shutdown: CancellationToken::new(),
            config,
            downlink,
            closer,
            registry,
            stats,
            aws_metrics,
            status,
            closing,
            relay,
            admin,
        })
    }

    /// The admin API's port, when it is on.
    pub fn admin_port(&self) -> Option<u16> {
        self.admin.as_ref().map(|(port, _)| *port)
    }

    /// The port the server listens on (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cancel this token to stop the bridge gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The bridge's counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// `broker = "aws"`: what the SQS source and SNS sink counted and timed.
    pub fn aws_metrics(&self) -> Option<AwsMetrics> {
        self.aws_metrics.clone()
    }

    /// The broker adapters' readiness, with their detailed reasons (the
    /// public `/ready` shows only generic ones).
    pub fn broker_status(&self) -> BrokerStatus {
        self.status.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains: stop
    /// polling, close every WebSocket with 1001, flush pending publishes,
    /// stop the HTTP server — all within `shutdown_timeout_secs`.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle: ServerHandle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let admin = self.admin.map(|(port, server)| {
            info!(port, "admin API serving");
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let polling = CancellationToken::new();
        let deadline = self.config.server.shutdown_timeout;
        let pollers = consumer::spawn(
            self.downlink.clone(),
            consumer::Pollers {
                min: self.config.downlink.pollers,
                max: self.config.downlink.pollers_max,
                batch: RECEIVE_BATCH,
            },
            polling.clone(),
            receive_grace(self.config.downlink.receive_wait, deadline),
        );
        let acks = self.downlink.acks();
        let sweeper = {
            let (downlink, stop) = (self.downlink.clone(), polling.clone());
            tokio::spawn(supervised(
                "tender",
                self.stats.clone(),
                |s| &s.restarts.tender,
                move || tend_held_deliveries(downlink.clone(), stop.clone()),
            ))
        };
        let ack_settler = {
            let wake = Arc::new(tokio::sync::Notify::new());
            let waker = wake.clone();
            acks.set_waker(move || waker.notify_one());
            let (acks, stop) = (acks.clone(), self.closing.clone());
            tokio::spawn(supervised(
                "ack_settler",
                self.stats.clone(),
                |s| &s.restarts.ack_settler,
                move || settle_acknowledged(acks.clone(), wake.clone(), stop.clone()),
            ))
        };
        {
            // A client whose last acknowledging connection closed gets its
            // held deliveries released now, not after the ack timeout.
            let acks = acks.clone();
            let runtime = tokio::runtime::Handle::current();
            self.registry.on_last_acknowledging_gone(move |client_id| {
                let (acks, client_id) = (acks.clone(), client_id.clone());
                runtime.spawn(async move {
                    acks.release_client(&client_id).await;
                });
            });
        }
        info!(port = self.port, "wsbridge serving");

        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            result = &mut server => {
                polling.cancel();
                return match result {
                    Ok(result) => result.context("HTTP server failed"),
                    Err(e) => Err(e).context("HTTP server task failed"),
                };
            }
        }

        info!("shutting down");
        let drain = async {
            // What cannot be handed off from here on is released at once.
            self.downlink.drain();
            polling.cancel();
            let _ = pollers.await;
            let _ = sweeper.await;
            self.closing.cancel();
            // Before waiting on any client (a stalled one may hold the wait
            // up to the deadline): what still waits for an acknowledgement
            // goes back now, for another replica to deliver — published
            // again where this replica's queue goes with it (fanout).
            let released = hand_back_or_release(&acks, &self.relay).await;
            if released > 0 {
                info!(released, "unacknowledged deliveries released");
            }
            wait_for_sessions(&self.registry).await;
            // Acknowledgements taken until the last session closed are deleted.
            let _ = ack_settler.await;
            while acks.settle_confirmed().await > 0 {}
            hand_back_or_release(&acks, &self.relay).await;
            self.closer.close().await;
            handle.stop(true).await;
        };
        let finished = tokio::time::timeout(deadline, drain).await.is_ok();
        if !finished {
            handle.stop(false).await;
        }
        let _ = server.await;
        if let Some((handle, admin)) = admin {
            handle.stop(false).await;
            let _ = admin.await;
        }
        if !finished {
            let left = Leftovers {
                held: acks.len(),
                unsettled_acks: acks.confirmed_len(),
                connections: self.registry.connection_count(),
            };
            warn!(
                ?deadline,
                held = left.held,
                unsettled_acks = left.unsettled_acks,
                connections = left.connections,
                "graceful shutdown did not finish in time"
            );
            return Err(anyhow::anyhow!(
                "graceful shutdown missed its deadline of {deadline:?}: {left}"
            ));
        }
        info!("stopped");
        Ok(())
    }
}

/// How long a receive in flight at shutdown may take to answer: a long poll
/// ends after its wait (plus the network), but the rest of the drain needs
/// time too, so at most half the deadline.
fn receive_grace(receive_wait: Duration, deadline: Duration) -> Duration {
    (receive_wait + Duration::from_secs(1)).min(deadline / 2)
}

/// Messages one receive takes at most (SQS's limit): a receive that brings
/// this many is full, and the consumer adds a loop.
const RECEIVE_BATCH: usize = 10;

/// What a graceful shutdown that missed its deadline left behind.
struct Leftovers {
    held: usize,
    unsettled_acks: usize,
    connections: usize,
}

impl std::fmt::Display for Leftovers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} delivery(ies) still held (visible again after the queue's visibility timeout), \
             {} acknowledgement(s) not yet deleted (delivered again, then dropped as duplicates), \
             {} connection(s) still open",
            self.held, self.unsettled_acks, self.connections
        )
    }
}

/// Releases held deliveries whose acknowledgement is overdue, keeps the
/// others' messages (and the parked Commands') invisible, and hands out
/// parked Commands as their clients' slots free up, until `stop` is
/// cancelled.
async fn tend_held_deliveries(downlink: Arc<Downlink>, stop: CancellationToken) {
    let acks = downlink.acks();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(acks.tick_interval()) => {
                downlink.tend().await;
            }
        }
    }
}

/// Hands the acknowledged deliveries' messages to the source for deletion
/// as soon as acknowledgements arrive (on SQS the settler batches them and
/// answers at once; an AMQP ack is a local channel write); once `stop` is
/// cancelled, hands over what is left and returns.
async fn settle_acknowledged(
    acks: Arc<PendingAcks>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    loop {
        while acks.settle_confirmed().await > 0 {}
        tokio::select! {
            _ = wake.notified() => {}
            _ = stop.cancelled() => break,
        }
    }
    while acks.settle_confirmed().await > 0 {}
}

/// Runs the task `make` builds until it returns. A panic (a bug) must not
/// silently stop what the task does for the rest of the process: it is
/// logged, counted in the `counter` of `stats`, and the task is started again.
async fn supervised<F, Fut>(
    task: &'static str,
    stats: Arc<Stats>,
    counter: fn(&Stats) -> &AtomicU64,
    make: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match tokio::spawn(make()).await {
            Ok(()) => return,
            Err(failure) => {
                counter(&stats).fetch_add(1, Ordering::Relaxed);
                error!(task, error = %failure, "task panicked; started again");
                tokio::time::sleep(RESTART_PAUSE).await;
            }
        }
    }
}

/// How long a task that panicked waits before it is started again.
const RESTART_PAUSE: Duration = Duration::from_millis(100);

/// Waits until every connection has closed and finished its last publishes
/// (bounded by the sessions themselves: a second into the shutdown, what is
/// left is given up).
async fn wait_for_sessions(registry: &WsClientRegistry) {
    while registry.connection_count() > 0 || registry.closing_count() > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[tokio::test]
    async fn a_supervised_task_that_panics_is_counted_and_started_again() {
        let stats = Arc::new(Stats::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        supervised(
            "tender",
            stats.clone(),
            |s| &s.restarts.tender,
            move || {
                let run = counted.fetch_add(1, Ordering::AcqRel);
                async move {
                    assert!(run > 0, "a bug in the first run");
                }
            },
        )
        .await;
        assert_eq!(runs.load(Ordering::Acquire), 2);
        assert_eq!(stats.restarts.snapshot().tender, 1);
    }
}
