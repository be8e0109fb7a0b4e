//! Operations (docs/operations.md): `/metrics` counted against real traffic,
//! `/health` and `/ready` through startup, outage and shutdown, the log
//! formats and `RUST_LOG`, and the packaging files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde_json::{json, Value};
use testkit::{Fault, FaultProxy};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{describe, drain_lines, run, signal, stderr_lines, text, wait_for_line, wsbridge};
use crate::support::{
    client_id, command, envelope, next_frame, next_json, send_text, wait_until, Bridge, Env, Next,
    TempDir, PATIENCE, SHUTDOWN_SECS,
};

// ---------------------------------------------------------------------------
// Metrics

/// `/metrics` parsed: `name{labels}` → value, for every sample line.
type Samples = BTreeMap<String, f64>;

async fn scrape(bridge: &Bridge) -> (String, Samples) {
    let response = reqwest::get(bridge.http("/metrics")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    (text.clone(), parse_samples(&text))
}

fn parse_samples(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            value => value
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}")),
        };
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "sample {key} appears twice"
        );
    }
    samples
}

/// The value of `key`, failing the test (with the whole text) when absent.
fn sample(samples: &Samples, text: &str, key: &str) -> f64 {
    *samples
        .get(key)
        .unwrap_or_else(|| panic!("{key} missing from /metrics:\n{text}"))
}

/// `key`'s value in `after` minus `before` (absent before: 0).
fn delta(before: &Samples, after: &Samples, text: &str, key: &str) -> f64 {
    sample(after, text, key) - before.get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_what_the_traffic_did() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            // Two messages at once, then one per second: a third at once is rate-limited.
            s.message_rate_per_sec = 1;
            s.message_burst = 2;
            s.allowed_origins = vec!["https://app.example".into()];
        })
        .await;
    bridge.wait_until_polling().await;
    let (_, before) = scrape(&bridge).await;

    let id = client_id("metrics");
    let mut ws = bridge.connect(&id).await;
    let queue = &env.infra.command_queue_url;

    // Downlink: two bare Commands (SentTimestamp), one through the commands
    // topic (an SNS envelope with a fresh Timestamp), one envelope sent twice
    // (same SNS MessageId, a 2024 Timestamp: over every bucket but +Inf), and
    // a body that is no Command.
    env.aws
        .send(queue, &command(&id, "bare-1").to_string())
        .await;
    env.aws
        .send(queue, &command(&id, "bare-2").to_string())
        .await;
    env.aws
        .publish(
            &env.infra.commands_topic_arn,
            &command(&id, "via-sns").to_string(),
            &[],
        )
        .await;
    let old = envelope(
        &testkit::unique_name("sns-id"),
        &command(&id, "old").to_string(),
    );
    env.aws.send(queue, &old).await;
    env.aws.send(queue, &old).await;
    env.aws.send(queue, "this is not a command").await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(
            next_json(&mut ws).await["command"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    names.sort();
    assert_eq!(names, ["bare-1", "bare-2", "old", "via-sns"]);

    // Uplink, back to back: one published, one invalid, one over the rate
    // (the burst of two is spent; the next token comes in a second).
    send_text(&mut ws, r#"{"action":"counted","id":"1"}"#).await;
    send_text(&mut ws, "not json").await;
    send_text(&mut ws, r#"{"action":"too-fast","id":"2"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "1"}));
    assert_eq!(next_json(&mut ws).await["error"]["code"], "invalid_message");
    let limited = next_json(&mut ws).await;
    assert_eq!(limited["error"]["code"], "rate_limited", "{limited}");

    // Connections: one closed by its client (answered 1000), one closed by the
    // server for a binary frame (1003), one refused for its Origin.
    ws.close(None).await.unwrap();
    assert!(matches!(
        next_frame(&mut ws, PATIENCE).await,
        Some(Next::Close(_)) | Some(Next::Ended)
    ));
    let mut binary = bridge.connect(&client_id("metrics-bin")).await;
    binary
        .send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    match next_frame(&mut binary, PATIENCE).await {
        Some(Next::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Unsupported),
        other => panic!("expected a 1003 close, got {other:?}"),
    }
    let refused = reqwest::Client::new()
        .get(bridge.http(&format!("/ws?client_id={id}")))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);

    // Deletes and closes are settled in the background: wait for them.
    let bridge_ref = &bridge;
    wait_until("deletes and closes counted", || async move {
        let (_, now) = scrape(bridge_ref).await;
        now.get("wsbridge_sqs_deleted_messages_total") == Some(&6.0)
            && now.get("wsbridge_connections_closed_total{code=\"1003\"}") == Some(&1.0)
            && now.get("wsbridge_connections_closed_total{code=\"1000\"}") == Some(&1.0)
            && now.get("wsbridge_open_connections") == Some(&0.0)
    })
    .await;
    let (text, after) = scrape(&bridge).await;
    let moved = |key: &str| delta(&before, &after, &text, key);
    for (key, expected) in [
        ("wsbridge_commands_total{outcome=\"received\"}", 6.0),
        ("wsbridge_commands_total{outcome=\"forwarded\"}", 4.0),
        ("wsbridge_commands_total{outcome=\"frames_queued\"}", 4.0),
        ("wsbridge_commands_total{outcome=\"duplicate\"}", 1.0),
        ("wsbridge_commands_total{outcome=\"malformed\"}", 1.0),
        ("wsbridge_commands_total{outcome=\"undeliverable\"}", 0.0),
        ("wsbridge_commands_total{outcome=\"released\"}", 0.0),
        ("wsbridge_commands_total{outcome=\"dead_lettered\"}", 1.0),
        // Four forwarded, the duplicate, and the malformed one once the
        // dead-letter queue has its copy.
        ("wsbridge_sqs_deleted_messages_total", 6.0),
        ("wsbridge_sqs_delete_failures_total", 0.0),
        ("wsbridge_sqs_receive_errors_total", 0.0),
        ("wsbridge_client_messages_total{outcome=\"published\"}", 1.0),
        ("wsbridge_client_messages_total{outcome=\"invalid\"}", 1.0),
        ("wsbridge_client_messages_total{outcome=\"rate_limited\"}", 1.0),
        ("wsbridge_client_messages_total{outcome=\"failed\"}", 0.0),
        ("wsbridge_connections_closed_total{code=\"1000\"}", 1.0),
        ("wsbridge_connections_closed_total{code=\"1003\"}", 1.0),
        ("wsbridge_connections_closed_total{code=\"1013\"}", 0.0),
        (
            "wsbridge_upgrades_refused_total{reason=\"origin_not_allowed\"}",
            1.0,
        ),
        ("wsbridge_command_forward_latency_seconds_count", 4.0),
        // The three fresh Commands took well under a minute; the 2024 one did not.
        (
            "wsbridge_command_forward_latency_seconds_bucket{le=\"60\"}",
            3.0,
        ),
        (
            "wsbridge_command_forward_latency_seconds_bucket{le=\"+Inf\"}",
            4.0,
        ),
        (
            "wsbridge_backend_call_duration_seconds_count{service=\"sns\",operation=\"PublishBatch\"}",
            1.0,
        ),
    ] {
        assert_eq!(moved(key), expected, "{key} in:\n{text}");
    }
    assert_eq!(sample(&after, &text, "wsbridge_open_connections"), 0.0);
    assert_eq!(sample(&after, &text, "wsbridge_ready"), 1.0);
    // Every receive and every delete call was timed.
    for operation in ["ReceiveMessage", "DeleteMessageBatch"] {
        let key = format!(
            "wsbridge_backend_call_duration_seconds_count{{service=\"sqs\",operation=\"{operation}\"}}"
        );
        assert!(moved(&key) >= 1.0, "{key} in:\n{text}");
    }
    // The fresh Commands' latency is their real age: under 10 s here.
    assert!(
        moved("wsbridge_command_forward_latency_seconds_bucket{le=\"10\"}") >= 3.0,
        "{text}"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_speak_openmetrics_to_a_scraper_that_asks() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    let response = reqwest::Client::new()
        .get(bridge.http("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE wsbridge_commands counter\n"),
        "{text}"
    );
    bridge.stop().await;
}

// ---------------------------------------------------------------------------
// Health and readiness

async fn status_of(url: &str) -> Option<(u16, Value)> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// Polls `/ready` until it answers `status`; returns the body.
async fn wait_for_ready(bridge: &Bridge, status: u16) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = status_of(&bridge.http("/ready")).await;
        if let Some((got, body)) = answer.clone() {
            if got == status {
                return body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "GET /ready did not answer {status} within {PATIENCE:?}; last: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/health` answered 200 every time during `period` (polled every 50 ms).
async fn assert_live_throughout(bridge: &Bridge, period: Duration) -> usize {
    let until = Instant::now() + period;
    let mut polls = 0;
    while Instant::now() < until {
        let answer = status_of(&bridge.http("/health")).await;
        assert_eq!(
            answer,
            Some((200, json!({"status": "ok"}))),
            "/health flapped after {polls} polls"
        );
        polls += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    polls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_before_the_first_receive_and_live_all_along() {
    // SQS does not answer at all: the first receive never returns.
    let env = Env::new(5).await;
    let proxy = FaultProxy::start(testkit::moto().endpoint());
    proxy.set(Fault::BlackHole);
    let bridge = Bridge::start_with(env.settings(), &proxy.sdk_config().await).await;
    let body = wait_for_ready(&bridge, 503).await;
    assert_eq!(body["status"], "not_ready", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("starting"),
        "{body}"
    );
    let polls = assert_live_throughout(&bridge, Duration::from_secs(1)).await;
    assert!(polls >= 5, "{polls}");
    assert_eq!(
        status_of(&bridge.http("/ready")).await.map(|(s, _)| s),
        Some(503),
        "still not ready: nothing was received"
    );
    // SQS answers: ready.
    proxy.set(Fault::PassThrough);
    proxy.reset_connections();
    assert_eq!(
        wait_for_ready(&bridge, 200).await,
        json!({"status": "ready"})
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_never_flaps_while_sqs_fails_and_ready_follows_the_outage() {
    let env = Env::new(5).await;
    let proxy = FaultProxy::start(testkit::moto().endpoint());
    let bridge = Bridge::start_with(env.settings(), &proxy.sdk_config().await).await;
    wait_for_ready(&bridge, 200).await;

    // SQS refuses every connection: not ready, but alive.
    proxy.set(Fault::Refuse);
    let body = wait_for_ready(&bridge, 503).await;
    assert_eq!(body["reason"], "command source unavailable", "{body}");
    let detail = bridge.broker.not_ready_reason().unwrap_or_default();
    assert!(detail.contains("failed"), "{detail}");
    assert_live_throughout(&bridge, Duration::from_secs(2)).await;
    assert_eq!(
        status_of(&bridge.http("/ready")).await.map(|(s, _)| s),
        Some(503)
    );

    // Back: ready again, and still alive.
    proxy.set(Fault::PassThrough);
    assert_eq!(
        wait_for_ready(&bridge, 200).await,
        json!({"status": "ready"})
    );
    assert_live_throughout(&bridge, Duration::from_millis(300)).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_as_soon_as_shutdown_begins() {
    let env = Env::new(5).await;
    let proxy = FaultProxy::start(testkit::moto().endpoint());
    let mut settings = env.settings();
    settings.receive_wait_secs = 2;
    let mut bridge = Bridge::start_with(settings, &proxy.sdk_config().await).await;
    wait_for_ready(&bridge, 200).await;
    // The receives in flight never answer, so the drain waits out their
    // grace period (min(receive wait + 1 s, deadline / 2) = 2.5 s) while
    // the HTTP server still answers.
    proxy.set(Fault::BlackHole);
    bridge.shutdown.cancel();
    let started = Instant::now();
    let answer = status_of(&bridge.http("/ready")).await;
    let (status, body) = answer.unwrap_or_else(|| {
        panic!(
            "/ready did not answer {:?} after the shutdown began",
            started.elapsed()
        )
    });
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("shutting down"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the answer came too late to tell: {:?}",
        started.elapsed()
    );
    // Liveness holds while draining.
    assert_eq!(
        status_of(&bridge.http("/health")).await.map(|(s, _)| s),
        Some(200)
    );
    let task = bridge.task.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(SHUTDOWN_SECS + 1), task)
        .await
        .expect("the bridge did not stop in time")
        .expect("bridge task panicked");
    assert_eq!(result, Ok(()));
}

// ---------------------------------------------------------------------------
// Logs

/// A `wsbridge serve` child over `env`'s resources, with `extra` variables;
/// returns the child, its stderr lines and its port.
async fn serve_process(
    env: &Env,
    dir: &TempDir,
    extra: &[(&str, &str)],
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    Vec<String>,
    u16,
) {
    let mut command = wsbridge(dir.path());
    crate::cli::with_moto(&mut command);
    command
        .env("BRIDGE_COMMAND_QUEUE_URL", &env.infra.command_queue_url)
        .env("BRIDGE_EVENTS_TOPIC_ARN", &env.infra.events_topic_arn)
        .env("BRIDGE_PORT", "0")
        .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
        .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
        .arg("serve");
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawning wsbridge serve");
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let port = crate::cli::served_port(&mut lines, &mut seen).await;
    (child, lines, seen, port)
}

/// Connects, gets one Command, publishes one message, sends one malformed
/// Command; stops the child with SIGTERM and returns every stderr line, the
/// client id and the SQS message ids of the Command and of the malformed body.
async fn traffic_and_logs(extra: &[(&str, &str)]) -> (Vec<String>, String, String, String) {
    let env = Env::new(5).await;
    let dir = TempDir::new("ops-logs");
    let (mut child, mut lines, mut seen, port) = serve_process(&env, &dir, extra).await;
    let ready = format!("http://127.0.0.1:{port}/ready");
    wait_until("the child to be ready", || {
        let ready = ready.clone();
        async move { status_of(&ready).await.map(|(s, _)| s) == Some(200) }
    })
    .await;
    let id = client_id("logs");
    let mut ws = crate::support::connect(&format!("ws://127.0.0.1:{port}/ws?client_id={id}")).await;
    let sent = command(&id, "logged");
    let message_id = env
        .aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    assert_eq!(next_json(&mut ws).await, sent);
    send_text(&mut ws, r#"{"action":"logged","id":"1"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "1"}));
    let poison = env
        .aws
        .send(&env.infra.command_queue_url, "{\"not\": \"a command\"}")
        .await;
    wait_for_line(&mut lines, &mut seen, "malformed command").await;
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(SHUTDOWN_SECS + 2), child.wait())
        .await
        .expect("the child did not stop in time")
        .unwrap();
    drain_lines(&mut lines, &mut seen).await;
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    (seen, id, message_id, poison)
}

/// The span named `name` in a JSON log line's `spans` list.
fn span<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    line["spans"].as_array()?.iter().find(|s| s["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_span_fields_and_rust_log_filters_them() {
    let (lines, id, message_id, poison) = traffic_and_logs(&[
        ("BRIDGE_LOG_FORMAT", "json"),
        ("RUST_LOG", "warn,app=info,domain=debug,adapters_ws=debug"),
    ])
    .await;
    let all = lines.join("\n");
    let parsed: Vec<Value> = lines
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{all}"))
        })
        .collect();
    for line in &parsed {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line.get(field).is_some(), "no {field} in {line}");
        }
        // RUST_LOG: debug only from the two crates it names.
        let target = line["target"].as_str().unwrap_or_default();
        if line["level"] == "DEBUG" {
            assert!(
                target.starts_with("domain") || target.starts_with("adapters_ws"),
                "a DEBUG line from {target}: {line}"
            );
        }
        if line["level"] == "INFO" {
            assert!(
                !target.starts_with("aws") && !target.starts_with("hyper"),
                "an INFO line from {target}: {line}"
            );
        }
    }
    // The demo page line is there (app=info).
    assert!(parsed.iter().any(|l| l["message"] == "demo page"), "{all}");

    // A connection's lines carry its client id and connection id.
    let connection = parsed
        .iter()
        .find_map(|l| span(l, "ws_connection").filter(|s| s["client_id"] == id.as_str()))
        .unwrap_or_else(|| panic!("no line in a ws_connection span of {id}:\n{all}"));
    assert!(
        connection["connection_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
            || connection["connection_id"].is_u64(),
        "{connection}"
    );
    // A Command's lines carry its message id (and client id).
    let forwarded = parsed
        .iter()
        .find(|l| {
            span(l, "command").is_some_and(|s| s["message_id"] == message_id.as_str())
                && l["message"] == "command forwarded"
        })
        .unwrap_or_else(|| panic!("no 'command forwarded' line for {message_id}:\n{all}"));
    assert_eq!(
        span(forwarded, "command").unwrap()["client_id"],
        id.as_str()
    );
    assert_eq!(forwarded["span"]["name"], "command", "{forwarded}");

    // The malformed one is logged once, where it is handled, with its id.
    let malformed: Vec<&Value> = parsed
        .iter()
        .filter(|l| span(l, "command").is_some_and(|s| s["message_id"] == poison.as_str()))
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .collect();
    assert_eq!(malformed.len(), 1, "{all}");
    assert_eq!(malformed[0]["message"], "malformed command, not forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_are_for_humans_with_the_span_fields_inline() {
    let (lines, id, message_id, _) =
        traffic_and_logs(&[("RUST_LOG", "info,domain=debug,adapters_ws=debug")]).await;
    let all = lines.join("\n");
    assert!(
        lines.iter().all(|l| !l.trim_start().starts_with('{')),
        "a JSON line in text mode:\n{all}"
    );
    let demo = lines
        .iter()
        .find(|l| l.contains("demo page"))
        .unwrap_or_else(|| panic!("no demo page line:\n{all}"));
    assert!(demo.contains(" INFO "), "{demo}");
    assert!(
        lines.iter().any(|l| l.contains("ws_connection{")
            && l.contains(&format!("client_id={id}"))
            && l.contains("connection_id=")),
        "no line with the connection's span:\n{all}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("command{") && l.contains(&format!("message_id={message_id}"))),
        "no line with the Command's span:\n{all}"
    );
}

/// `wsbridge token` with an invalid `RUST_LOG`: one WARN log line, then
/// the token on stdout; a quick way to make the binary log.
fn one_log_line(dir: &TempDir) -> tokio::process::Command {
    let mut command = wsbridge(dir.path());
    command
        .env("RUST_LOG", "app=notalevel")
        .env("BRIDGE_JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .args(["token", "--sub", "logs"]);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_when_not_on_a_terminal_unless_text_is_asked_and_never_coloured() {
    let dir = TempDir::new("ops-log-auto");
    // (name, BRIDGE_LOG_FORMAT, JSON expected). Colours allowed (no NO_COLOR):
    // none appear all the same, stderr being a pipe.
    for (name, format, json) in [
        ("auto (unset)", None, true),
        ("auto", Some("auto"), true),
        ("json", Some("json"), true),
        ("text", Some("text"), false),
    ] {
        let mut command = one_log_line(&dir);
        command
            .env_remove("NO_COLOR")
            .env_remove("BRIDGE_LOG_FORMAT");
        if let Some(format) = format {
            command.env("BRIDGE_LOG_FORMAT", format);
        }
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{name}: {}",
            describe(&output)
        );
        let stderr = text(&output.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: {}", describe(&output));
        assert!(
            !stderr.contains('\u{1b}'),
            "{name}: an escape code: {stderr:?}"
        );
        let parsed = serde_json::from_str::<Value>(lines[0]);
        if json {
            let line = parsed.unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {stderr}"));
            assert_eq!(line["level"], "WARN", "{name}: {line}");
            assert!(
                line["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("RUST_LOG"),
                "{name}: {line}"
            );
        } else {
            assert!(parsed.is_err(), "{name}: JSON in text mode: {stderr}");
            assert!(
                lines[0].contains(" WARN ") && lines[0].contains("RUST_LOG"),
                "{name}: {stderr}"
            );
        }
    }

    // An unknown format is a configuration error naming the setting.
    let mut command = one_log_line(&dir);
    command.env("BRIDGE_LOG_FORMAT", "yaml");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("log_format"),
        "{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_auto_logs_are_text_coloured_unless_no_color() {
    // `script` (util-linux) runs the binary on a pseudo-terminal and copies
    // what it writes there (stdout and stderr) to its own stdout.
    let dir = TempDir::new("ops-log-tty");
    let quoted = |arg: &str| format!("'{}'", arg.replace('\'', r"'\''"));
    let line = [crate::cli::BIN, "token", "--sub", "logs"]
        .iter()
        .map(|a| quoted(a))
        .collect::<Vec<_>>()
        .join(" ");
    for (no_color, coloured) in [(None, true), (Some("1"), false)] {
        let mut command = wsbridge(dir.path());
        command
            .env_remove("BRIDGE_LOG_FORMAT")
            .env_remove("NO_COLOR")
            .env("RUST_LOG", "app=notalevel")
            .env("BRIDGE_JWT_SECRET", "0123456789abcdef0123456789abcdef");
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        let mut script = tokio::process::Command::new("script");
        script
            .args(["-q", "-e", "-c", &line, "/dev/null"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null());
        // The environment `command` would have given the binary.
        for (name, value) in command.as_std().get_envs() {
            match value {
                Some(value) => script.env(name, value),
                None => script.env_remove(name),
            };
        }
        let output = tokio::time::timeout(PATIENCE, script.output())
            .await
            .expect("script did not exit in time")
            .expect("running script (util-linux)");
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        let shown = text(&output.stdout);
        let warn = shown
            .lines()
            .find(|l| l.contains("RUST_LOG"))
            .unwrap_or_else(|| panic!("no log line: {shown:?}"));
        assert!(
            !warn.trim_start().starts_with('{'),
            "JSON on a terminal: {shown:?}"
        );
        assert!(warn.contains("WARN"), "{shown:?}");
        assert_eq!(
            warn.contains('\u{1b}'),
            coloured,
            "NO_COLOR={no_color:?}: {shown:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The binary: version, help, configuration

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_every_subcommands_help_with_an_example() {
    let dir = TempDir::new("ops-help");
    let mut command = wsbridge(dir.path());
    command.arg("--version");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert_eq!(
        text(&output.stdout).trim(),
        format!("wsbridge {}", env!("CARGO_PKG_VERSION"))
    );

    let mut command = wsbridge(dir.path());
    command.arg("--help");
    let output = run(command).await;
    let help = text(&output.stdout);
    let subcommands: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|name| name != "help")
        .collect();
    for expected in ["serve", "dev", "send-command", "monitor", "token", "config"] {
        assert!(
            subcommands.iter().any(|s| s == expected),
            "{expected}: {help}"
        );
    }
    for sub in &subcommands {
        let mut command = wsbridge(dir.path());
        command.args([sub.as_str(), "--help"]);
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{sub}: {}",
            describe(&output)
        );
        let help = text(&output.stdout);
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with("Example: ") && l.contains("wsbridge ")),
            "`wsbridge {sub} --help` has no example:\n{help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_prints_the_effective_settings_with_secrets_redacted() {
    let dir = TempDir::new("ops-config");
    dir.write("config/default.toml", "port = 9001\npollers = 3\n");
    dir.write("config/staging.toml", "pollers = 4\n");
    let secret = "s3cr3t-value-long-enough-for-hs256-0123456789";
    let mut command = wsbridge(dir.path());
    command
        .env("BRIDGE_PROFILE", "staging")
        .env("BRIDGE_HOST", "0.0.0.0")
        .env("BRIDGE_ALLOW_INSECURE", "true")
        .env("BRIDGE_JWT_SECRET", secret)
        .env(
            "BRIDGE_COMMAND_QUEUE_URL",
            "https://user:hunter2@sqs.example/1/q",
        )
        .arg("config");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let shown = text(&output.stdout);
    for line in [
        "host = \"0.0.0.0\"",
        "port = 9001",
        "pollers = 4",
        "jwt_secret = \"[redacted]\"",
        "command_queue_url = \"https://user:[redacted]@sqs.example/1/q\"",
        "# events_topic_arn = (unset)",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "{line:?} not in:\n{shown}"
        );
    }
    assert!(!shown.contains(secret), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");

    // The TOML is a valid configuration file: loaded back, it is the same
    // configuration (the redacted secret aside).
    let back = TempDir::new("ops-config-back");
    let stand_in = "a-stand-in-secret-of-at-least-32-bytes";
    back.write(
        "default.toml",
        &shown.replace("\"[redacted]\"", &format!("\"{stand_in}\"")),
    );
    let mut reloaded = app::config::Settings::load(&app::config::Sources {
        config_dir: back.path().to_path_buf(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("the printed configuration does not load: {e}\n{shown}"));
    reloaded.jwt_secret = None;
    let expected = app::config::Settings {
        host: "0.0.0.0".into(),
        allow_insecure: true,
        port: 9001,
        pollers: 4,
        command_queue_url: Some("https://user:[redacted]@sqs.example/1/q".into()),
        // wsbridge() asks for text logs.
        log_format: app::config::LogFormat::Text,
        ..app::config::Settings::default()
    };
    assert_eq!(reloaded, expected);

    let mut command = wsbridge(dir.path());
    command
        .args(["config", "--format", "json"])
        .env("BRIDGE_JWT_SECRET", secret);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["jwt_secret"], "[redacted]");
    assert_eq!(json["port"], 9001);
    assert_eq!(json["events_topic_arn"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_setting_is_reported_at_once_in_one_line_exit_2() {
    let dir = TempDir::new("ops-config-bad");
    dir.write("config/default.toml", "pollers = \"many\"\n");
    let mut command = wsbridge(dir.path());
    command
        .env("BRIDGE_PORT", "abc")
        .env("BRIDGE_MODE", "sideways")
        .env("BRIDGE_RECEIVE_WAIT_SECS", "21")
        .env("BRIDGE_MAX_MESSAGE_BYTES", "0")
        .arg("config");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(output.stdout.is_empty(), "{}", describe(&output));
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", describe(&output));
    for (field, detail) in [
        ("port:", "BRIDGE_PORT"),
        ("mode:", "sideways"),
        ("pollers:", "default.toml"),
        ("receive_wait_secs:", "21"),
        ("max_message_bytes:", "0"),
    ] {
        let problem = lines[0]
            .split("; ")
            .find(|p| p.contains(field))
            .unwrap_or_else(|| panic!("{field} not reported: {}", lines[0]));
        assert!(problem.contains(detail), "{problem}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_on_200_and_1_naming_what_else_it_got() {
    let dir = TempDir::new("ops-health");
    let health = |args: &[&str], vars: &[(&str, &str)]| {
        let mut command = wsbridge(dir.path());
        command.arg("health").args(args).envs(vars.iter().copied());
        run(command)
    };
    // A bridge whose SQS never answers: live (/health 200), not ready (/ready 503).
    let env = Env::new(5).await;
    let proxy = FaultProxy::start(testkit::moto().endpoint());
    proxy.set(Fault::BlackHole);
    let bridge = Bridge::start_with(env.settings(), &proxy.sdk_config().await).await;
    let port = bridge.port.to_string();

    let output = health(&["--url", &bridge.http("/health")], &[]).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        text(&output.stdout).contains("200"),
        "{}",
        describe(&output)
    );

    // The default URL: 127.0.0.1 and the configured port, also when the
    // bridge listens on every interface.
    let output = health(
        &[],
        &[
            ("BRIDGE_PORT", &port),
            ("BRIDGE_HOST", "0.0.0.0"),
            ("BRIDGE_ALLOW_INSECURE", "true"),
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        text(&output.stdout).contains(&format!("http://127.0.0.1:{port}/health")),
        "{}",
        describe(&output)
    );

    let output = health(&["--url", &bridge.http("/ready")], &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("503") && stderr.contains("not_ready") && stderr.contains("/ready"),
        "{}",
        describe(&output)
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{}", describe(&output));
    bridge.stop().await;

    // Nothing listens any more.
    let output = health(&[], &[("BRIDGE_PORT", &port)]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{}",
        describe(&output)
    );

    // Connected, but no answer within --timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", silent.local_addr().unwrap());
    let started = Instant::now();
    let output = health(&["--url", &url, "--timeout", "1"], &[]).await;
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("no answer") && started.elapsed() < Duration::from_secs(10),
        "{}",
        describe(&output)
    );

    // Not a plain-HTTP URL: a usage error.
    let output = health(&["--url", "https://127.0.0.1/health"], &[]).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_printed_for_bash_zsh_and_fish() {
    let dir = TempDir::new("ops-completions");
    for shell in ["bash", "zsh", "fish"] {
        let mut command = wsbridge(dir.path());
        // Even with an invalid configuration: completions need none.
        command
            .env("BRIDGE_PORT", "abc")
            .args(["completions", shell]);
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{shell}: {}",
            describe(&output)
        );
        let script = text(&output.stdout);
        for subcommand in [
            "serve",
            "dev",
            "emulator",
            "send-command",
            "monitor",
            "health",
            "completions",
        ] {
            assert!(
                script.contains(subcommand),
                "{shell}: no {subcommand} in:\n{script}"
            );
        }
        assert!(script.contains("config-dir"), "{shell}: {script}");
    }
    let bash = {
        let mut command = wsbridge(dir.path());
        command.args(["completions", "bash"]);
        text(&run(command).await.stdout)
    };
    assert!(bash.contains("complete -F _wsbridge"), "{bash}");

    let mut command = wsbridge(dir.path());
    command.args(["completions", "powershell-7"]);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
}

// ---------------------------------------------------------------------------
// Packaging files

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_small_and_unprivileged() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].contains(" AS builder"), "{stages:?}");
    assert!(
        stages[1].contains("-slim"),
        "a small runtime image: {stages:?}"
    );
    let runtime = dockerfile.split(stages[1]).nth(1).unwrap();
    let user = runtime
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .expect("the runtime stage sets a USER");
    assert!(!["root", "0"].contains(&user.trim()), "{user}");
    assert!(runtime.contains("--from=builder"), "{runtime}");
    assert!(
        !runtime.contains("cargo "),
        "no toolchain in the runtime image"
    );
    assert!(runtime.contains("EXPOSE 8000"), "{runtime}");
    assert!(runtime.contains("BRIDGE_HOST=0.0.0.0"), "{runtime}");
    // Base images pinned to a version (scripts/check-packaging.sh checks
    // the tags in detail), and a health check by the binary itself.
    for stage in &stages {
        let image = stage.split_whitespace().nth(1).unwrap_or_default();
        let tag = image
            .split_once(':')
            .map(|(_, tag)| tag)
            .unwrap_or_default();
        assert!(
            tag.starts_with(|c: char| c.is_ascii_digit()) && tag.contains('.'),
            "{image} is not pinned to a version"
        );
    }
    let healthcheck = runtime
        .find("HEALTHCHECK ")
        .map(|at| &runtime[at..])
        .expect("the runtime stage has a HEALTHCHECK");
    assert!(
        healthcheck
            .lines()
            .take(3)
            .any(|l| l.contains(r#"CMD ["wsbridge", "health""#)),
        "{healthcheck}"
    );
    // The build context leaves out what is big or private.
    let ignore = read(".dockerignore");
    for entry in ["target", ".venv", ".git", ".env"] {
        assert!(
            ignore
                .lines()
                .any(|l| l.trim().trim_start_matches('/') == entry),
            "{entry} not in .dockerignore"
        );
    }
}

#[test]
fn the_ci_workflow_runs_the_same_script_as_ci() {
    let workflow = read(".github/workflows/ci.yml");
    assert!(
        workflow
            .lines()
            .any(|l| matches!(l.trim(), ".ci/run" | "run: .ci/run")),
        "{workflow}"
    );
    let ci = read(".ci/run");
    assert!(ci.contains("scripts/test.sh"), "{ci}");
    assert!(ci.contains("chromium"), "{ci}");
}
