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

    use super::*;

    /// A source that takes 50 ms per settle call and records each.
    #[derive(Default)]
    struct Slow {
        calls: StdMutex<Vec<(Settle, usize)>>,
    }

    #[async_trait]
    impl CommandSource for Slow {
        async fn receive(&self) -> Result<Vec<InboundMessage>, SourceError> {
            Ok(Vec::new())
        }
        async fn acknowledge(&self, receipts: Vec<Receipt>) -> Result<(), SourceError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.calls
                .lock()
                .unwrap()
                .push((Settle::Acknowledge, receipts.len()));
            Ok(())
        }
        async fn release(
            &self,
            receipts: Vec<Receipt>,
            delay: Duration,
        ) -> Result<(), SourceError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.calls
                .lock()
                .unwrap()
                .push((Settle::Release(delay), receipts.len()));
            Ok(())
        }
        async fn dead_letter(&self, _: Vec<DeadLetter>) -> Result<(), SourceError> {
            Ok(())
        }
        async fn visibility_timeout(&self) -> Option<Duration> {
            None
        }
        async fn extend(&self, _: Vec<Receipt>, _: Duration) -> Result<(), SourceError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn settles_are_answered_at_once_batched_and_flushed() {
        let slow = Arc::new(Slow::default());
        let settler = Settler::spawn(
            slow.clone(),
            SettlerSettings {
                linger: Duration::from_secs(60),
                concurrency: 4,
            },
        );
        let started = std::time::Instant::now();
        for chunk in receipts(25).chunks(5) {
            settler.acknowledge(chunk.to_vec()).await.unwrap();
        }
        settler
            .release(receipts(3), Duration::from_secs(7))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(40),
            "the pollers never wait for a settle call"
        );
        // Full batches go without waiting for the linger.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            *slow.calls.lock().unwrap(),
            vec![(Settle::Acknowledge, 10), (Settle::Acknowledge, 10)]
        );
        // The rest waits for its linger, or a flush.
        settler.close().await;
        let mut calls = slow.calls.lock().unwrap().clone();
        calls.sort_by_key(|(s, n)| (format!("{s:?}"), *n));
        assert_eq!(
            calls,
            vec![
                (Settle::Acknowledge, 5),
                (Settle::Acknowledge, 10),
                (Settle::Acknowledge, 10),
                (Settle::Release(Duration::from_secs(7)), 3),
            ]
        );
    }

    fn receipts(n: usize) -> Vec<Receipt> {
        (0..n).map(|i| Receipt::new(format!("r{i}"))).collect()
    }

    #[test]
    fn full_batches_go_at_once_and_the_rest_after_the_linger() {
        let mut pending = Pending::default();
        pending.add(Settle::Acknowledge, receipts(23));
        pending.add(Settle::Release(Duration::ZERO), receipts(1));
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
