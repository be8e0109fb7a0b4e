//! Credentials that SQS rejects (SPEC §2 `/ready`, §9): the bridge says why
//! it is not ready, backs off instead of spinning, and recovers on its own
//! once SQS accepts its requests again.
//!
//! The rejection is the fault proxy's: it answers the bridge's
//! ReceiveMessage with the HTTP 403 AWS JSON error real SQS gives for an
//! unknown key (`InvalidClientTokenId`) or expired temporary credentials
//! (`ExpiredToken`); moto accepts any credentials.

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{CannedResponse, Fault, Limit};

use crate::faults::{commands, proxy, send_command, via, wait_for_ready, ATTEMPT};
use crate::support::{assert_silent, client_id, Bridge, Env, PATIENCE, QUIET};

/// From the first rejection on, the consumer's backoff (200 ms doubling,
/// jittered in the upper half) has reached pauses of at least 1.6 s per
/// poller by this time...
const SETTLING: Duration = Duration::from_secs(5);
/// ...so that over this window two pollers make at most one receive a
/// second (about 0.6/s with the shortest jitter). A loop without backoff
/// makes hundreds; the SDK retrying each rejection would triple them.
const WINDOW: Duration = Duration::from_secs(15);
const MAX_RECEIVES_PER_SEC: f64 = 1.0;
/// Pollers of the test bridges (`support::test_settings`).
const POLLERS: u64 = 2;

/// `GET /ready`: the status and the JSON body.
async fn ready(port: u16) -> (u16, Value) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/ready"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn rejected_credentials_are_reported_back_off_and_recover(code: &str) {
    let env = Env::new(5).await;
    let proxy = proxy();
    let bridge = Bridge::start_with(env.settings(), &via(&proxy, ATTEMPT).await).await;
    let client = client_id("creds");
    let mut ws = bridge.connect(&client).await;
    wait_for_ready(bridge.port, 200, PATIENCE).await;

    let rejection = CannedResponse::aws_json_error(
        403,
        code,
        "Sender",
        "The security token included in the request is invalid or expired.",
    );
    let errors_before = bridge.aws().snapshot().receive_errors;
    proxy.inject_for(
        "ReceiveMessage",
        Fault::Respond(rejection),
        Limit::For(Duration::from_secs(300)),
    );
    let rejected = Instant::now();

    // `/ready` says so, naming AWS's error code.
    let not_ready_after = wait_for_ready(bridge.port, 503, PATIENCE).await;
    let (status, body) = ready(bridge.port).await;
    let reason = body["reason"].as_str().unwrap_or_default().to_owned();
    assert_eq!(status, 503, "{body}");
    assert!(reason.contains(code), "{reason}");
    let reported = bridge.aws().not_ready_reason().unwrap_or_default();
    assert!(reported.contains(code), "{reported}");

    // No spinning: once the backoff has grown, at most one receive a second.
    tokio::time::sleep((rejected + SETTLING).saturating_duration_since(Instant::now())).await;
    let window = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let in_window = proxy.attempts_since(Some("ReceiveMessage"), window);
    let rate = in_window as f64 / window.elapsed().as_secs_f64();
    let attempts = proxy.attempts_since(Some("ReceiveMessage"), rejected) as u64;
    let failed = bridge.aws().snapshot().receive_errors - errors_before;
    assert!(
        rate <= MAX_RECEIVES_PER_SEC,
        "{in_window} receives in {WINDOW:?} after {SETTLING:?} of {code}: {rate:.2}/s"
    );
    // The SDK does not retry an authentication error: one attempt per
    // failed receive (the last ones may not be counted as failed yet).
    assert!(
        failed <= attempts && attempts <= failed + POLLERS,
        "{attempts} attempts for {failed} failed receives"
    );
    assert_eq!(
        ready(bridge.port).await.0,
        503,
        "still not ready while rejected"
    );
    // Sent now, when every long poll that began before the rejection has
    // long ended: only a receive after healing can deliver it.
    send_command(&env, &client, "sent-while-rejected").await;
    assert_silent(&mut ws, QUIET).await;

    // Accepted again: receiving resumes within the longest backoff, the
    // Command sent meanwhile arrives and `/ready` clears.
    proxy.heal();
    let healed = Instant::now();
    let got = commands(&mut ws, 1, PATIENCE).await;
    let delivered_after = healed.elapsed();
    assert_eq!(got, ["sent-while-rejected"]);
    let ready_after = wait_for_ready(bridge.port, 200, PATIENCE).await + delivered_after;
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));
    eprintln!(
        "measured: {code} on every receive: /ready 503 naming it after {not_ready_after:?}; \
         {attempts} receive attempts for {failed} failed receives; {in_window} in the \
         {WINDOW:?} after the first {SETTLING:?} ({rate:.2}/s); after healing the Command \
         arrived in {delivered_after:?} and /ready was 200 within {ready_after:?}"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_access_key_makes_ready_say_so_backs_off_and_recovers() {
    rejected_credentials_are_reported_back_off_and_recover("InvalidClientTokenId").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_makes_ready_say_so_backs_off_and_recovers() {
    rejected_credentials_are_reported_back_off_and_recover("ExpiredToken").await;
}
