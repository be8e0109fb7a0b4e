//! The embedded SQS/SNS emulator from the command line (docs/operations.md): `dev`
//! without an endpoint starts it, prints the `export` lines on stdout, and
//! the helper commands given those lines reach the bridge through it;
//! `wsbridge emulator` runs it alone; `dev --endpoint` uses the endpoint
//! given instead.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

use crate::cli::{
    describe, drain_lines, run, served_port, signal, stderr_lines, text, wait_for_line, wsbridge,
};
use crate::support::{client_id, connect, next_json, wait_until, TempDir, PATIENCE, SHUTDOWN_SECS};

/// Forwards the child's stdout lines to a channel.
fn stdout_lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The variables of the `export NAME=VALUE …` lines printed on stdout,
/// read until the one with `AWS_ENDPOINT_URL` and then for a short while.
async fn exports(lines: &mut mpsc::UnboundedReceiver<String>) -> BTreeMap<String, String> {
    let mut seen = Vec::new();
    wait_for_line(lines, &mut seen, "export AWS_ENDPOINT_URL=").await;
    drain_lines(lines, &mut seen).await;
    let mut vars = BTreeMap::new();
    for line in &seen {
        let Some(assignments) = line.strip_prefix("export ") else {
            continue;
        };
        for assignment in assignments.split_whitespace() {
            let (name, value) = assignment
                .split_once('=')
                .unwrap_or_else(|| panic!("not NAME=VALUE: {line:?}"));
            vars.insert(name.to_owned(), value.to_owned());
        }
    }
    vars
}

fn with_exports(command: &mut Command, exports: &BTreeMap<String, String>) {
    for (name, value) in exports {
        command.env(name, value);
    }
}

async fn stop(
    mut child: Child,
    lines: &mut mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
) {
    signal(&child, "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(SHUTDOWN_SECS + 2), child.wait())
        .await
        .expect("wsbridge exits after SIGTERM")
        .unwrap();
    drain_lines(lines, seen).await;
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_without_an_endpoint_runs_the_emulator_and_send_command_reaches_a_client() {
    let dir = TempDir::new("dev-emulator");
    // No AWS_* variable at all (wsbridge() removes the test's): no
    // endpoint, region or credentials.
    let mut command = wsbridge(dir.path());
    command
        .env("BRIDGE_EMULATOR_PORT", "0")
        .env("BRIDGE_PORT", "0")
        .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
        .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
        .arg("dev");
    let mut child = command.spawn().expect("spawning wsbridge dev");
    let mut out = stdout_lines(&mut child);
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let exports = exports(&mut out).await;
    let endpoint = exports["AWS_ENDPOINT_URL"].clone();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{exports:?}");
    // The tools need a region and credentials; the environment had none.
    assert_eq!(exports["AWS_REGION"], "us-east-1", "{exports:?}");
    assert_eq!(exports["AWS_DEFAULT_REGION"], "us-east-1", "{exports:?}");
    assert!(exports.contains_key("AWS_ACCESS_KEY_ID"), "{exports:?}");
    assert!(exports.contains_key("AWS_SECRET_ACCESS_KEY"), "{exports:?}");
    let port = served_port(&mut lines, &mut seen).await;

    // dev made its resources on the emulator.
    let aws = testkit::Aws::new(testkit::sdk_config_at(&endpoint).await);
    let mut queues = aws
        .sqs
        .list_queues()
        .send()
        .await
        .unwrap()
        .queue_urls()
        .to_vec();
    queues.sort();
    assert_eq!(
        queues,
        [
            format!("{endpoint}/123456789012/wsbridge-commands"),
            format!("{endpoint}/123456789012/wsbridge-commands-dlq"),
        ]
    );

    let id = client_id("dev-emu");
    let mut ws = connect(&format!("ws://127.0.0.1:{port}/ws?client_id={id}")).await;
    wait_until("/ready answers 200", || {
        let url = format!("http://127.0.0.1:{port}/ready");
        async move { reqwest::get(&url).await.map(|r| r.status().as_u16()).ok() == Some(200) }
    })
    .await;
    for (args, name) in [(vec![], "by-queue"), (vec!["--via-topic"], "by-topic")] {
        let json = format!(r#"{{"command":"{name}","client_id":"{id}"}}"#);
        let mut send = wsbridge(dir.path());
        with_exports(&mut send, &exports);
        send.arg("send-command").args(&args).arg(&json);
        let output = run(send).await;
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        assert!(
            !text(&output.stdout).trim().is_empty(),
            "{}",
            describe(&output)
        );
        let got = next_json(&mut ws).await;
        assert_eq!(got["command"], name, "{got}");
        assert_eq!(got["client_id"], id.as_str(), "{got}");
    }

    stop(child, &mut lines, &mut seen).await;
    // The emulator stopped with it.
    let gone = reqwest::get(format!("{endpoint}/__stub/health")).await;
    assert!(gone.is_err(), "the emulator still answers: {gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_prints_for_the_other_shell_what_it_took_from_dotenv() {
    // `.env` gives dev its settings and AWS variables; the shell where the
    // helper commands run (they do not read .env) gets them from the
    // export lines: the region .env set, dummy credentials (never .env's).
    let dir = TempDir::new("dev-dotenv");
    dir.write(
        ".env",
        "AWS_REGION=eu-west-3\nAWS_ACCESS_KEY_ID=from-dotenv\n\
         AWS_SECRET_ACCESS_KEY=dotenv-secret\nBRIDGE_EMULATOR_PORT=0\nBRIDGE_PORT=0\n\
         BRIDGE_RECEIVE_WAIT_SECS=1\n",
    );
    let mut command = wsbridge(dir.path());
    command
        .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
        .arg("dev");
    let mut child = command.spawn().expect("spawning wsbridge dev");
    let mut out = stdout_lines(&mut child);
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let exports = exports(&mut out).await;
    assert_eq!(exports["AWS_REGION"], "eu-west-3", "{exports:?}");
    assert_eq!(exports["AWS_DEFAULT_REGION"], "eu-west-3", "{exports:?}");
    assert_eq!(exports["AWS_ACCESS_KEY_ID"], "test", "{exports:?}");
    assert_eq!(exports["AWS_SECRET_ACCESS_KEY"], "test", "{exports:?}");
    // The emulator ran in the region of .env (BRIDGE_EMULATOR_PORT=0 from
    // .env too: any free port).
    let port = served_port(&mut lines, &mut seen).await;
    assert_ne!(port, 8000);
    let aws = testkit::Aws::new(testkit::sdk_config_at(&exports["AWS_ENDPOINT_URL"]).await);
    let topics = aws.sns.list_topics().send().await.unwrap();
    assert!(
        topics
            .topics()
            .iter()
            .filter_map(|t| t.topic_arn())
            .any(|arn| arn.starts_with("arn:aws:sns:eu-west-3:")),
        "{topics:?}"
    );
    stop(child, &mut lines, &mut seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_command_serves_until_sigterm() {
    let dir = TempDir::new("emulator-cmd");
    let mut command = wsbridge(dir.path());
    command
        .env("AWS_REGION", "eu-west-3")
        .args(["emulator", "--port", "0"]);
    let mut child = command.spawn().expect("spawning wsbridge emulator");
    let mut out = stdout_lines(&mut child);
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let exports = exports(&mut out).await;
    // The region was set: only the endpoint and the credentials are printed.
    assert!(!exports.contains_key("AWS_REGION"), "{exports:?}");
    assert!(exports.contains_key("AWS_ACCESS_KEY_ID"), "{exports:?}");
    let endpoint = &exports["AWS_ENDPOINT_URL"];
    let aws = testkit::Aws::new(testkit::sdk_config_at(endpoint).await);
    let topic = aws.create_topic("emulator-cmd").await;
    // ARNs in the configured region.
    assert!(topic.starts_with("arn:aws:sns:eu-west-3:"), "{topic}");
    let queue = aws.create_queue("emulator-cmd").await;
    aws.send(&queue.url, "hello").await;
    let got = aws.receive_at_least(&queue.url, 1, PATIENCE).await;
    assert_eq!(got[0].body, "hello");
    stop(child, &mut lines, &mut seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_listens_on_the_host_given_and_passes_the_compose_healthcheck() {
    // As docker-compose.yml runs it: on every interface of its container.
    let dir = TempDir::new("emulator-host");
    let mut command = wsbridge(dir.path());
    command.args(["emulator", "--host", "0.0.0.0", "--port", "0"]);
    let mut child = command.spawn().expect("spawning wsbridge emulator");
    let mut out = stdout_lines(&mut child);
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    let exports = exports(&mut out).await;
    // Printed as a client reaches it: on loopback.
    let endpoint = exports["AWS_ENDPOINT_URL"].clone();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{exports:?}");
    let port = endpoint.rsplit(':').next().unwrap().to_owned();
    let listening = wait_for_line(&mut lines, &mut seen, "serving until Ctrl-C").await;
    assert!(
        listening.contains(&format!("0.0.0.0:{port}")),
        "{listening}"
    );
    // The compose file's healthcheck of this service.
    let mut health = wsbridge(dir.path());
    health.args(["health", "--url", &format!("{endpoint}/__stub/health")]);
    let output = run(health).await;
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    stop(child, &mut lines, &mut seen).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_emulator_port_fails_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("emulator-taken");
    for args in [
        vec!["emulator".to_owned(), "--port".to_owned(), port.to_string()],
        vec!["dev".to_owned()],
    ] {
        let mut command = wsbridge(dir.path());
        command
            .env("BRIDGE_EMULATOR_PORT", port.to_string())
            .env("BRIDGE_PORT", "0")
            .args(&args);
        let output = run(command).await;
        assert_eq!(
            output.status.code(),
            Some(1),
            "{args:?}: {}",
            describe(&output)
        );
        let stderr = text(&output.stderr);
        assert!(
            stderr.contains(&format!("127.0.0.1:{port}"))
                && stderr.contains("BRIDGE_EMULATOR_PORT"),
            "{args:?}: {}",
            describe(&output)
        );
        assert!(
            !text(&output.stdout).contains("export"),
            "{args:?}: {}",
            describe(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_with_an_endpoint_uses_it_and_starts_no_emulator() {
    let moto = testkit::moto();
    let queue_name = testkit::unique_name("dev-endpoint");
    let dir = TempDir::new("dev-endpoint");
    let mut command = wsbridge(dir.path());
    // Region and credentials from the environment, the endpoint by flag.
    for (name, value) in moto.env_vars() {
        if name != "AWS_ENDPOINT_URL" {
            command.env(name, value);
        }
    }
    command
        .env(
            "BRIDGE_COMMAND_QUEUE_URL",
            format!("{}/123456789012/{queue_name}", moto.endpoint()),
        )
        .env(
            "BRIDGE_EVENTS_TOPIC_ARN",
            format!("arn:aws:sns:us-east-1:123456789012:{queue_name}-events"),
        )
        .env(
            "BRIDGE_COMMANDS_TOPIC_ARN",
            format!("arn:aws:sns:us-east-1:123456789012:{queue_name}-commands"),
        )
        .env("BRIDGE_PORT", "0")
        .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
        .env("BRIDGE_SHUTDOWN_TIMEOUT_SECS", SHUTDOWN_SECS.to_string())
        .args(["dev", "--endpoint", moto.endpoint()]);
    let mut child = command.spawn().expect("spawning wsbridge dev");
    let mut out = stdout_lines(&mut child);
    let mut lines = stderr_lines(&mut child);
    let mut seen = Vec::new();
    served_port(&mut lines, &mut seen).await;
    let aws = moto.aws().await;
    aws.sqs
        .get_queue_url()
        .queue_name(&queue_name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("queue {queue_name} not created on moto: {e:?}"));
    stop(child, &mut lines, &mut seen).await;
    let mut printed = Vec::new();
    while let Ok(line) = out.try_recv() {
        printed.push(line);
    }
    assert!(
        printed.iter().all(|l| !l.contains("AWS_ENDPOINT_URL")),
        "{printed:?}"
    );
    assert!(
        seen.iter()
            .all(|l| !l.contains("embedded SQS/SNS emulator")),
        "{}",
        seen.join("\n")
    );
}
