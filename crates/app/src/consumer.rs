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
    use super::*;

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

    /// A source whose first receive panics; later ones find nothing.
    struct PanicsOnce(AtomicUsize);

    #[async_trait::async_trait]
    impl domain::CommandSource for PanicsOnce {
        async fn receive(&self) -> Result<Vec<domain::InboundMessage>, SourceError> {
            if self.0.fetch_add(1, Ordering::AcqRel) == 0 {
                panic!("a bug while receiving");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(Vec::new())
        }
        async fn acknowledge(&self, _: Vec<domain::Receipt>) -> Result<(), SourceError> {
            Ok(())
        }
        async fn release(&self, _: Vec<domain::Receipt>, _: Duration) -> Result<(), SourceError> {
            Ok(())
        }
        async fn dead_letter(&self, _: Vec<domain::DeadLetter>) -> Result<(), SourceError> {
            Ok(())
        }
        async fn visibility_timeout(&self) -> Option<Duration> {
            None
        }
        async fn extend(&self, _: Vec<domain::Receipt>, _: Duration) -> Result<(), SourceError> {
            Ok(())
        }
    }

    struct Nobody;

    impl domain::ClientRegistry for Nobody {
        fn deliver(
            &self,
            _: &domain::ClientId,
            _: &domain::Frame,
            _: domain::DeliveryId,
        ) -> domain::Handoff {
            domain::Handoff::default()
        }
        fn connection_count(&self) -> usize {
            0
        }
    }

    #[tokio::test]
    async fn a_poller_that_panics_is_counted_and_started_again() {
        let source = Arc::new(PanicsOnce(AtomicUsize::new(0)));
        let stats = Arc::new(domain::Stats::default());
        let settings = domain::DownlinkSettings {
            undeliverable: domain::Undeliverable::Drop,
            dedup_capacity: 10,
            dedup_ttl: Duration::from_secs(60),
            ack_timeout: Duration::from_secs(10),
            max_unacked_per_client: 10,
            after_release: domain::RetryRule {
                delay: Duration::from_secs(1),
                window: Duration::from_secs(60),
            },
        };
        let downlink = Arc::new(Downlink::new(
            source.clone(),
            Arc::new(Nobody),
            settings,
            stats.clone(),
        ));
        let stop = CancellationToken::new();
        let pollers = Pollers {
            min: 1,
            max: 1,
            batch: 10,
        };
        let task = spawn(downlink, pollers, stop.clone(), Duration::from_secs(1));
        let receiving_again = async {
            while source.0.load(Ordering::Acquire) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), receiving_again)
            .await
            .expect("the poller is started again after its panic");
        assert_eq!(stats.restarts.snapshot().poller, 1);
        stop.cancel();
        task.await.unwrap();
    }
}
