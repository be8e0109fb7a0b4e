//! The command consumer: a few long-poll loops driving the downlink use case,
//! backing off with jitter while the source fails, stopping on shutdown
//! without abandoning a batch it already holds, nor (within a grace period)
//! a receive already in flight.

use std::sync::Arc;
use std::time::Duration;

use domain::{Downlink, SourceError};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// First and largest pause after a failed receive.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Starts `pollers` loops; each starts no new receive once `stop` is
/// cancelled. A receive in flight then is waited for, for at most
/// `receive_grace`, and what it brings is settled.
pub fn spawn(
    downlink: Arc<Downlink>,
    pollers: usize,
    stop: CancellationToken,
    receive_grace: Duration,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for poller in 0..pollers {
        tasks.spawn(poll_loop(
            poller,
            downlink.clone(),
            stop.clone(),
            receive_grace,
        ));
    }
    tasks
}

async fn poll_loop(
    poller: usize,
    downlink: Arc<Downlink>,
    stop: CancellationToken,
    receive_grace: Duration,
) {
    info!(poller, "command poller started");
    let mut failures: u32 = 0;
    loop {
        if stop.is_cancelled() {
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
                    break;
                }
            },
        };
        match received {
            Ok(batch) => {
                downlink.process(batch).await;
                if failures > 0 {
                    info!(poller, failures, "command source reachable again");
                }
                failures = 0;
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
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    info!(poller, "command poller stopped");
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
}
