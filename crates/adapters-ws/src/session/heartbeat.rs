//! The heartbeat of one connection: a tick every `heartbeat_interval`, the
//! first one interval after the connection opens, at which the session loop
//! pings the client, unless it has not heard from the client for
//! `client_timeout` (then it closes with 1001).
//!
//! It reads tokio's clock, so its rules are tested on paused time.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::SessionSettings;

/// The heartbeat's ticks and when the client was last heard from.
pub(super) struct Heartbeat {
    ticks: Interval,
    last_heard: Instant,
    client_timeout: Duration,
}

impl Heartbeat {
    /// A heartbeat whose first tick is one interval from now; the client
    /// counts as heard from now.
    pub(super) fn start(settings: &SessionSettings) -> Self {
        let period = settings.heartbeat_interval.max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
        // A loop held up (a write waiting for the client) does not make up
        // the ticks it missed in a burst of pings.
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            ticks,
            last_heard: Instant::now(),
            client_timeout: settings.client_timeout,
        }
    }

    /// The client sent something (any frame, a pong included).
    pub(super) fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// Waits for the next tick.
    pub(super) async fn tick(&mut self) {
        self.ticks.tick().await;
    }

    /// Whether the client has been silent for the whole client timeout.
    pub(super) fn silent(&self) -> bool {
        self.last_heard.elapsed() >= self.client_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heartbeat(interval_ms: u64, timeout_ms: u64) -> Heartbeat {
        Heartbeat::start(&SessionSettings {
            heartbeat_interval: Duration::from_millis(interval_ms),
            client_timeout: Duration::from_millis(timeout_ms),
            ..SessionSettings::default()
        })
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_come_one_interval_apart_starting_one_interval_in() {
        let opened = Instant::now();
        let mut heartbeat = heartbeat(50, 400);
        for n in 1..=5 {
            heartbeat.tick().await;
            assert_eq!(opened.elapsed(), ms(50 * n));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_not_heard_from_is_silent_at_the_first_tick_past_the_timeout() {
        let opened = Instant::now();
        let mut heartbeat = heartbeat(50, 400);
        let mut pings = 0;
        loop {
            heartbeat.tick().await;
            if heartbeat.silent() {
                break;
            }
            pings += 1;
        }
        assert_eq!(pings, 7, "pinged at 50, 100, … 350 ms");
        assert_eq!(opened.elapsed(), ms(400));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_heard_from_within_the_timeout_is_never_silent() {
        let opened = Instant::now();
        let mut heartbeat = heartbeat(50, 400);
        let mut pings = 0;
        while opened.elapsed() < ms(1200) {
            heartbeat.tick().await;
            assert!(!heartbeat.silent(), "silent at {:?}", opened.elapsed());
            pings += 1;
            // The client answers every third ping.
            if pings % 3 == 0 {
                heartbeat.heard();
            }
        }
        assert_eq!(pings, 24);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_tick_is_not_made_up_in_a_burst() {
        let opened = Instant::now();
        let mut heartbeat = heartbeat(50, 400);
        // The loop was held up for 175 ms: one tick, then the interval again.
        tokio::time::advance(ms(175)).await;
        heartbeat.tick().await;
        assert_eq!(opened.elapsed(), ms(175));
        heartbeat.tick().await;
        assert_eq!(opened.elapsed(), ms(225));
    }
}
