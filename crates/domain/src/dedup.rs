//! A bounded, time-limited memory of recently forwarded message ids.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Remembers up to `capacity` ids for `ttl` each; the oldest are forgotten first.
///
/// The lock is held only for a hash lookup, never across an `.await`.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<String, Instant>,
    order: VecDeque<(Instant, String)>,
}

impl RecentIds {
    /// A memory of at most `capacity` ids, each kept for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Whether `id` was remembered less than `ttl` ago.
    pub fn contains(&self, id: &str) -> bool {
        self.contains_at(id, Instant::now())
    }

    /// Remembers `id` from now on.
    pub fn remember(&self, id: &str) {
        self.remember_at(id, Instant::now());
    }

    /// Remembers `id` unless it is already remembered; returns whether this
    /// call claimed it. Check and insert happen under one lock, so of two
    /// pollers holding copies of one message only one goes on to deliver it.
    pub fn claim(&self, id: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner
            .seen
            .get(id)
            .is_some_and(|at| now.duration_since(*at) < self.ttl)
        {
            return false;
        }
        self.insert_locked(&mut inner, id, now);
        true
    }

    /// Forgets a claimed `id` (its message was not handed off after all).
    pub fn forget(&self, id: &str) {
        self.lock().seen.remove(id);
    }

    fn contains_at(&self, id: &str, now: Instant) -> bool {
        let inner = self.lock();
        inner
            .seen
            .get(id)
            .is_some_and(|at| now.duration_since(*at) < self.ttl)
    }

    fn remember_at(&self, id: &str, now: Instant) {
        let mut inner = self.lock();
        self.insert_locked(&mut inner, id, now);
    }

    fn insert_locked(&self, inner: &mut Inner, id: &str, now: Instant) {
        // Forget what expired, then the oldest while over capacity.
        while let Some((at, _)) = inner.order.front() {
            let expired = now.duration_since(*at) >= self.ttl;
            if !expired && inner.order.len() < self.capacity {
                break;
            }
            if let Some((at, old)) = inner.order.pop_front() {
                // Only forget the id if this queue entry is its latest one.
                if inner.seen.get(&old) == Some(&at) {
                    inner.seen.remove(&old);
                }
            }
        }
        inner.seen.insert(id.to_owned(), now);
        inner.order.push_back((now, id.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the maps inconsistent in a way that
        // matters for de-duplication, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many ids are remembered now (expired ones may still count).
    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_ttl_and_forgets_after() {
        let ids = RecentIds::new(10, Duration::from_secs(5));
        let t0 = Instant::now();
        ids.remember_at("a", t0);
        assert!(ids.contains_at("a", t0 + Duration::from_secs(4)));
        assert!(!ids.contains_at("a", t0 + Duration::from_secs(5)));
        assert!(!ids.contains_at("b", t0));
    }

    #[test]
    fn stays_within_capacity_forgetting_the_oldest() {
        let ids = RecentIds::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            ids.remember_at(id, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(ids.len(), 3);
        assert!(!ids.contains_at("a", t0));
        assert!(ids.contains_at("b", t0) && ids.contains_at("d", t0));
    }

    #[test]
    fn claim_is_granted_once_until_forgotten() {
        let ids = RecentIds::new(10, Duration::from_secs(60));
        assert!(ids.claim("a"));
        assert!(!ids.claim("a"));
        assert!(ids.contains("a"));
        ids.forget("a");
        assert!(!ids.contains("a"));
        assert!(ids.claim("a"));
    }

    #[test]
    fn remembering_again_refreshes_without_growing() {
        let ids = RecentIds::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        ids.remember_at("a", t0);
        ids.remember_at("a", t0 + Duration::from_secs(8));
        ids.remember_at("b", t0 + Duration::from_secs(9));
        assert!(ids.contains_at("a", t0 + Duration::from_secs(12)));
        assert_eq!(ids.len(), 2);
    }
}
