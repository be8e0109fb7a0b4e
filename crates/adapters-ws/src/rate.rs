//! The per-connection message rate limit: a token bucket, and the count of
//! refused messages that tells sustained abuse from a short burst.

use std::time::Duration;

use tokio::time::Instant;

/// A message rate: `per_sec` on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageRate {
    /// Messages per second, on average (at least 1).
    pub per_sec: u32,
    /// Messages accepted at once after a quiet period (at least 1).
    pub burst: u32,
}

/// When refused messages turn into a closed connection (1008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbusePolicy {
    /// Refused messages within `window` that close the connection.
    pub strikes: u32,
    /// The window the strikes are counted in.
    pub window: Duration,
}

/// A token bucket: full at first, refilled at `per_sec`, one token a message.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: MessageRate, now: Instant) -> Self {
        let capacity = f64::from(rate.burst.max(1));
        Self {
            capacity,
            per_sec: f64::from(rate.per_sec.max(1)),
            tokens: capacity,
            last: now,
        }
    }

    /// Takes a token; false when there is none (the message is over the rate).
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts refused messages in a fixed window that starts at the first one.
#[derive(Debug)]
pub(crate) struct Strikes {
    policy: AbusePolicy,
    count: u32,
    since: Option<Instant>,
}

impl Strikes {
    pub(crate) fn new(policy: AbusePolicy) -> Self {
        Self {
            policy,
            count: 0,
            since: None,
        }
    }

    /// Records one refused message; true when that makes `strikes` within
    /// the window, i.e. the connection must be closed.
    pub(crate) fn strike(&mut self, now: Instant) -> bool {
        match self.since {
            Some(since) if now.saturating_duration_since(since) < self.policy.window => {
                self.count += 1;
            }
            _ => {
                self.since = Some(now);
                self.count = 1;
            }
        }
        self.count >= self.policy.strikes.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_full_bucket_takes_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(
            MessageRate {
                per_sec: 10,
                burst: 3,
            },
            t0,
        );
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(bucket.take(t0));
        assert!(!bucket.take(t0), "the burst is spent");
        // 10/s: one token every 100 ms.
        assert!(!bucket.take(t0 + ms(50)));
        assert!(bucket.take(t0 + ms(160)));
        assert!(!bucket.take(t0 + ms(170)));
        // A long pause refills up to the burst, never more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(bucket.take(later));
        }
        assert!(!bucket.take(later));
    }

    #[test]
    fn strikes_close_only_when_enough_fall_within_the_window() {
        let t0 = Instant::now();
        let mut strikes = Strikes::new(AbusePolicy {
            strikes: 3,
            window: ms(1000),
        });
        assert!(!strikes.strike(t0));
        assert!(!strikes.strike(t0 + ms(100)));
        // The window has passed: counting starts again.
        assert!(!strikes.strike(t0 + ms(1500)));
        assert!(!strikes.strike(t0 + ms(1600)));
        assert!(strikes.strike(t0 + ms(1700)));
    }
}
