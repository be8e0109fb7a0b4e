//! The connection supervisor, written once for the command source and the
//! sinks (events, receipts): a task that owns one connection, opens the link's channels
//! on it, watches both, and puts them back when they go.
//!
//! What a link needs on a connection is a [`Session`]: the source opens a
//! consuming channel (`basic.qos` + `basic.consume`) and pumps its
//! deliveries; a sink opens a confirm-mode channel and only answers
//! calls. The supervisor does the rest, the same way for both:
//!
//! - connects within a deadline, and after a failure waits a [`Backoff`]
//!   pause (exponential, jittered) before the next attempt;
//! - opens the session's channels; each opening is a new *generation*
//!   (the source's receipts carry it);
//! - while up, watches the connection's events, the session's own work,
//!   an explicit [`Supervisor::repair`] request, and a one-second check;
//! - when only the channel died (the broker closes a channel on a protocol
//!   error, e.g. a publish to a missing exchange) and the connection still
//!   works, reopens the channel on it at once; when the connection died, or
//!   the reopening failed, closes it and reconnects after a pause;
//! - publishes its state ([`LinkState`]), which says why it is not up,
//!   and mirrors it into [`AmqpMetrics`] (connected gauge, reconnects,
//!   connect and channel-open latencies);
//! - survives a panic: the session's work (the source's delivery pump,
//!   which reads whatever the bus sends) runs in a task of its own, and a
//!   panic there counts as a lost connection: logged at error, counted
//!   (`wsbridge_amqp_task_panics_total`), the connection closed (the broker
//!   redelivers what was not acknowledged) and opened again. A panic in the
//!   supervisor's own loop restarts the loop the same way. So the link is
//!   never dead for good while the bridge runs: it is up, or reconnecting
//!   and saying why (`/ready` 503).
//!
//! Source and sink each keep a connection of their own (named for the
//! broker's connection list): a broker under a resource alarm blocks
//! connections that publish, and the consumer's acknowledgements must
//! keep flowing meanwhile (RabbitMQ's advice: separate connections for
//! publishers and consumers).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use lapin::{Connection, Event};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::backoff::{Backoff, Reconnect};
use crate::link::{self, Failure};
use crate::metrics::{op, AmqpMetrics, LinkHealth, Role};
use crate::url::AmqpUrl;

/// How often the supervisor looks at the connection and the channels
/// besides their events.
const HEALTH_CHECK: Duration = Duration::from_secs(1);

/// Where a link connects and how it reconnects.
#[derive(Debug, Clone)]
pub(crate) struct LinkSettings {
    /// Which link this is (logs, readiness).
    pub(crate) role: Role,
    /// The queue or exchange the link serves, for logs.
    pub(crate) target: String,
    /// The connection's name on the broker (`connection_name`).
    pub(crate) connection_name: String,
    /// How long opening a connection may take.
    pub(crate) connect_timeout: Duration,
    /// Pauses between reconnection attempts.
    pub(crate) reconnect: Reconnect,
}

/// What a link is doing, with the channels while it is up.
#[derive(Debug, Clone)]
pub(crate) enum LinkState<C> {
    /// The first connection attempt is under way.
    Connecting,
    /// Connected, channels open.
    Up(C),
    /// Not connected, or the channels could not be opened: why.
    Down(Failure),
    /// Closed for good.
    Closed,
}

/// What a session opened on a connection.
pub(crate) struct Opened<C> {
    /// What the link's users take while it is up.
    pub(crate) channels: C,
    /// Runs while the channels are up and ends with why they went down
    /// (the source's delivery pump); a link that only answers calls never
    /// ends it ([`futures_util::future::pending`]). Dropped when the link
    /// stops.
    pub(crate) work: BoxFuture<'static, Failure>,
}

/// What a link opens on each connection, and forgets when it goes.
#[async_trait]
pub(crate) trait Session: Send + Sync + 'static {
    /// What the link's users take while it is up (cheap to clone).
    type Channels: Clone + Send + Sync + 'static;

    /// Opens the link's channels on `connection`; `generation` numbers the
    /// openings of this link (1, 2, …). On failure, what it opened is left
    /// to the connection's close.
    async fn open(
        &self,
        connection: &Connection,
        generation: u64,
    ) -> Result<Opened<Self::Channels>, Failure>;

    /// Whether the channels still work.
    fn healthy(&self, channels: &Self::Channels) -> bool;

    /// The channels are gone (lost, or the link stops): forget what was
    /// tied to them. Called once per successful [`Session::open`].
    async fn down(&self, channels: &Self::Channels);
}

/// The handle of a running supervisor: its state, and the means to stop it.
/// Dropping it stops the task, which closes the connection.
#[derive(Debug)]
pub(crate) struct Supervisor<C> {
    state: Arc<watch::Sender<LinkState<C>>>,
    repair: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    metrics: AmqpMetrics,
    health: Arc<LinkHealth>,
}

impl<C: Clone + Send + Sync + 'static> Supervisor<C> {
    /// Starts supervising `session`'s link to `url`. Must be called within
    /// a tokio runtime.
    pub(crate) fn spawn<S>(
        url: AmqpUrl,
        settings: LinkSettings,
        session: S,
        metrics: AmqpMetrics,
    ) -> Self
    where
        S: Session<Channels = C>,
    {
        let state = Arc::new(watch::Sender::new(LinkState::Connecting));
        let repair = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let health = metrics.link(settings.role, not_yet(&url));
        let task = Task {
            url,
            settings,
            session,
            state: state.clone(),
            repair: repair.clone(),
            metrics: metrics.clone(),
            health: health.clone(),
        };
        let task = tokio::spawn(Arc::new(task).watch(stopped));
        Self {
            state,
            repair,
            stop,
            task: Mutex::new(Some(task)),
            metrics,
            health,
        }
    }

    /// A receiver of the state, marked as having seen the current one.
    pub(crate) fn subscribe(&self) -> watch::Receiver<LinkState<C>> {
        self.state.subscribe()
    }

    /// Whether the channels are open right now.
    pub(crate) fn is_up(&self) -> bool {
        matches!(*self.state.borrow(), LinkState::Up(_))
    }

    /// Waits up to `timeout` for the channels; says whether they are open.
    pub(crate) async fn wait_up(&self, timeout: Duration) -> bool {
        let mut state = self.state.subscribe();
        tokio::time::timeout(timeout, state.wait_for(|s| matches!(s, LinkState::Up(_))))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A call on the channels failed: look at them now rather than at the
    /// next check.
    pub(crate) fn repair(&self) {
        self.repair.notify_one();
    }

    /// Stops the task and waits for it: the channels are forgotten and the
    /// connection closed.
    pub(crate) async fn close(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl<C> Drop for Supervisor<C> {
    fn drop(&mut self) {
        // Dropping `stop` ends the task; the link no longer counts as one
        // of the metrics' links.
        self.metrics.forget(&self.health);
    }
}

fn not_yet(url: &AmqpUrl) -> String {
    format!("not connected to {url} yet")
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the handle was dropped: stop as well.
    let _ = stop.wait_for(|s| *s).await;
}

/// How a link's channels ended.
enum End {
    Stopped,
    Lost(Failure),
    /// The session's work panicked: the connection is closed and opened
    /// again, so that the broker takes back what the channels held.
    Panicked(Failure),
}

/// Aborts a task when dropped: the session's work ends with its link.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a panic said, for the log.
fn panic_text(error: tokio::task::JoinError) -> String {
    if !error.is_panic() {
        return error.to_string();
    }
    let payload = error.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

struct Task<S: Session> {
    url: AmqpUrl,
    settings: LinkSettings,
    session: S,
    state: Arc<watch::Sender<LinkState<S::Channels>>>,
    repair: Arc<Notify>,
    metrics: AmqpMetrics,
    health: Arc<LinkHealth>,
}

impl<S: Session> Task<S> {
    /// Runs the link until it is stopped, starting it again after a panic
    /// in its loop (a bug: counted and logged at error), after a pause.
    async fn watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let link = role_name(self.settings.role);
        let mut backoff = Backoff::new(self.settings.reconnect);
        loop {
            let run = tokio::spawn(self.clone().run(stop.clone()));
            let Err(panic) = run.await else { return };
            let text = panic_text(panic);
            error!(link, target = %self.settings.target, panic = %text, "the link's supervisor panicked; starting it again");
            self.metrics.panicked();
            self.set_down(Failure::unavailable(format!(
                "{link} link restarting after a panic: {text}"
            )));
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = tokio::time::sleep(backoff.next_pause()) => {}
            }
        }
        self.health.down(format!("{link} link closed"));
        self.state.send_replace(LinkState::Closed);
    }

    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let settings = &self.settings;
        let link = role_name(settings.role);
        let mut backoff = Backoff::new(settings.reconnect);
        let mut generation: u64 = 0;
        let mut was_up = false;
        'connect: loop {
            let timer = self.metrics.time(op::CONNECT);
            let connected = tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                connected = link::connect(&self.url, &settings.connection_name, settings.connect_timeout) => connected,
            };
            timer.stop();
            let lost = match connected {
                Err(failure) => {
                    if failure.misconfigured {
                        warn!(link, target = %settings.target, error = %failure, "broker refuses the connection; retrying");
                    } else {
                        debug!(link, target = %settings.target, error = %failure, "broker unreachable; retrying");
                    }
                    failure
                }
                Ok(connection) => {
                    let mut events = Box::pin(connection.events_listener());
                    // Channels on this connection, reopened while it lasts.
                    let lost = loop {
                        generation += 1;
                        let timer = self.metrics.time(op::CHANNEL_OPEN);
                        let opened = tokio::select! {
                            biased;
                            () = stopped(&mut stop) => {
                                link::close_connection(&connection, "wsbridge link closed").await;
                                break 'connect;
                            }
                            opened = self.session.open(&connection, generation) => opened,
                        };
                        timer.stop();
                        let Opened { channels, work } = match opened {
                            Ok(opened) => opened,
                            Err(failure) => {
                                if failure.misconfigured {
                                    warn!(link, target = %settings.target, error = %failure, "cannot open the link's channel; retrying");
                                } else {
                                    debug!(link, target = %settings.target, error = %failure, "channel not opened; reconnecting");
                                }
                                break failure;
                            }
                        };
                        backoff.reset();
                        if was_up {
                            self.metrics.reconnected();
                        }
                        was_up = true;
                        self.health.up();
                        self.state.send_replace(LinkState::Up(channels.clone()));
                        info!(link, target = %settings.target, broker = %self.url, generation, "link up");
                        let end = self
                            .serve(&connection, &channels, work, &mut events, &mut stop)
                            .await;
                        self.session.down(&channels).await;
                        match end {
                            End::Stopped => {
                                link::close_connection(&connection, "wsbridge link closed").await;
                                break 'connect;
                            }
                            End::Panicked(failure) => {
                                error!(link, target = %settings.target, error = %failure, "the link's work panicked; reconnecting");
                                self.metrics.panicked();
                                break failure;
                            }
                            End::Lost(failure) => {
                                self.set_down(failure.clone());
                                if !connection.status().connected() {
                                    warn!(link, target = %settings.target, error = %failure, "connection lost; reconnecting");
                                    break failure;
                                }
                                debug!(link, target = %settings.target, error = %failure, "channel lost; reopening it");
                            }
                        }
                    };
                    link::close_connection(&connection, "connection lost").await;
                    lost
                }
            };
            self.set_down(lost);
            let pause = backoff.next_pause();
            tokio::select! {
                biased;
                () = stopped(&mut stop) => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        self.health.down(format!("{link} link closed"));
        self.state.send_replace(LinkState::Closed);
        debug!(link, target = %settings.target, "link stopped");
    }

    fn set_down(&self, failure: Failure) {
        self.health.down(failure.text.clone());
        self.state.send_replace(LinkState::Down(failure));
    }

    /// Waits until the channels or the connection fail, or the link stops.
    async fn serve(
        &self,
        connection: &Connection,
        channels: &S::Channels,
        work: BoxFuture<'static, Failure>,
        events: &mut (impl futures_util::Stream<Item = Event> + Unpin),
        stop: &mut watch::Receiver<bool>,
    ) -> End {
        let mut check = tokio::time::interval(HEALTH_CHECK);
        // A task of its own, so that a panic in it is caught here.
        let mut work = AbortOnDrop(tokio::spawn(work));
        loop {
            tokio::select! {
                biased;
                () = stopped(stop) => return End::Stopped,
                ended = &mut work.0 => return match ended {
                    Ok(failure) => End::Lost(failure),
                    Err(panic) => End::Panicked(Failure::unavailable(format!(
                        "the link's work panicked: {}",
                        panic_text(panic)
                    ))),
                },
                event = events.next() => match event {
                    Some(Event::Error(error)) => return End::Lost(Failure::from_lapin("connection", &error)),
                    Some(_) => {}
                    None => return End::Lost(Failure::unavailable("connection events ended")),
                },
                () = self.repair.notified() => {}
                _ = check.tick() => {}
            }
            if !connection.status().connected() {
                return End::Lost(Failure::unavailable("connection closed"));
            }
            if !self.session.healthy(channels) {
                return End::Lost(Failure::unavailable("channel closed by the broker"));
            }
        }
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Commands => "commands",
        Role::Events => "events",
        Role::Receipts => "receipts",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// A session whose work (or, with `in_open`, whose opening) panics on
    /// the first connection, as a bug or an unforeseen input would.
    struct Panicking {
        opened: Arc<AtomicU64>,
        in_open: bool,
    }

    #[async_trait]
    impl Session for Panicking {
        type Channels = u64;

        async fn open(&self, _: &Connection, generation: u64) -> Result<Opened<u64>, Failure> {
            let first = self.opened.fetch_add(1, Ordering::SeqCst) == 0;
            assert!(!(first && self.in_open), "opening panicked");
            let work: BoxFuture<'static, Failure> = if first {
                Box::pin(async { panic!("a delivery the pump could not take") })
            } else {
                Box::pin(futures_util::future::pending())
            };
            Ok(Opened {
                channels: generation,
                work,
            })
        }

        fn healthy(&self, _: &u64) -> bool {
            true
        }

        async fn down(&self, _: &u64) {}
    }

    fn broker() -> AmqpUrl {
        let url = std::env::var("WSBRIDGE_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
        AmqpUrl::parse(&url).unwrap()
    }

    /// Starts a link whose session panics once; says whether it came up
    /// again on a later opening, and how many panics were counted.
    async fn comes_back_after_a_panic(in_open: bool) -> (bool, u64) {
        let metrics = AmqpMetrics::new();
        let opened = Arc::new(AtomicU64::new(0));
        let settings = LinkSettings {
            role: Role::Commands,
            target: "test".to_owned(),
            connection_name: format!("wsbridge-supervisor-test-{in_open}"),
            connect_timeout: Duration::from_secs(5),
            reconnect: Reconnect {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(100),
            },
        };
        let session = Panicking {
            opened: opened.clone(),
            in_open,
        };
        let link = Supervisor::spawn(broker(), settings, session, metrics.clone());
        let mut state = link.subscribe();
        let up_again = tokio::time::timeout(
            Duration::from_secs(10),
            state.wait_for(|s| matches!(s, LinkState::Up(_)) && opened.load(Ordering::SeqCst) >= 2),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        link.close().await;
        (up_again, metrics.panics())
    }

    #[tokio::test]
    async fn a_panic_in_the_sessions_work_reconnects_the_link() {
        assert_eq!(comes_back_after_a_panic(false).await, (true, 1));
    }

    #[tokio::test]
    async fn a_panic_in_the_supervisors_loop_starts_it_again() {
        assert_eq!(comes_back_after_a_panic(true).await, (true, 1));
    }
}
