//! The settler: deletes and visibility changes off the receive path.
//!
//! [`Settler`] wraps a [`CommandSource`]. Receives go straight through; an
//! acknowledgement or a release is queued and answered at once, and a task
//! of its own batches what the pollers queued — up to ten receipts a call,
//! sent when a batch is full or after a short linger — and runs several
//! calls at once. So a poller's next receive never waits for its previous
//! delete: against a queue 10–20 ms away that wait is what capped a poller
//! at a few hundred Commands a second.
//!
//! "Deleted only after hand-off" still holds: nothing is queued here before
//! the downlink has handed the Command off. A crash before the queued
//! delete is sent loses nothing — the message comes back after its
//! visibility timeout. A settle that fails is counted and logged by the
//! source, as before. [`Settler::flush`] sends everything queued and waits
//! for the answers (shutdown).
//!
//! Dead letters, visibility extensions and the visibility timeout go
//! straight through: they are rare, and their callers wait for the outcome.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::{CommandSource, DeadLetter, InboundMessage, Receipt, SourceError};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Receipts one call settles at most (SQS's batch limit).
const BATCH: usize = 10;

/// How the settler batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettlerSettings {
    /// How long the first receipt of a batch waits for others.
    pub linger: Duration,
    /// Calls in flight at once.
    pub concurrency: usize,
}

impl Default for SettlerSettings {
    fn default() -> Self {
        Self {
            linger: Duration::from_millis(5),
            concurrency: 8,
        }
    }
}

/// What to do with a batch of receipts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Settle {
    Acknowledge,
    Release(Duration),
}

enum Job {
    Settle(Settle, Vec<Receipt>),
    Flush(oneshot::Sender<()>),
}

/// A [`CommandSource`] whose acknowledgements and releases are batched and
/// sent in the background.
pub struct Settler {
    inner: Arc<dyn CommandSource>,
    jobs: mpsc::UnboundedSender<Job>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Settler {
    /// Wraps `inner`; the batching task runs on the current runtime.
    pub fn spawn(inner: Arc<dyn CommandSource>, settings: SettlerSettings) -> Arc<Self> {
        let (jobs, queue) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(inner.clone(), queue, settings));
        Arc::new(Self {
            inner,
            jobs,
            task: Mutex::new(Some(task)),
        })
    }

    /// Sends everything queued so far and waits for the answers.
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.jobs.send(Job::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }

    /// Flushes, then stops the batching task (shutdown).
    pub async fn close(&self) {
        self.flush().await;
        if let Some(task) = self.task.lock().await.take() {
            task.abort();
            let _ = task.await;
        }
    }

    fn queue(&self, settle: Settle, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.jobs
            .send(Job::Settle(settle, receipts))
            .map_err(|_| SourceError::Unavailable("the settler has stopped".into()))
    }
}

#[async_trait]
impl CommandSource for Settler {
    async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
        self.inner.receive().await
    }

    async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
        self.queue(Settle::Acknowledge, receipts)
    }

    async fn release(&self, receipts: Vec<Receipt>, delay: Duration) -> Result<(), SourceError> {
        self.queue(Settle::Release(delay), receipts)
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>) -> Result<(), SourceError> {
        self.inner.dead_letter(letters).await
    }

    async fn visibility_timeout(&self) -> Option<Duration> {
        self.inner.visibility_timeout().await
    }

    async fn extend(
        &self,
        receipts: Vec<Receipt>,
        visibility: Duration,
    ) -> Result<(), SourceError> {
        self.inner.extend(receipts, visibility).await
    }

    async fn max_receive_count(&self) -> Option<u32> {
        self.inner.max_receive_count().await
    }
}

/// Receipts waiting for their call, by what is to be done with them.
#[derive(Default)]
struct Pending {
    batches: HashMap<Settle, (Instant, Vec<Receipt>)>,
}

impl Pending {
    fn add(&mut self, settle: Settle, receipts: Vec<Receipt>) {
        let (_, waiting) = self
            .batches
            .entry(settle)
            .or_insert_with(|| (Instant::now(), Vec::new()));
        waiting.extend(receipts);
    }

    /// Full batches, and with `all` or past their linger the rest too.
    fn due(&mut self, linger: Duration, all: bool) -> Vec<(Settle, Vec<Receipt>)> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.batches.retain(|settle, (since, waiting)| {
            while waiting.len() >= BATCH {
                out.push((*settle, waiting.drain(..BATCH).collect()));
                *since = now;
            }
            if !waiting.is_empty() && (all || now.duration_since(*since) >= linger) {
                out.push((*settle, std::mem::take(waiting)));
            }
            !waiting.is_empty()
        });
        out
    }

    /// When the oldest waiting batch is due.
    fn next_deadline(&self, linger: Duration) -> Option<Instant> {
        self.batches
            .values()
            .map(|(since, _)| *since + linger)
            .min()
    }
}

async fn run(
    inner: Arc<dyn CommandSource>,
    mut queue: mpsc::UnboundedReceiver<Job>,
    settings: SettlerSettings,
) {
    let concurrency = settings.concurrency.max(1);
    let mut pending = Pending::default();
    let mut calls: JoinSet<()> = JoinSet::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut ready: Vec<(Settle, Vec<Receipt>)> = Vec::new();
    loop {
        let flushing = !flushes.is_empty();
        ready.extend(pending.due(settings.linger, flushing));
        while calls.len() < concurrency {
            let Some((settle, receipts)) = ready.pop() else {
                break;
            };
            let inner = inner.clone();
            calls.spawn(async move { send(&*inner, settle, receipts).await });
        }
        if flushing && ready.is_empty() && calls.is_empty() {
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            continue;
        }
        let deadline = pending.next_deadline(settings.linger);
        tokio::select! {
            job = queue.recv() => match job {
                Some(Job::Settle(settle, receipts)) => pending.add(settle, receipts),
                Some(Job::Flush(done)) => flushes.push(done),
                None => {
                    // Every handle is gone: send what is left, then stop.
                    ready.extend(pending.due(settings.linger, true));
                    for (settle, receipts) in ready.drain(..) {
                        send(&*inner, settle, receipts).await;
                    }
                    while calls.join_next().await.is_some() {}
                    return;
                }
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            () = sleep_until(deadline), if deadline.is_some() && ready.is_empty() => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn send(inner: &dyn CommandSource, settle: Settle, receipts: Vec<Receipt>) {
    let count = receipts.len();
    let result = match settle {
        Settle::Acknowledge => inner.acknowledge(receipts).await,
        Settle::Release(delay) => inner.release(receipts, delay).await,
    };
    match result {
        Ok(()) => debug!(?settle, count, "settled"),
        // The source counted it; the messages come back after their
        // visibility timeout (a forwarded one is then a duplicate).
        Err(error) => warn!(?settle, count, %error, "settling messages failed"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use domain::ports::MockCommandSource;
    use domain::GiveUpReason;

    use super::*;
    use crate::paced_source::Paced;

    /// How long each settle call to the source takes.
    const ROUND_TRIP: Duration = Duration::from_millis(50);

    type Log<T> = Arc<StdMutex<Vec<T>>>;

    /// One settle call the source got: when it started, what it did, the
    /// receipts.
    type Call = (Duration, Settle, Vec<Receipt>);

    /// A settler over a mocked source whose settle calls take
    /// [`ROUND_TRIP`]; records each call. `fail_first` acknowledge calls
    /// fail.
    fn settler(settings: SettlerSettings, fail_first: usize) -> (Arc<Settler>, Log<Call>) {
        let started = Instant::now();
        let calls: Log<Call> = Arc::default();
        let mut mock = MockCommandSource::new();
        let (log, mut failures) = (calls.clone(), fail_first);
        mock.expect_acknowledge().returning(move |receipts| {
            let at = started.elapsed();
            log.lock()
                .unwrap()
                .push((at, Settle::Acknowledge, receipts));
            if failures == 0 {
                return Ok(());
            }
            failures -= 1;
            Err(SourceError::Unavailable("throttled".into()))
        });
        let log = calls.clone();
        mock.expect_release().returning(move |receipts, delay| {
            let at = started.elapsed();
            log.lock()
                .unwrap()
                .push((at, Settle::Release(delay), receipts));
            Ok(())
        });
        let source = Paced::new(mock, Duration::ZERO, ROUND_TRIP);
        (Settler::spawn(Arc::new(source), settings), calls)
    }

    /// The calls so far, in the order they started (then by first receipt).
    fn sorted(calls: &Log<Call>) -> Vec<Call> {
        let mut calls = calls.lock().unwrap().clone();
        calls.sort_by_key(|(at, _, receipts)| (*at, number(&receipts[0])));
        calls
    }

    fn number(receipt: &Receipt) -> usize {
        receipt.token()[1..].parse().unwrap()
    }

    fn receipts(range: std::ops::Range<usize>) -> Vec<Receipt> {
        range.map(|i| Receipt::new(format!("r{i}"))).collect()
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn settles_are_answered_at_once_batched_and_flushed() {
        let linger = Duration::from_secs(60);
        let settings = SettlerSettings {
            linger,
            concurrency: 4,
        };
        let (settler, calls) = settler(settings, 0);
        let started = Instant::now();
        let all = receipts(0..25);
        for chunk in all.chunks(5) {
            settler.acknowledge(chunk.to_vec()).await.unwrap();
        }
        settler
            .release(receipts(100..103), Duration::from_secs(7))
            .await
            .unwrap();
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "the pollers never wait for a settle call"
        );
        // Full batches go without waiting for the linger.
        tokio::time::sleep(ms(300)).await;
        assert_eq!(
            sorted(&calls),
            vec![
                (ms(0), Settle::Acknowledge, receipts(0..10)),
                (ms(0), Settle::Acknowledge, receipts(10..20)),
            ]
        );
        // The rest waits for its linger, or a flush.
        settler.close().await;
        assert_eq!(
            sorted(&calls),
            vec![
                (ms(0), Settle::Acknowledge, receipts(0..10)),
                (ms(0), Settle::Acknowledge, receipts(10..20)),
                (ms(300), Settle::Acknowledge, receipts(20..25)),
                (
                    ms(300),
                    Settle::Release(Duration::from_secs(7)),
                    receipts(100..103)
                ),
            ]
        );
        assert_eq!(
            started.elapsed(),
            ms(300) + ROUND_TRIP,
            "close waits for the answers"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_batch_goes_when_its_first_receipt_has_lingered() {
        let settings = SettlerSettings {
            linger: ms(5),
            concurrency: 8,
        };
        let (settler, calls) = settler(settings, 0);
        settler.acknowledge(receipts(0..1)).await.unwrap();
        tokio::time::sleep(ms(3)).await;
        settler.acknowledge(receipts(1..3)).await.unwrap();
        settler
            .release(receipts(3..4), Duration::ZERO)
            .await
            .unwrap();
        tokio::time::sleep(ms(100)).await;
        assert_eq!(
            sorted(&calls),
            vec![
                // The linger counts from the first receipt of the batch.
                (ms(5), Settle::Acknowledge, receipts(0..3)),
                (ms(8), Settle::Release(Duration::ZERO), receipts(3..4)),
            ]
        );
        settler.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_calls_are_in_flight_than_the_concurrency() {
        let settings = SettlerSettings {
            linger: Duration::from_secs(60),
            concurrency: 2,
        };
        let (settler, calls) = settler(settings, 0);
        settler.acknowledge(receipts(0..50)).await.unwrap();
        settler.flush().await;
        let starts: Vec<Duration> = sorted(&calls).iter().map(|(at, ..)| *at).collect();
        assert_eq!(starts, [ms(0), ms(0), ms(50), ms(50), ms(100)]);
        let mut sent: Vec<Receipt> = sorted(&calls).into_iter().flat_map(|(.., r)| r).collect();
        sent.sort_by_key(number);
        assert_eq!(sent, receipts(0..50), "each receipt once");
        settler.close().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_settle_call_is_not_retried_and_later_ones_still_go() {
        let settings = SettlerSettings {
            linger: ms(5),
            concurrency: 1,
        };
        let (settler, calls) = settler(settings, 1);
        settler.acknowledge(receipts(0..2)).await.unwrap();
        tokio::time::sleep(ms(100)).await;
        settler.acknowledge(receipts(2..4)).await.unwrap();
        settler.close().await;
        assert_eq!(
            sorted(&calls),
            vec![
                (ms(5), Settle::Acknowledge, receipts(0..2)),
                // Flushed by the close.
                (ms(100), Settle::Acknowledge, receipts(2..4)),
            ],
            "the failed batch comes back from the queue, not from here"
        );
        assert_eq!(
            settler.acknowledge(receipts(4..5)).await,
            Err(SourceError::Unavailable("the settler has stopped".into())),
            "closed: nothing is taken any more"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dead_letters_extensions_and_the_source_settings_go_straight_through() {
        let letter = DeadLetter::new(
            InboundMessage {
                message_id: "m1".into(),
                receipt: Receipt::new("r1"),
                ..InboundMessage::default()
            },
            GiveUpReason::Malformed,
            "not json",
        );
        let mut mock = MockCommandSource::new();
        let expected = letter.clone();
        mock.expect_dead_letter()
            .withf(move |letters| letters == std::slice::from_ref(&expected))
            .times(1)
            .returning(|_| Ok(()));
        mock.expect_extend()
            .withf(|receipts, visibility| {
                receipts == &[Receipt::new("r2")] && *visibility == Duration::from_secs(30)
            })
            .times(1)
            .returning(|_, _| Err(SourceError::Unavailable("throttled".into())));
        mock.expect_visibility_timeout()
            .times(1)
            .returning(|| Some(Duration::from_secs(30)));
        mock.expect_max_receive_count()
            .times(1)
            .returning(|| Some(5));
        mock.expect_acknowledge().never();
        mock.expect_release().never();
        let source = Paced::new(mock, Duration::ZERO, ROUND_TRIP);
        let settler = Settler::spawn(Arc::new(source), SettlerSettings::default());
        let started = Instant::now();

        settler.dead_letter(vec![letter]).await.unwrap();
        assert_eq!(
            started.elapsed(),
            ROUND_TRIP,
            "the caller waits for the outcome"
        );
        assert_eq!(
            settler
                .extend(vec![Receipt::new("r2")], Duration::from_secs(30))
                .await,
            Err(SourceError::Unavailable("throttled".into()))
        );
        assert_eq!(
            settler.visibility_timeout().await,
            Some(Duration::from_secs(30))
        );
        assert_eq!(settler.max_receive_count().await, Some(5));
        settler.close().await;
    }

    #[test]
    fn full_batches_go_at_once_and_the_rest_after_the_linger() {
        let mut pending = Pending::default();
        pending.add(Settle::Acknowledge, receipts(0..23));
        pending.add(Settle::Release(Duration::ZERO), receipts(0..1));
        let linger = Duration::from_secs(60);
        let due = pending.due(linger, false);
        assert_eq!(due.len(), 2, "two full batches");
        assert!(due
            .iter()
            .all(|(s, r)| *s == Settle::Acknowledge && r.len() == 10));
        let rest = pending.due(linger, true);
        let mut sizes: Vec<usize> = rest.iter().map(|(_, r)| r.len()).collect();
        sizes.sort();
        assert_eq!(sizes, vec![1, 3]);
        assert!(pending.next_deadline(linger).is_none());
    }
}
