//! The command consumer: long-poll loops driving the downlink use case,
//! as many as the load asks for between a floor and a ceiling, backing off
//! with jitter while the source fails, stopping on shutdown without
//! abandoning a batch it already holds, nor (within a grace period) a
//! receive already in flight.
//!
//! # Adapting to the load
//!
//! Against a remote queue each receive costs a round trip (10–20 ms in an
//! AWS region), so one loop cannot take more than a few hundred Commands a
//! second. The consumer starts `min` loops; a loop whose receive came back
//! full (as many messages as one receive may take) starts another, up to
//! `max`; a loop whose receive came back short retires, down to `min`. At
//! the floor the loops long-poll an idle queue, so idling costs what it did
//! with a fixed number of loops. (AWS's own guidance for SQS consumers:
//! scale the number of concurrent receivers on the batch sizes they get.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use domain::stats::bump;
use domain::{Downlink, SourceError};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// First and largest pause after a failed receive.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How many receive loops run, and what one receive may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pollers {
    /// Loops that always run.
    pub min: usize,
    /// Loops that may run under load.
    pub max: usize,
    /// Messages one receive may take: a receive that brings this many is full.
    pub batch: usize,
}

/// The loops' shared view: how many run, and where a loop asks for another.
struct Crew {
    pollers: Pollers,
    running: AtomicUsize,
    grow: mpsc::UnboundedSender<()>,
}

impl Crew {
    /// A full receive: one more loop, unless at the ceiling.
    fn ask_for_another(&self) {
        let _ = self.grow.send(());
    }

    /// A short receive: whether this loop may retire (above the floor).
    /// Decided and counted in one step, so the floor is never crossed.
    fn may_retire(&self) -> bool {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > self.pollers.min).then(|| n - 1)
            })
            .is_ok()
    }
}

/// Starts the consumer; the returned task ends once every loop has stopped
/// after `stop` was cancelled. Each loop starts no new receive once `stop`
/// is cancelled; a receive in flight then is waited for, for at most
/// `receive_grace`, and what it brings is settled.
pub fn spawn(
    downlink: Arc<Downlink>,
    pollers: Pollers,
    stop: CancellationToken,
    receive_grace: Duration,
) -> JoinHandle<()> {
    let pollers = Pollers {
        min: pollers.min.max(1),
        max: pollers.max.max(pollers.min.max(1)),
        batch: pollers.batch.max(1),
    };
    let (grow, mut asked) = mpsc::unbounded_channel();
    let crew = Arc::new(Crew {
        pollers,
        running: AtomicUsize::new(0),
        grow,
    });
    tokio::spawn(async move {
        let mut loops = JoinSet::new();
        let mut next_id = 0usize;
        let mut start = |loops: &mut JoinSet<()>| {
            crew.running.fetch_add(1, Ordering::AcqRel);
            loops.spawn(poll_loop(
                next_id,
                downlink.clone(),
                crew.clone(),
                stop.clone(),
                receive_grace,
            ));
            next_id += 1;
        };
        for _ in 0..pollers.min {
            start(&mut loops);
        }
        loop {
            tokio::select! {
                Some(()) = asked.recv(), if !stop.is_cancelled() => {
                    if crew.running.load(Ordering::Acquire) < pollers.max {
                        start(&mut loops);
                        debug!(running = crew.running.load(Ordering::Acquire), "receive loop added");
                    }
                }
                joined = loops.join_next() => match joined {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(failure)) => {
                        // A loop that panicked never counted itself out; its
                        // batch comes back after the visibility timeout.
                        crew.running.fetch_sub(1, Ordering::AcqRel);
                        bump(&downlink.stats().restarts.poller, 1);
                        error!(error = %failure, "command poller panicked; started again");
                        if !stop.is_cancelled() && crew.running.load(Ordering::Acquire) < pollers.min {
                            start(&mut loops);
                        }
                    }
                },
            }
        }
    })
}

async fn poll_loop(
    poller: usize,
    downlink: Arc<Downlink>,
    crew: Arc<Crew>,
    stop: CancellationToken,
    receive_grace: Duration,
) {
    debug!(poller, "command poller started");
    let mut failures: u32 = 0;
    loop {
        if stop.is_cancelled() {
            crew.running.fetch_sub(1, Ordering::AcqRel);
            break;
        }
        // SQS hands messages to a receive request, not to a connection:
        // dropping a receive in flight can leave Commands invisible until
        // their visibility timeout. So at shutdown the receive is given a
        // grace period to answer, and a batch that arrived is always settled
        // (delivered and deleted, or released).
        let receive = downlink.receive();
        tokio::pin!(receive);
        let received = tokio::select! {
            received = &mut receive => received,
            () = stop.cancelled() => match tokio::time::timeout(receive_grace, &mut receive).await {
                Ok(received) => received,
                Err(_elapsed) => {
                    info!(
                        poller,
                        grace = ?receive_grace,
                        "receive still in flight at shutdown abandoned; what it takes \
                         comes back after the queue's visibility timeout"
                    );
                    crew.running.fetch_sub(1, Ordering::AcqRel);
                    break;
                }
            },
        };
        match received {
            Ok(batch) => {
                let full = batch.len() >= crew.pollers.batch;
                downlink.process(batch).await;
                if failures > 0 {
                    info!(poller, failures, "command source reachable again");
                }
                failures = 0;
                if full {
                    crew.ask_for_another();
                } else if crew.may_retire() {
                    debug!(poller, "receive loop retired");
                    break;
                }
            }
            Err(e) => {
                failures += 1;
                let pause = backoff(failures);
                match &e {
                    SourceError::Misconfigured(_) => {
                        error!(poller, error = %e, retry_in = ?pause, "cannot receive commands")
                    }
                    _ if failures == 1 || failures.is_power_of_two() => {
                        warn!(poller, error = %e, failures, retry_in = ?pause, "receive failed")
                    }
                    _ => {}
                }
                // A failing source is no load: back to the floor.
                if crew.may_retire() {
                    break;
                }
                tokio::select! {
                    _ = stop.cancelled() => {
                        crew.running.fetch_sub(1, Ordering::AcqRel);
                        break;
                    }
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    debug!(poller, "command poller stopped");
}

/// Exponential backoff with full jitter in the upper half.
fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_MIN.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    let ceiling = exp.min(BACKOFF_MAX);
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use domain::ports::{MockClientRegistry, MockCommandSource};
    use domain::{Handoff, InboundMessage, Receipt, Stats};
    use tokio::time::{sleep, Instant};

    use super::*;
    use crate::paced_source::Paced;

    #[test]
    fn backoff_grows_and_is_capped() {
        for failures in 1..40 {
            let pause = backoff(failures);
            assert!(pause >= BACKOFF_MIN / 2, "{failures}: {pause:?}");
            assert!(pause <= BACKOFF_MAX, "{failures}: {pause:?}");
        }
        assert!(backoff(1) <= BACKOFF_MIN);
        assert!(backoff(10) >= BACKOFF_MAX / 2);
    }

    #[test]
    fn loops_retire_down_to_the_floor_and_never_below() {
        let (grow, _asked) = mpsc::unbounded_channel();
        let crew = Crew {
            pollers: Pollers {
                min: 2,
                max: 8,
                batch: 10,
            },
            running: AtomicUsize::new(4),
            grow,
        };
        assert!(crew.may_retire());
        assert!(crew.may_retire());
        assert!(!crew.may_retire(), "two loops stay");
        assert_eq!(crew.running.load(Ordering::Acquire), 2);
    }

    /// How long a receive that brings an answer takes.
    const LONG_POLL: Duration = Duration::from_secs(1);
    /// How long a poller waits at shutdown for a receive in flight.
    const GRACE: Duration = Duration::from_secs(5);

    type Log<T> = Arc<Mutex<Vec<T>>>;

    /// What the source answers a receive, in order; once the script is
    /// done, an empty batch.
    enum Answer {
        Batch(Vec<InboundMessage>),
        Fail(SourceError),
    }

    /// A batch of `len` Commands, numbered from `first`: Command `n` is for
    /// client `c<n>`, its receipt `r<n>`.
    fn batch(first: usize, len: usize) -> Answer {
        let message = |n: usize| InboundMessage {
            message_id: format!("m{n}"),
            body: format!(r#"{{"client_id":"c{n}","command":"go"}}"#),
            receipt: Receipt::new(format!("r{n}")),
            receive_count: 1,
            ..InboundMessage::default()
        };
        Answer::Batch((first..first + len).map(message).collect())
    }

    fn unavailable() -> Answer {
        Answer::Fail(SourceError::Unavailable("connection reset".into()))
    }

    fn receipts(range: std::ops::Range<usize>) -> Vec<Receipt> {
        range.map(|n| Receipt::new(format!("r{n}"))).collect()
    }

    /// A downlink over mocked ports: the source answers the script (each
    /// answer after [`LONG_POLL`], a failure at once), every client has
    /// one connection. Records when each receive started and what was
    /// acknowledged and delivered.
    struct Rig {
        downlink: Arc<Downlink>,
        stats: Arc<Stats>,
        started: Instant,
        /// When each receive started, from `started`.
        receives: Log<Duration>,
        /// The receipts of each acknowledge call.
        acknowledged: Log<Vec<Receipt>>,
        /// The client of each delivery.
        delivered: Log<String>,
    }

    impl Rig {
        fn new(script: Vec<Answer>) -> Self {
            Self::build(0, script, LONG_POLL)
        }

        fn with_long_poll(script: Vec<Answer>, long_poll: Duration) -> Self {
            Self::build(0, script, long_poll)
        }

        /// The first `panics` receives panic, the next answer `script`.
        fn build(panics: usize, script: Vec<Answer>, long_poll: Duration) -> Self {
            let started = Instant::now();
            let (receives, acknowledged, delivered) =
                (Log::default(), Log::default(), Log::default());
            let mut source = MockCommandSource::new();
            // A panic poisons the expectation it happens in: these answer
            // once each, before the script's.
            for _ in 0..panics {
                let log = Arc::clone(&receives);
                source.expect_receive().times(1).returning(move || {
                    log.lock().unwrap().push(started.elapsed());
                    panic!("a bug while receiving")
                });
            }
            let script = Mutex::new(VecDeque::from(script));
            let log = Arc::clone(&receives);
            source.expect_receive().returning(move || {
                log.lock().unwrap().push(started.elapsed());
                let next = script.lock().unwrap().pop_front();
                match next {
                    Some(Answer::Batch(batch)) => Ok(batch),
                    Some(Answer::Fail(error)) => Err(error),
                    None => Ok(Vec::new()),
                }
            });
            source.expect_max_receive_count().returning(|| None);
            let log = Arc::clone(&acknowledged);
            source.expect_acknowledge().returning(move |receipts| {
                log.lock().unwrap().push(receipts);
                Ok(())
            });
            source.expect_release().never();
            source.expect_dead_letter().never();
            let mut registry = MockClientRegistry::new();
            let log = Arc::clone(&delivered);
            registry.expect_deliver().returning(move |client_id, _, _| {
                log.lock().unwrap().push(client_id.as_str().to_owned());
                Handoff {
                    immediate: 1,
                    awaiting_ack: 0,
                }
            });
            let source = Paced::new(source, long_poll, Duration::ZERO);
            let stats = Arc::new(Stats::default());
            let downlink = Arc::new(Downlink::new(
                Arc::new(source),
                Arc::new(registry),
                settings(),
                stats.clone(),
            ));
            Self {
                downlink,
                stats,
                started,
                receives,
                acknowledged,
                delivered,
            }
        }

        fn spawn(
            &self,
            pollers: Pollers,
            stop: &CancellationToken,
            grace: Duration,
        ) -> JoinHandle<()> {
            spawn(self.downlink.clone(), pollers, stop.clone(), grace)
        }

        fn receives(&self) -> Vec<Duration> {
            self.receives.lock().unwrap().clone()
        }

        /// How many receives started at each instant, in order.
        fn receives_at_once(&self) -> Vec<(Duration, usize)> {
            let mut counted: Vec<(Duration, usize)> = Vec::new();
            for at in self.receives() {
                match counted.last_mut() {
                    Some((last, count)) if *last == at => *count += 1,
                    _ => counted.push((at, 1)),
                }
            }
            counted
        }

        /// Every acknowledged receipt, in order of their numbers.
        fn acknowledged(&self) -> Vec<Receipt> {
            let mut all = self.acknowledged.lock().unwrap().concat();
            all.sort_by_key(|r| r.token()[1..].parse::<usize>().unwrap());
            all
        }

        fn delivered(&self) -> Vec<String> {
            let mut all = self.delivered.lock().unwrap().clone();
            all.sort_by_key(|c| c[1..].parse::<usize>().unwrap());
            all
        }
    }

    fn settings() -> domain::DownlinkSettings {
        domain::DownlinkSettings {
            undeliverable: domain::Undeliverable::Drop,
            dedup_capacity: 10,
            dedup_ttl: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(10),
            max_unacked_per_client: 10,
            after_release: domain::RetryRule {
                delay: Duration::from_secs(1),
                window: Duration::from_secs(60),
            },
        }
    }

    /// Asserts that each receive came one backoff pause after the one
    /// before (`last` the first failure): the n-th pause in the upper half
    /// of 200 ms · 2ⁿ⁻¹.
    fn backed_off(mut last: Duration, receives: &[Duration]) {
        for (n, at) in receives.iter().enumerate() {
            let ceiling = BACKOFF_MIN * 2u32.pow(n as u32);
            let pause = *at - last;
            assert!(
                pause >= ceiling / 2 && pause <= ceiling,
                "pause {n}: {pause:?} outside the upper half of {ceiling:?}"
            );
            last = *at;
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[tokio::test(start_paused = true)]
    async fn full_receives_add_loops_up_to_the_ceiling_and_short_ones_retire_them_to_the_floor() {
        // Six full batches of two, then an idle queue.
        let rig = Rig::new((0..6).map(|k| batch(2 * k, 2)).collect());
        let stop = CancellationToken::new();
        let pollers = Pollers {
            min: 1,
            max: 3,
            batch: 2,
        };
        let task = rig.spawn(pollers, &stop, GRACE);

        sleep(LONG_POLL * 7 + LONG_POLL / 2).await;
        stop.cancel();
        task.await.unwrap();

        assert_eq!(
            rig.receives_at_once(),
            [
                (secs(0.0), 1),
                // Each full receive asks for one more loop…
                (secs(1.0), 2),
                (secs(2.0), 3),
                // …up to the ceiling;
                (secs(3.0), 3),
                // short receives retire them, down to the floor.
                (secs(4.0), 1),
                (secs(5.0), 1),
                (secs(6.0), 1),
                (secs(7.0), 1),
            ]
        );
        assert_eq!(rig.acknowledged(), receipts(0..12), "each Command once");
        let clients: Vec<String> = (0..12).map(|n| format!("c{n}")).collect();
        assert_eq!(rig.delivered(), clients);
        assert_eq!(
            rig.started.elapsed(),
            secs(8.0),
            "the receive in flight answered"
        );
        assert_eq!(rig.stats.restarts.snapshot().poller, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_poller_that_panics_is_counted_and_started_again() {
        let rig = Rig::build(1, Vec::new(), LONG_POLL);
        let stop = CancellationToken::new();
        let pollers = Pollers {
            min: 1,
            max: 1,
            batch: 10,
        };
        let task = rig.spawn(pollers, &stop, Duration::from_secs(1));
        let receiving_again = async {
            while rig.receives().len() < 3 {
                sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), receiving_again)
            .await
            .expect("the poller is started again after its panic");
        assert_eq!(rig.stats.restarts.snapshot().poller, 1);
        // Started again at once, then receiving as before.
        assert_eq!(rig.receives()[..3], [secs(0.0), secs(0.0), secs(1.0)]);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_source_is_asked_again_after_a_growing_pause_that_an_answer_resets() {
        let misconfigured = Answer::Fail(SourceError::Misconfigured("no such queue".into()));
        let script = vec![
            unavailable(),
            unavailable(),
            misconfigured,
            unavailable(),
            unavailable(),
            batch(0, 0),
            unavailable(),
        ];
        let rig = Rig::new(script);
        let stop = CancellationToken::new();
        let pollers = Pollers {
            min: 1,
            max: 1,
            batch: 10,
        };
        let task = rig.spawn(pollers, &stop, GRACE);

        sleep(Duration::from_secs(10)).await;
        stop.cancel();
        task.await.unwrap();

        let receives = rig.receives();
        backed_off(receives[0], &receives[1..6]);
        assert_eq!(
            receives[6] - receives[5],
            LONG_POLL,
            "an answer: the next receive at once"
        );
        // The failure after it: the count starts over.
        backed_off(receives[6], &receives[7..8]);
        assert!(rig.acknowledged().is_empty());
        assert_eq!(rig.stats.restarts.snapshot().poller, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_source_is_no_load_the_loops_above_the_floor_retire() {
        let mut script = vec![batch(0, 2)];
        script.extend((0..20).map(|_| unavailable()));
        let rig = Rig::new(script);
        let stop = CancellationToken::new();
        let pollers = Pollers {
            min: 1,
            max: 2,
            batch: 2,
        };
        let task = rig.spawn(pollers, &stop, GRACE);

        sleep(Duration::from_secs(10)).await;
        stop.cancel();
        task.await.unwrap();

        // The full receive added a loop; both failed; one retired.
        let at_once = rig.receives_at_once();
        assert_eq!(at_once[..2], [(secs(0.0), 1), (secs(1.0), 2)]);
        // One loop backs off from then on: its receives alone, one pause
        // apart.
        backed_off(secs(1.0), &rig.receives()[3..8]);
        assert_eq!(rig.acknowledged(), receipts(0..2));
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_a_receive_in_flight_is_waited_for_and_its_batch_settled() {
        let rig = Rig::with_long_poll(vec![batch(0, 3)], Duration::from_secs(20));
        let stop = CancellationToken::new();
        let pollers = Pollers {
            min: 1,
            max: 1,
            batch: 10,
        };
        let task = rig.spawn(pollers, &stop, Duration::from_secs(30));

        sleep(Duration::from_secs(1)).await;
        stop.cancel();
        task.await.unwrap();

        assert_eq!(
            rig.started.elapsed(),
            secs(20.0),
            "until the receive answered"
        );
        assert_eq!(rig.receives(), [secs(0.0)], "and no new receive");
        assert_eq!(rig.acknowledged(), receipts(0..3));
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_a_receive_still_in_flight_after_the_grace_is_abandoned() {
        let rig = Rig::with_long_poll(vec![batch(0, 3)], Duration::from_secs(20));
        let stop = CancellationToken::new();
        let pollers = Pollers {
            min: 1,
            max: 1,
            batch: 10,
        };
        let task = rig.spawn(pollers, &stop, GRACE);

        sleep(Duration::from_secs(1)).await;
        stop.cancel();
        task.await.unwrap();

        assert_eq!(rig.started.elapsed(), secs(1.0) + GRACE);
        assert_eq!(rig.receives(), [secs(0.0)]);
        // What it took comes back after the queue's visibility timeout.
        assert!(rig.acknowledged().is_empty());
        assert!(rig.delivered().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_a_poller_backing_off_stops_at_once() {
        let rig = Rig::new(vec![unavailable(), unavailable()]);
        let stop = CancellationToken::new();
        let pollers = Pollers {
            min: 1,
            max: 1,
            batch: 10,
        };
        let task = rig.spawn(pollers, &stop, GRACE);

        // The first pause is at least 100 ms.
        sleep(Duration::from_millis(50)).await;
        stop.cancel();
        task.await.unwrap();

        assert_eq!(rig.started.elapsed(), Duration::from_millis(50));
        assert_eq!(rig.receives(), [secs(0.0)]);
    }
}
