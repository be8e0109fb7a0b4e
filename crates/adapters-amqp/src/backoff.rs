//! The pauses between reconnection attempts: the public policy
//! ([`Reconnect`], part of the source's and sink's settings) and its running
//! schedule, which the connection supervisor draws from.

use std::time::Duration;

/// Pauses between reconnection attempts: exponential from `initial` to
/// `max`, each drawn in the upper half of its step (jitter, so replicas that
/// lost the broker together do not come back in lock-step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Pause after the first failure.
    pub initial: Duration,
    /// Largest pause.
    pub max: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}

/// The running schedule of a [`Reconnect`] policy.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: Reconnect,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(policy: Reconnect) -> Self {
        Self {
            policy,
            failures: 0,
        }
    }

    /// The link works again: the next failure starts from `initial`.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// The pause before the next attempt.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let step = self
            .policy
            .initial
            .saturating_mul(2u32.saturating_pow(self.failures.min(20)))
            .min(self.policy.max.max(self.policy.initial));
        self.failures = self.failures.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_restarts() {
        let policy = Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let mut backoff = Backoff::new(policy);
        let first = backoff.next_pause();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..30 {
            let pause = backoff.next_pause();
            assert!(pause <= policy.max, "{pause:?}");
        }
        let late = backoff.next_pause();
        assert!(late >= policy.max / 2, "{late:?}");
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(100));
    }
}
