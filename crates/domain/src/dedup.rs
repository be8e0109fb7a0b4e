//! A bounded, time-limited memory of recently forwarded message ids.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

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
    /// Its slot is free at once: only remembered ids count toward the
    /// capacity, so forgetting never shortens how long the others are kept.
    pub fn forget(&self, id: &str) {
        let mut inner = self.lock();
        inner.seen.remove(id);
        // The queue entry stays behind (removing it would be a scan);
        // compact once stale entries outnumber the live ones.
        if inner.order.len() > 2 * inner.seen.len() + 1024 {
            let Inner { seen, order } = &mut *inner;
            order.retain(|(at, id)| seen.get(id) == Some(at));
        }
    }

    /// How long an id is remembered now: the TTL, or less while the memory
    /// is full and the oldest ids are forgotten early to make room.
    pub fn window(&self) -> Duration {
        self.window_at(Instant::now())
    }

    fn window_at(&self, now: Instant) -> Duration {
        let inner = self.lock();
        if inner.seen.len() < self.capacity {
            return self.ttl;
        }
        inner
            .order
            .iter()
            .find(|(at, id)| inner.seen.get(id) == Some(at))
            .map_or(self.ttl, |(at, _)| now.duration_since(*at).min(self.ttl))
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
        // Forget what expired, then the oldest while full. Entries of ids
        // forgotten or remembered again since are stale: dropped as met,
        // never counted.
        while let Some((at, old)) = inner.order.front() {
            let live = inner.seen.get(old) == Some(at);
            let expired = now.duration_since(*at) >= self.ttl;
            if live && !expired && inner.seen.len() < self.capacity {
                break;
            }
            if let Some((at, old)) = inner.order.pop_front() {
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

    #[tokio::test(start_paused = true)]
    async fn claimed_ids_expire_after_the_ttl_on_tokios_clock() {
        let ids = RecentIds::new(10, Duration::from_secs(5));
        assert!(ids.claim("a"));
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(ids.contains("a"));
        assert!(!ids.claim("a"), "still a duplicate 1 ms before the TTL");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!ids.contains("a"));
        assert!(ids.claim("a"), "claimed again once the TTL is over");
        assert_eq!(ids.window(), Duration::from_secs(5));
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
    fn forgotten_ids_free_their_slot_and_the_window_holds_at_5k_per_second() {
        // 5 000 Commands a second for 30 s, every other one released and
        // forgotten (a Command for an absent client): 25 000 forwarded ids
        // in 10 s fit in room for 30 000, so a 10 s TTL is honoured
        // throughout (stale entries of forgotten ids once made it 6 s).
        let ttl = Duration::from_secs(10);
        let ids = RecentIds::new(30_000, ttl);
        let t0 = Instant::now();
        let step = Duration::from_micros(200);
        for n in 0..150_000u32 {
            let now = t0 + step * n;
            let id = format!("m{n}");
            ids.remember_at(&id, now);
            if n % 2 == 1 {
                ids.forget(&id);
            }
            if n % 10_000 == 9_999 {
                assert_eq!(ids.window_at(now), ttl, "after {n} ids");
            }
        }
        let end = t0 + step * 150_000;
        // m105000 was forwarded 9 s before the end.
        assert!(
            ids.contains_at("m105000", end),
            "an id 9 s old is still known"
        );
        assert!(!ids.contains_at("m105001", end), "a forgotten id is not");
        assert!(ids.inner.lock().unwrap().order.len() <= 2 * 30_000 + 1024);
    }

    #[test]
    fn a_full_memory_reports_its_shorter_window() {
        let ids = RecentIds::new(100, Duration::from_secs(600));
        let t0 = Instant::now();
        for n in 0..200u32 {
            ids.remember_at(&format!("m{n}"), t0 + Duration::from_millis(10) * n);
        }
        // 100 ids kept, 10 ms apart: the oldest is about one second old.
        let window = ids.window_at(t0 + Duration::from_secs(2));
        assert!(window >= Duration::from_millis(1000) && window <= Duration::from_millis(1020));
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
