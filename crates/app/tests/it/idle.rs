//! What an idle bridge costs: an empty command queue for a minute, with
//! production's long polls (20 s) and timeouts, two pollers.
//!
//! The bridge runs in this test's process, so the process's CPU time is the
//! bridge's (plus the fault proxy that counts its receives, and this test,
//! both asleep). Under `cargo nextest` every test has a process of its own
//! and the figure is asserted; under `cargo test` the other tests share the
//! process, and the figure is only reported.

use std::time::{Duration, Instant};

use adapters_aws::sdk::sqs_timeouts;
use app::config::Settings;
use testkit::fault_proxy::operations;
use testkit::FaultProxy;

use crate::support::{Bridge, Env};

/// How long the queue stays empty.
const IDLE: Duration = Duration::from_secs(60);
/// Production's long-poll wait (`receive_wait_secs` default).
const RECEIVE_WAIT_SECS: u64 = 20;
const POLLERS: usize = 2;
/// Most CPU time the idle bridge may take, as a share of the wall time.
const MAX_CPU_SHARE: f64 = 0.01;

/// User + system CPU time of this process (every thread) so far, from
/// `/proc/self/stat` (fields 14 and 15, in clock ticks: USER_HZ, 100 on
/// Linux).
fn process_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // `after_name` starts at field 3.
    let ticks: u64 =
        fields[14 - 3].parse::<u64>().unwrap() + fields[15 - 3].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_queue_for_a_minute_costs_four_long_polls_per_poller_and_no_cpu() {
    let env = Env::new(5).await;
    let proxy = FaultProxy::start(testkit::moto().endpoint());
    let config = proxy
        .sdk_config()
        .await
        .into_builder()
        .timeout_config(sqs_timeouts())
        .build();
    let settings = Settings {
        receive_wait_secs: RECEIVE_WAIT_SECS,
        pollers: POLLERS,
        ..env.settings()
    };
    let started = Instant::now();
    let bridge = Bridge::start_with(settings, &config).await;
    bridge.wait_until_polling().await;
    // Start-up (building the app, the first receive) is not idling.
    let cpu_before = process_cpu_time();
    let idle_from = Instant::now();
    tokio::time::sleep((started + IDLE).saturating_duration_since(Instant::now())).await;
    let cpu = process_cpu_time().saturating_sub(cpu_before);
    let wall = idle_from.elapsed();
    let seen = proxy.seen();
    let receives = proxy.attempts_since(Some("ReceiveMessage"), started);

    // Each poller: the first receive, which does not wait (readiness is
    // known at once), then one long poll per 20 s: at most 1 + 60/20 + the
    // one starting as the minute ends.
    let most = POLLERS * (1 + (IDLE.as_secs() / RECEIVE_WAIT_SECS) as usize + 1);
    assert!(
        receives <= most,
        "{receives} receives in {IDLE:?} (at most {most}): {:?}",
        operations(&seen)
    );
    // And they did poll all along.
    assert!(
        receives >= POLLERS * (IDLE.as_secs() / RECEIVE_WAIT_SECS) as usize,
        "{receives} receives in {IDLE:?}"
    );
    assert_eq!(bridge.aws().snapshot().receive_errors, 0);
    assert_eq!(bridge.aws().not_ready_reason(), None);
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    let own_process = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    eprintln!(
        "measured: idle {IDLE:?}, {POLLERS} pollers, {RECEIVE_WAIT_SECS} s long polls: \
         {receives} ReceiveMessage (calls by operation: {:?}); process CPU {cpu:?} over \
         {wall:?} of idling = {:.3} %{}",
        operations(&seen),
        share * 100.0,
        if own_process {
            ""
        } else {
            " (shared with other tests: not asserted)"
        }
    );
    if own_process {
        assert!(share < MAX_CPU_SHARE, "CPU {cpu:?} over {wall:?} of idling");
    }
    bridge.stop().await;
}
