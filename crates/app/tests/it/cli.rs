//! The `wsbridge` binary as a child process (docs/operations.md): exit codes, help,
//! send-command, monitor and dev against moto. The environment is given to
//! the child only; its working directory is a fresh temp dir.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::support::{wait_until, TempDir, PATIENCE, SHUTDOWN_SECS};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_wsbridge");

/// The binary, run in `cwd`, with no `BRIDGE_*` or `AWS_*` variable of the
/// test process (those the test passes are the only ones it sees) but
/// `BRIDGE_LOG_FORMAT=text`: the tests read its log lines (through a pipe
/// the default, `auto`, would write JSON; `ops.rs` checks that).
pub(crate) fn wsbridge(cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        // The binary's own default log filter (the dev test reads its log).
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("BRIDGE_") || name.starts_with("AWS_") {
            command.env_remove(name.as_ref());
        }
    }
    command.env("BRIDGE_LOG_FORMAT", "text");
    command
}

/// Runs to completion (bounded); returns the output.
pub(crate) async fn run(mut command: Command) -> Output {
    let child = command.spawn().expect("spawning wsbridge");
    tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("wsbridge did not exit in time")
        .expect("waiting for wsbridge")
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

pub(crate) fn with_moto(command: &mut Command) {
    for (name, value) in testkit::moto().env_vars() {
        command.env(name, value);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_exits_2_with_one_line_naming_the_field() {
    let dir = TempDir::new("cli-bad-port");
    let mut command = wsbridge(dir.path());
    command.arg("serve").env("BRIDGE_PORT", "abc");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{}", describe(&output));
    assert!(lines[0].contains("port"), "{}", describe(&output));
    assert!(output.stdout.is_empty(), "{}", describe(&output));

    // The same for a file in the default config folder of the working dir.
    let dir = TempDir::new("cli-bad-file");
    dir.write("config/default.toml", "mode = \"sideways\"\n");
    let mut command = wsbridge(dir.path());
    command.arg("monitor");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{}", describe(&output));
    assert!(stderr.contains("mode"), "{}", describe(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_setting_is_a_configuration_error() {
    // No config folder in the working dir and no BRIDGE_* variable: nothing
    // names the command queue or the events topic, and in a region where
    // `dev` made nothing, the helpers find no resource of `dev`'s either.
    let dir = TempDir::new("cli-missing");
    /// Arguments, extra variables, the settings the error must name.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case; 4] = [
        (&["serve"], &[], &["command_queue_url", "events_topic_arn"]),
        // Fanout: the commands topic is checked at load (a rule of the
        // mode), the events topic before anything is created.
        (
            &["serve"],
            &[
                ("BRIDGE_MODE", "fanout"),
                (
                    "BRIDGE_COMMANDS_TOPIC_ARN",
                    "arn:aws:sns:ap-northeast-3:123456789012:c",
                ),
            ],
            &["events_topic_arn"],
        ),
        (&["monitor"], &[], &["events_topic_arn"]),
        (
            &["send-command", r#"{"client_id":"c","command":"x"}"#],
            &[],
            &["command_queue_url"],
        ),
    ];
    for (args, vars, fields) in cases {
        let mut command = wsbridge(dir.path());
        with_moto(&mut command);
        command
            .env("AWS_REGION", "ap-northeast-3")
            .envs(vars.iter().copied())
            .args(args);
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        let stderr = text(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", describe(&output));
        for field in fields {
            assert!(lines[0].contains(field), "{args:?}: {}", describe(&output));
            let env_name = format!("BRIDGE_{}", field.to_uppercase());
            assert!(
                lines[0].contains(&env_name),
                "{args:?}: {}",
                describe(&output)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_the_shipped_configuration_exits_2_naming_what_it_needs() {
    // The repository's config/default.toml, as the container image ships
    // it: no queue, no topic, no endpoint. `serve` refuses before it calls
    // anything (no AWS variable at all here: not even a region).
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let dir = TempDir::new("cli-shipped");
    let mut command = wsbridge(dir.path());
    command.arg("--config-dir").arg(&config_dir).arg("serve");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{}", describe(&output));
    for needed in [
        "command_queue_url: not set",
        "BRIDGE_COMMAND_QUEUE_URL",
        "events_topic_arn: not set",
        "BRIDGE_EVENTS_TOPIC_ARN",
    ] {
        assert!(stderr.contains(needed), "{needed}: {}", describe(&output));
    }
    assert!(output.stdout.is_empty(), "{}", describe(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_settings_exit_2_naming_the_setting_before_serving() {
    let dir = TempDir::new("cli-ranges");
    for (name, value, setting) in [
        (
            "BRIDGE_ACK_TIMEOUT_SECS",
            "0",
            "ack_timeout_secs: 0 is outside 1..=43200",
        ),
        (
            "BRIDGE_ACK_TIMEOUT_SECS",
            "100000000000000",
            "ack_timeout_secs: 100000000000000 is outside 1..=43200",
        ),
        (
            "BRIDGE_OUTBOUND_QUEUE",
            "100000000000",
            "outbound_queue: 100000000000 is outside 1..=65536",
        ),
        ("BRIDGE_POLLERS", "0", "pollers: 0 is outside 1..=64"),
    ] {
        for subcommand in ["serve", "dev"] {
            let mut command = wsbridge(dir.path());
            with_moto(&mut command);
            command
                .arg(subcommand)
                .env("BRIDGE_PORT", "0")
                .env(name, value);
            let output = run(command).await;
            assert_eq!(
                output.status.code(),
                Some(2),
                "{subcommand} {name}={value}: {}",
                describe(&output)
            );
            let stderr = text(&output.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{}", describe(&output));
            assert!(lines[0].contains(setting), "{}", describe(&output));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_is_available_on_every_subcommand() {
    let dir = TempDir::new("cli-help");
    let cases: [(&[&str], &str); 7] = [
        (&["--help"], "send-command"),
        (&["serve", "--help"], "--port"),
        (&["dev", "--help"], "--port"),
        (&["dev", "--help"], "--endpoint"),
        (&["emulator", "--help"], "--port"),
        (&["send-command", "--help"], "--via-topic"),
        (&["monitor", "--help"], "--count"),
    ];
    for (args, mentions) in cases {
        let mut command = wsbridge(dir.path());
        command.args(args);
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            describe(&output)
        );
        let stdout = text(&output.stdout);
        assert!(stdout.contains("Usage"), "{args:?}: {stdout}");
        assert!(stdout.contains(mentions), "{args:?}: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let dir = TempDir::new("cli-usage");
    let cases: [&[&str]; 5] = [
        &[],
        &["no-such-command"],
        &["send-command", "this is not json"],
        &["send-command", r#"{"client_id": "", "command": "x"}"#],
        &[
            "send-command",
            "--raw",
            "--via-topic",
            r#"{"client_id":"c","command":"x"}"#,
        ],
    ];
    for args in cases {
        let mut command = wsbridge(dir.path());
        command.args(args);
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(!output.stderr.is_empty(), "{args:?}: {}", describe(&output));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_puts_an_envelope_on_the_queue() {
    let aws = testkit::moto().aws().await;
    let queue = aws.create_queue(&testkit::unique_name("cli-send")).await;
    let dir = TempDir::new("cli-send");
    let sent =
        json!({"client_id": "client123", "command": "test", "data": {"x": [1, 2]}, "more": "kept"});
    let mut command = wsbridge(dir.path());
    with_moto(&mut command);
    command
        .env("BRIDGE_COMMAND_QUEUE_URL", &queue.url)
        .args(["send-command", &sent.to_string()]);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let got = aws.receive_at_least(&queue.url, 1, PATIENCE).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].is_sns_envelope(), "{}", got[0].body);
    let payload: Value = serde_json::from_str(&got[0].payload()).unwrap();
    assert_eq!(payload, sent);
    // The bridge's own decoder reads it back as the Command.
    let decoded = domain::decode_sqs_body(&got[0].body).unwrap();
    assert_eq!(decoded.client_id.as_str(), "client123");
    assert!(decoded.sns_message_id.is_some());
    // It prints the SQS message id.
    assert_eq!(text(&output.stdout).trim(), got[0].message_id);
    assert!(aws
        .receive_all(&queue.url, Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_raw_puts_the_bare_command() {
    let aws = testkit::moto().aws().await;
    let queue = aws.create_queue(&testkit::unique_name("cli-raw")).await;
    let dir = TempDir::new("cli-raw");
    let sent = json!({"client_id": "c-raw", "command": "bare"});
    let mut command = wsbridge(dir.path());
    with_moto(&mut command);
    command.env("BRIDGE_COMMAND_QUEUE_URL", &queue.url).args([
        "send-command",
        "--raw",
        &sent.to_string(),
    ]);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let got = aws.receive_at_least(&queue.url, 1, PATIENCE).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(!got[0].is_sns_envelope(), "{}", got[0].body);
    assert_eq!(got[0].json(), sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_command_via_topic_publishes_to_the_commands_topic() {
    let aws = testkit::moto().aws().await;
    let topic = aws.create_topic(&testkit::unique_name("cli-topic")).await;
    let queue = aws.create_queue(&testkit::unique_name("cli-topic")).await;
    aws.subscribe_queue(&topic, &queue, false).await;
    let dir = TempDir::new("cli-topic");
    let sent = json!({"client_id": "c-topic", "command": "via", "data": null});
    let mut command = wsbridge(dir.path());
    with_moto(&mut command);
    command.env("BRIDGE_COMMANDS_TOPIC_ARN", &topic).args([
        "send-command",
        "--via-topic",
        &sent.to_string(),
    ]);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));

    let got = aws.receive_at_least(&queue.url, 1, PATIENCE).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].is_sns_envelope(), "{}", got[0].body);
    let payload: Value = serde_json::from_str(&got[0].payload()).unwrap();
    assert_eq!(payload, sent);
    assert_eq!(
        got[0]
            .published_attributes()
            .get("client_id")
            .map(String::as_str),
        Some("c-topic")
    );
    // …and the shard sharded replicas filter on (of the default 4096).
    let shard = domain::shard_of(&domain::ClientId::parse("c-topic").unwrap(), 4096);
    assert_eq!(
        got[0].published_attributes().get("shard"),
        Some(&shard.to_string())
    );
    // It prints the SNS message id.
    assert_eq!(
        got[0].json()["MessageId"].as_str(),
        Some(text(&output.stdout).trim())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_dev_reads_the_dotenv_file_and_it_never_overrides_the_environment() {
    let dir = TempDir::new("cli-dotenv");
    dir.write(
        ".env",
        "BRIDGE_COMMAND_QUEUE_URL=https://sqs.eu-west-1.amazonaws.com/1/from-dotenv\n\
         BRIDGE_EVENTS_TOPIC_ARN=arn:aws:sns:eu-west-1:1:from-dotenv\n\
         BRIDGE_PORT=abc\n",
    );

    // `dev` reads it: BRIDGE_PORT from .env alone is invalid.
    let mut command = wsbridge(dir.path());
    command.arg("dev");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("port") && stderr.contains("abc"),
        "{}",
        describe(&output)
    );

    // Set in the environment, the variable wins over .env.
    let mut command = wsbridge(dir.path());
    command.env("BRIDGE_PORT", "70000").arg("dev");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("70000"), "{}", describe(&output));
    assert!(!stderr.contains("abc"), "{}", describe(&output));

    // Every other command ignores it: `config` shows neither the port nor
    // the queue of .env, and `serve` does not find its queue and topic there.
    let mut command = wsbridge(dir.path());
    command.args(["config", "--format", "json"]);
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let shown: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(shown["port"], 8000, "{shown}");
    assert_eq!(shown["command_queue_url"], Value::Null, "{shown}");

    let mut command = wsbridge(dir.path());
    command.arg("serve");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("command_queue_url: not set") && !stderr.contains("port"),
        "{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotenv_file_that_cannot_be_parsed_stops_dev_naming_it() {
    let dir = TempDir::new("cli-dotenv-bad");
    dir.write(".env", "BRIDGE_PORT=8000\nthis is not an assignment\n");
    let mut command = wsbridge(dir.path());
    command.arg("dev");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        text(&output.stderr).starts_with("wsbridge: .env: "),
        "{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_variable_stops_serve_and_dev_naming_it_and_the_setting_it_resembles() {
    let expected = "unknown environment variable BRIDGE_ACK_TIMOUT_SECS \
                    (did you mean BRIDGE_ACK_TIMEOUT_SECS?)";
    let dir = TempDir::new("cli-typo-env");
    let mut command = wsbridge(dir.path());
    command
        .arg("serve")
        .env("BRIDGE_ACK_TIMOUT_SECS", "3")
        .env("BRIDGE_COMMAND_QUEUE_URL", "http://127.0.0.1:1/1/q")
        .env("BRIDGE_EVENTS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:e");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains(expected),
        "{}",
        describe(&output)
    );

    // The same name in `.env`, which `dev` reads into its environment.
    let dir = TempDir::new("cli-typo-dotenv");
    dir.write(".env", "BRIDGE_ACK_TIMOUT_SECS=3\n");
    let mut command = wsbridge(dir.path());
    command.arg("dev");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains(expected),
        "{}",
        describe(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_beyond_loopback_without_auth_or_origins_exits_2_naming_the_fixes() {
    let dir = TempDir::new("cli-open");
    let mut command = wsbridge(dir.path());
    command
        .arg("serve")
        .env("BRIDGE_HOST", "0.0.0.0")
        .env("BRIDGE_COMMAND_QUEUE_URL", "http://127.0.0.1:1/1/q")
        .env("BRIDGE_EVENTS_TOPIC_ARN", "arn:aws:sns:us-east-1:1:e");
    let output = run(command).await;
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{}", describe(&output));
    for fix in ["allow_insecure", "auth = \"jwt\"", "allowed_origins"] {
        assert!(stderr.contains(fix), "{fix}: {}", describe(&output));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_bridge_allowed_with_allow_insecure_warns_at_start() {
    let moto = testkit::moto();
    let arn = |name: &str| format!("arn:aws:sns:us-east-1:123456789012:{name}");
    let dir = TempDir::new("cli-open-allowed");
    let mut command = wsbridge(dir.path());
    with_moto(&mut command);
    command
        .env(
            "BRIDGE_COMMAND_QUEUE_URL",
            format!(
                "{}/123456789012/{}",
                moto.endpoint(),
                testkit::unique_name("cli-open")
            ),
        )
        .env(
            "BRIDGE_EVENTS_TOPIC_ARN",
            arn(&testkit::unique_name("cli-open-events")),
        )
        .env("BRIDGE_HOST", "0.0.0.0")
        .env("BRIDGE_ALLOW_INSECURE", "true")
        .env("BRIDGE_PORT", "0")
        .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
        .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
        .arg("dev");
    let mut child = command.spawn().expect("spawning wsbridge dev");
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let warning = wait_for_line(&mut lines, &mut seen, "allow_insecure = true").await;
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("0.0.0.0"), "{warning}");
    wait_for_line(&mut lines, &mut seen, "demo page").await;
    signal(&child, "-TERM");
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("dev did not stop on SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
}

/// Subscriptions of a topic, as (subscription ARN, endpoint).
async fn subscriptions(aws: &testkit::Aws, topic: &str) -> Vec<(String, String)> {
    let out = aws
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(topic)
        .send()
        .await
        .unwrap();
    out.subscriptions()
        .iter()
        .map(|s| {
            (
                s.subscription_arn().unwrap_or_default().to_owned(),
                s.endpoint().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_prints_a_published_event_and_cleans_up() {
    let aws = testkit::moto().aws().await;
    let topic = aws.create_topic(&testkit::unique_name("cli-monitor")).await;
    let dir = TempDir::new("cli-monitor");
    let mut command = wsbridge(dir.path());
    with_moto(&mut command);
    command
        .env("BRIDGE_EVENTS_TOPIC_ARN", &topic)
        .args(["monitor", "--count", "1"]);
    let child = command.spawn().expect("spawning wsbridge monitor");

    // Its queue is subscribed once the subscription shows up.
    wait_until("the monitor's subscription", || {
        let aws = aws.clone();
        let topic = topic.clone();
        async move { !subscriptions(&aws, &topic).await.is_empty() }
    })
    .await;
    let monitor_queue_arn = subscriptions(&aws, &topic).await[0].1.clone();

    let event = json!({"action": "clicked", "client_id": "c-mon", "data": {"k": "v"}});
    let message_id = aws
        .publish(
            &topic,
            &event.to_string(),
            &[("client_id", "c-mon"), ("action", "clicked")],
        )
        .await;

    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("monitor --count 1 did not exit")
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", describe(&output));
    let line: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(line["message"], event, "{line}");
    assert_eq!(
        line["attributes"],
        json!({"client_id": "c-mon", "action": "clicked"}),
        "{line}"
    );
    assert_eq!(line["message_id"], json!(message_id), "{line}");

    // Cleaned up: no subscription left, the temporary queue is gone.
    assert!(subscriptions(&aws, &topic).await.is_empty());
    let queue_name = monitor_queue_arn.rsplit(':').next().unwrap().to_owned();
    let lookup = aws.sqs.get_queue_url().queue_name(&queue_name).send().await;
    assert!(lookup.is_err(), "monitor queue {queue_name} still exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_cleans_up_on_ctrl_c() {
    let aws = testkit::moto().aws().await;
    let topic = aws
        .create_topic(&testkit::unique_name("cli-monitor-int"))
        .await;
    let dir = TempDir::new("cli-monitor-int");
    let mut command = wsbridge(dir.path());
    with_moto(&mut command);
    command
        .env("BRIDGE_EVENTS_TOPIC_ARN", &topic)
        .arg("monitor")
        .stdout(Stdio::null());
    let mut child = command.spawn().expect("spawning wsbridge monitor");
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    wait_for_line(&mut lines, &mut seen, "Ctrl-C to stop").await;
    let subscribed = subscriptions(&aws, &topic).await;
    assert_eq!(subscribed.len(), 1, "{subscribed:?}");
    let queue_name = subscribed[0].1.rsplit(':').next().unwrap().to_owned();
    // The handler is installed right after that line is printed.
    tokio::time::sleep(Duration::from_millis(200)).await;

    signal(&child, "-INT");
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .expect("monitor did not stop on SIGINT")
        .unwrap();
    drain_lines(&mut lines, &mut seen).await;
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    assert!(subscriptions(&aws, &topic).await.is_empty());
    let lookup = aws.sqs.get_queue_url().queue_name(&queue_name).send().await;
    assert!(lookup.is_err(), "monitor queue {queue_name} still exists");
}

/// Sends `kill <sig> <pid>` to the child.
pub(crate) fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("child pid").to_string();
    let status = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// Waits (bounded) for a stderr line containing `needle`; returns it.
pub(crate) async fn wait_for_line(
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let line = match tokio::time::timeout_at(deadline, lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("wsbridge ended its stderr:\n{}", seen.join("\n")),
            Err(_) => panic!("no line with {needle:?}:\n{}", seen.join("\n")),
        };
        seen.push(line.clone());
        if line.contains(needle) {
            return line;
        }
    }
}

/// Collects what is left of the child's stderr (bounded).
pub(crate) async fn drain_lines(
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
) {
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_millis(500), lines.recv()).await
    {
        seen.push(line);
    }
}

/// Forwards the child's stderr lines to a channel (and keeps them for messages).
pub(crate) fn stderr_lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The port of the demo page URL (`http://127.0.0.1:PORT/`) the binary logs
/// once it serves (other lines hold moto's URL).
pub(crate) async fn served_port(
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
) -> u16 {
    let line = wait_for_line(lines, seen, "demo page").await;
    let rest = line
        .split("http://127.0.0.1:")
        .nth(1)
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("no port in {line:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_creates_the_resources_serves_and_stops_on_sigterm() {
    let aws = testkit::moto().aws().await;
    let moto = testkit::moto();
    let queue_name = testkit::unique_name("cli-dev");
    let events = testkit::unique_name("cli-dev-events");
    let commands = testkit::unique_name("cli-dev-commands");
    let arn = |name: &str| format!("arn:aws:sns:us-east-1:123456789012:{name}");
    let dir = TempDir::new("cli-dev");
    let mut command = wsbridge(dir.path());
    with_moto(&mut command);
    command
        .env(
            "BRIDGE_COMMAND_QUEUE_URL",
            format!("{}/123456789012/{queue_name}", moto.endpoint()),
        )
        .env("BRIDGE_EVENTS_TOPIC_ARN", arn(&events))
        .env("BRIDGE_COMMANDS_TOPIC_ARN", arn(&commands))
        .env("BRIDGE_PORT", "0")
        .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
        .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
        .arg("dev");
    let mut child = command.spawn().expect("spawning wsbridge dev");
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let port = served_port(&mut lines, &mut seen).await;

    // The queue, its DLQ with the redrive policy, both topics and the
    // commands topic → queue subscription exist.
    let queue_url = aws
        .sqs
        .get_queue_url()
        .queue_name(&queue_name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("queue {queue_name} not created: {e:?}"))
        .queue_url
        .unwrap();
    let dlq_url = aws
        .sqs
        .get_queue_url()
        .queue_name(format!("{queue_name}-dlq"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("DLQ of {queue_name} not created: {e:?}"))
        .queue_url
        .unwrap();
    let dlq_arn = aws.queue_arn(&dlq_url).await;
    let attributes = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let redrive: Value = serde_json::from_str(
        attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
            .expect("no redrive policy"),
    )
    .unwrap();
    assert_eq!(redrive["deadLetterTargetArn"], json!(dlq_arn), "{redrive}");
    for topic in [arn(&events), arn(&commands)] {
        aws.sns
            .get_topic_attributes()
            .topic_arn(&topic)
            .send()
            .await
            .unwrap_or_else(|e| panic!("topic {topic} not created: {e:?}"));
    }
    let queue_arn = aws.queue_arn(&queue_url).await;
    let subscribed = subscriptions(&aws, &arn(&commands)).await;
    assert!(
        subscribed
            .iter()
            .any(|(_, endpoint)| *endpoint == queue_arn),
        "{subscribed:?}"
    );

    // It serves.
    let health = reqwest::get(format!("http://127.0.0.1:{port}/health"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    // SIGTERM: a clean exit within the shutdown deadline.
    signal(&child, "-TERM");
    let started = Instant::now();
    let limit = Duration::from_secs(SHUTDOWN_SECS + 2);
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .unwrap_or_else(|_| panic!("wsbridge dev did not exit within {limit:?}"))
        .unwrap();
    drain_lines(&mut lines, &mut seen).await;
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
    assert!(
        started.elapsed() <= Duration::from_secs(SHUTDOWN_SECS),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_without_names_makes_its_own_and_the_helpers_find_them() {
    // A region of its own: nothing else in the shared moto uses these names there.
    const REGION: &str = "eu-south-2";
    let dir = TempDir::new("cli-dev-names");
    let mut command = wsbridge(dir.path());
    with_moto(&mut command);
    command
        .env("AWS_REGION", REGION)
        .env("BRIDGE_PORT", "0")
        .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
        .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
        .arg("dev");
    let mut child = command.spawn().expect("spawning wsbridge dev");
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let port = served_port(&mut lines, &mut seen).await;

    // send-command finds the queue and the topic by their names.
    for args in [
        vec!["send-command", r#"{"client_id":"c1","command":"x"}"#],
        vec![
            "send-command",
            "--via-topic",
            r#"{"client_id":"c1","command":"y"}"#,
        ],
    ] {
        let mut send = wsbridge(dir.path());
        with_moto(&mut send);
        send.env("AWS_REGION", REGION).args(&args);
        let output = run(send).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            !text(&output.stdout).trim().is_empty(),
            "{}",
            describe(&output)
        );
    }
    let health = reqwest::get(format!("http://127.0.0.1:{port}/ready"))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(SHUTDOWN_SECS + 2), child.wait())
        .await
        .expect("wsbridge dev exits after SIGTERM")
        .unwrap();
    drain_lines(&mut lines, &mut seen).await;
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
}
