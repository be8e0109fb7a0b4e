//! Commands handed to an acknowledging connection and released without an
//! acknowledgement (ack timeout with no connection left, the client gone,
//! shutdown): remembered by de-duplication key with the time of release.
//!
//! When such a Command comes back and its client is still away, it waits
//! for it as under the `retry` policy whatever the policy (the `drop` policy
//! would delete a Command a client was given and never confirmed), and its
//! retry window counts from the release, not from when it was first sent
//! (docs/delivery.md). Bounded in entries and in time.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Releases remembered at once; the oldest is forgotten first.
const CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
pub(super) struct Released {
    at: HashMap<String, Instant>,
    /// Keys in the order of their release, for eviction.
    order: VecDeque<(String, Instant)>,
}

impl Released {
    /// `key` was released at `now`; entries older than `keep` are forgotten.
    pub(super) fn record(&mut self, key: &str, now: Instant, keep: Duration) {
        self.expire(now, keep);
        if self.order.len() >= CAPACITY {
            if let Some((oldest, at)) = self.order.pop_front() {
                self.forget_if(&oldest, at);
            }
        }
        self.at.insert(key.to_owned(), now);
        self.order.push_back((key.to_owned(), now));
    }

    /// When `key` was last released, if it is remembered.
    pub(super) fn since(&self, key: &str) -> Option<Instant> {
        self.at.get(key).copied()
    }

    /// The Command of `key` was delivered or given up.
    pub(super) fn forget(&mut self, key: &str) {
        self.at.remove(key);
    }

    fn expire(&mut self, now: Instant, keep: Duration) {
        while let Some((key, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < keep {
                break;
            }
            let (key, at) = (key.clone(), *at);
            self.order.pop_front();
            self.forget_if(&key, at);
        }
    }

    /// Forgets `key` unless it was released again after `at`.
    fn forget_if(&mut self, key: &str, at: Instant) {
        if self.at.get(key) == Some(&at) {
            self.at.remove(key);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: Duration = Duration::from_secs(60);

    #[test]
    fn a_release_is_remembered_until_forgotten_or_expired() {
        let mut released = Released::default();
        let t0 = Instant::now();
        released.record("a", t0, KEEP);
        released.record("b", t0 + Duration::from_secs(30), KEEP);
        assert_eq!(released.since("a"), Some(t0));

        released.forget("b");
        assert_eq!(released.since("b"), None);

        // "a" released again later: its first entry expiring keeps the new one.
        released.record("a", t0 + Duration::from_secs(50), KEEP);
        released.record("c", t0 + Duration::from_secs(70), KEEP);
        assert_eq!(released.since("a"), Some(t0 + Duration::from_secs(50)));
        released.record("d", t0 + Duration::from_secs(111), KEEP);
        assert_eq!(released.since("a"), None);
        assert_eq!(released.len(), 2);
    }
}
