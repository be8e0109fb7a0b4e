//! Credentials that SQS rejects (docs/operations.md, Health): the bridge says it
//! is not ready (why in its log, never on the public port: AWS's answer can
//! name the principal and account), backs off instead of spinning, and recovers on its own
//! once SQS accepts its requests again.
//!
//! The rejection is the fault proxy's: it answers the bridge's
//! ReceiveMessage with the HTTP 403 AWS JSON error real SQS gives for an
//! unknown key (`InvalidClientTokenId`) or expired temporary credentials
//! (`ExpiredToken`); moto accepts any credentials.
//!
//! And the credential chain of the `wsbridge` binary (docs/configuration.md, Credentials):
//! run with no key in its environment, only a profile with
//! `credential_process`, or a web identity token (EKS IRSA), it signs every
//! request on the wire — the lean SQS client's, the SDK's SQS and SNS
//! clients' — with the key that source hands out. Environment variables are
//! the process's, so these run the binary as a child with its own.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{CannedResponse, Fault, Limit};

use crate::cli::{drain_lines, served_port, signal, stderr_lines, wsbridge};
use crate::faults::{commands, proxy, send_command, via, wait_for_ready, ATTEMPT};
use crate::support::{
    assert_silent, client_id, command, next_json, send_text, Bridge, Env, TempDir, PATIENCE, QUIET,
    SHUTDOWN_SECS,
};

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
        "The security token included in the request is invalid or expired \
         (arn:aws:sts::210987654321:assumed-role/wsbridge/i-0abc).",
    );
    let errors_before = bridge.aws().snapshot().receive_errors;
    proxy.inject_for(
        "ReceiveMessage",
        Fault::Respond(rejection),
        Limit::For(Duration::from_secs(300)),
    );
    let rejected = Instant::now();

    // `/ready` says so in generic words; the adapter's reason (for the
    // log) names AWS's error code, and the public body nothing of it.
    let not_ready_after = wait_for_ready(bridge.port, 503, PATIENCE).await;
    let (status, body) = ready(bridge.port).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "command source unavailable", "{body}");
    for secret in [code, "arn:", "210987654321", "assumed-role"] {
        assert!(!body.to_string().contains(secret), "{secret}: {body}");
    }
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
        "measured: {code} on every receive: /ready 503 after {not_ready_after:?}; \
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

// ---------------------------------------------------------------------------
// The credential chain of the binary: a profile with `credential_process`

/// A `credential_process` that prints its key as JSON (temporary
/// credentials, valid for an hour from each run) and counts its runs in
/// `runs`.
fn credential_process_script(key_id: &str, runs: &std::path::Path) -> String {
    format!(
        r#"#!/bin/sh
echo run >> '{runs}'
expiration=$(date -u -d '+1 hour' '+%Y-%m-%dT%H:%M:%SZ')
printf '{{"Version": 1, "AccessKeyId": "{key_id}", "SecretAccessKey": "process-secret", "SessionToken": "process-session-token", "Expiration": "%s"}}' "$expiration"
"#,
        runs = runs.display()
    )
}

/// `wsbridge serve`, with no credentials in its environment but `chain`
/// (the variables that point the credential chain somewhere), through a
/// fault proxy in front of moto: a Command delivered, a client message
/// published, a clean shutdown. Returns every request the proxy saw.
async fn serve_through_the_chain(dir: &TempDir, chain: &[(&str, String)]) -> Vec<testkit::Seen> {
    let env = Env::new(5).await;
    let proxy = proxy();
    let mut command_line = wsbridge(dir.path());
    command_line
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            dir.path().join("no-such-file"),
        )
        .env("AWS_CONFIG_FILE", dir.path().join("no-such-config"))
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("AWS_REGION", testkit::TEST_REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("BRIDGE_COMMAND_QUEUE_URL", &env.infra.command_queue_url)
        .env("BRIDGE_EVENTS_TOPIC_ARN", &env.infra.events_topic_arn)
        .env("BRIDGE_PORT", "0")
        .env("BRIDGE_WORKERS", "1")
        .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
        .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
        .arg("serve");
    // `chain` wins over the defaults above (a later `env` replaces).
    for (name, value) in chain {
        command_line.env(name, value);
    }
    let mut child = command_line.spawn().expect("spawning wsbridge serve");
    let mut lines = stderr_lines(&mut child);
    let mut log = Vec::new();
    let port = served_port(&mut lines, &mut log).await;
    wait_for_ready(port, 200, PATIENCE).await;

    let client = client_id("creds-chain");
    let mut ws =
        crate::support::connect(&format!("ws://127.0.0.1:{port}/ws?client_id={client}")).await;
    let observer = env.events_observer().await;
    env.aws
        .send(
            &env.infra.command_queue_url,
            &command(&client, "signed").to_string(),
        )
        .await;
    assert_eq!(next_json(&mut ws).await["command"], "signed");
    send_text(&mut ws, r#"{"action": "signed-too", "id": "p1"}"#).await;
    assert_eq!(next_json(&mut ws).await, serde_json::json!({"ack": "p1"}));
    let published = env.aws.receive_at_least(&observer.url, 1, PATIENCE).await;
    assert_eq!(published.len(), 1);
    // The Command's delete is sent in the background: wait for it.
    assert_eq!(env.wait_for_queue_counts((0, 0)).await, (0, 0));

    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(SHUTDOWN_SECS + 3), child.wait())
        .await
        .expect("wsbridge did not exit in time")
        .unwrap();
    drain_lines(&mut lines, &mut log).await;
    assert_eq!(status.code(), Some(0), "{}", log.join("\n"));

    let seen = proxy.seen();
    let operations: BTreeSet<&str> = seen.iter().map(|s| s.operation.as_str()).collect();
    // The lean client (ReceiveMessage, DeleteMessageBatch), the SDK's SQS
    // client (GetQueueAttributes) and its SNS client (PublishBatch).
    for operation in [
        "ReceiveMessage",
        "DeleteMessageBatch",
        "GetQueueAttributes",
        "PublishBatch",
    ] {
        assert!(
            operations.contains(operation),
            "no {operation} among {operations:?}"
        );
    }
    seen
}

/// The access key ids that signed the bridge's SQS and SNS requests.
fn signing_keys(seen: &[testkit::Seen]) -> BTreeSet<&str> {
    seen.iter()
        .filter(|s| s.operation != "AssumeRoleWithWebIdentity")
        .map(|s| s.access_key_id.as_str())
        .collect()
}

/// A profile (`AWS_CONFIG_FILE`, `AWS_PROFILE`) whose `credential_process`
/// hands out a key: every call on the wire is signed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_process_profile_signs_every_call_of_the_binary() {
    let dir = TempDir::new("creds-process");
    let key_id = format!(
        "ASIAPROCESS{}",
        testkit::unique_name("k").replace('-', "").to_uppercase()
    );
    let runs = dir.path().join("runs");
    dir.write("credentials.sh", &credential_process_script(&key_id, &runs));
    let script = dir.path().join("credentials.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.write(
        "aws-config",
        &format!(
            "[profile wsbridge-test]\nregion = {}\ncredential_process = {}\n",
            testkit::TEST_REGION,
            script.display()
        ),
    );
    let seen = serve_through_the_chain(
        &dir,
        &[
            (
                "AWS_CONFIG_FILE",
                dir.path().join("aws-config").display().to_string(),
            ),
            ("AWS_PROFILE", "wsbridge-test".to_owned()),
        ],
    )
    .await;
    assert_eq!(
        signing_keys(&seen),
        BTreeSet::from([key_id.as_str()]),
        "{:?}",
        testkit::fault_proxy::operations(&seen)
    );
    let ran = std::fs::read_to_string(&runs).unwrap_or_default();
    assert!(!ran.is_empty(), "the credential_process never ran");
}

/// Web identity (what EKS IRSA sets up): the chain trades the token file
/// for temporary credentials with STS's AssumeRoleWithWebIdentity — over
/// the bridge's own HTTP client, through the same endpoint (moto answers
/// it) — and every SQS and SNS call is signed with the key STS gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_identity_credentials_come_from_sts_and_sign_every_call_of_the_binary() {
    let dir = TempDir::new("creds-web-identity");
    dir.write("token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ3c2JyaWRnZSJ9.");
    let seen = serve_through_the_chain(
        &dir,
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                dir.path().join("token").display().to_string(),
            ),
            (
                "AWS_ROLE_ARN",
                "arn:aws:iam::123456789012:role/wsbridge-irsa".to_owned(),
            ),
            ("AWS_ROLE_SESSION_NAME", "wsbridge-test".to_owned()),
        ],
    )
    .await;
    // The SDK's identity cache and the lean client's each ask the chain
    // once: one AssumeRoleWithWebIdentity each, each with a key of its own.
    let assumed = seen
        .iter()
        .filter(|s| s.operation == "AssumeRoleWithWebIdentity")
        .count();
    let keys = signing_keys(&seen);
    assert!(
        !keys.is_empty() && keys.len() <= assumed,
        "{} keys for {assumed} AssumeRoleWithWebIdentity: {:?}",
        keys.len(),
        testkit::fault_proxy::operations(&seen)
    );
    for key in keys {
        assert!(
            key.starts_with("ASIA"),
            "signed with {key:?}, not a temporary key from STS"
        );
    }
}
