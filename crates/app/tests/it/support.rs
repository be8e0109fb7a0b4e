//! Shared test support: a real bridge on an ephemeral port in front of a real
//! moto, real WebSocket clients, and bounded waits.
//!
//! Every test gets its own queue, dead-letter queue and topics (unique
//! names), so the tests share one moto and run in parallel.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_aws::bootstrap::{self, Infrastructure, Plan};
use adapters_aws::sdk::Clients;
use adapters_aws::AwsMetrics;
use app::config::{Config, Settings};
use app::startup::Application;
use aws_sdk_sqs::types::QueueAttributeName;
use domain::Stats;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use testkit::{Aws, TestQueue};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// A tokio-tungstenite client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The longest any single expectation may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(15);
/// How long "nothing arrives" is watched for.
pub const QUIET: Duration = Duration::from_millis(1500);
/// Shutdown deadline of test bridges.
pub const SHUTDOWN_SECS: u64 = 5;

/// A unique client id.
pub fn client_id(prefix: &str) -> String {
    testkit::unique_name(prefix)
}

// ---------------------------------------------------------------------------
// AWS side

/// The resources of one test: queue + DLQ + topics made by the bridge's own
/// bootstrap (which also subscribes the queue to the commands topic).
pub struct Env {
    /// Clients and helpers for moto (or the emulator).
    pub aws: Aws,
    /// What the bootstrap created.
    pub infra: Infrastructure,
}

impl Env {
    /// Bootstraps fresh resources; the redrive policy moves a message to the
    /// dead-letter queue after `max_receive_count` receives.
    pub async fn new(max_receive_count: u32) -> Self {
        Self::with_aws(testkit::moto().aws().await, max_receive_count).await
    }

    /// [`Env::new`] on the SNS/SQS that `aws` reaches (moto, or an
    /// embedded emulator).
    pub async fn with_aws(aws: Aws, max_receive_count: u32) -> Self {
        let plan = Plan {
            events_topic: testkit::unique_name("app-events"),
            commands_topic: testkit::unique_name("app-commands"),
            command_queue: testkit::unique_name("app-queue"),
            max_receive_count,
        };
        let infra = bootstrap::ensure(&aws.sqs, &aws.sns, &plan)
            .await
            .unwrap_or_else(|e| panic!("bootstrap failed: {e}"));
        Self { aws, infra }
    }

    /// Sets the command queue's visibility timeout (seconds).
    pub async fn set_visibility_timeout(&self, secs: u32) {
        set_visibility_timeout(&self.aws, &self.infra.command_queue_url, secs).await;
    }

    /// Settings for a bridge over these resources.
    pub fn settings(&self) -> Settings {
        test_settings(
            &self.infra.command_queue_url,
            &self.infra.events_topic_arn,
            Some(&self.infra.commands_topic_arn),
        )
    }

    /// Starts a bridge with [`Env::settings`], adjusted by `adjust`.
    pub async fn bridge(&self, adjust: impl FnOnce(&mut Settings)) -> Bridge {
        let mut settings = self.settings();
        adjust(&mut settings);
        Bridge::start(settings).await
    }

    /// A queue subscribed (SNS envelope, raw delivery off) to the events topic.
    pub async fn events_observer(&self) -> TestQueue {
        let queue = self
            .aws
            .create_queue(&testkit::unique_name("app-observer"))
            .await;
        self.aws
            .subscribe_queue(&self.infra.events_topic_arn, &queue, false)
            .await;
        queue
    }

    /// `(visible, in_flight)` of the command queue, polled until it is
    /// `expected` or [`PATIENCE`] has passed.
    pub async fn wait_for_queue_counts(&self, expected: (u64, u64)) -> (u64, u64) {
        self.aws
            .wait_for_counts(&self.infra.command_queue_url, expected, PATIENCE)
            .await
    }
}

/// Sets a queue's visibility timeout (seconds).
pub async fn set_visibility_timeout(aws: &Aws, queue_url: &str, secs: u32) {
    aws.sqs
        .set_queue_attributes()
        .queue_url(queue_url)
        .attributes(QueueAttributeName::VisibilityTimeout, secs.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("SetQueueAttributes VisibilityTimeout failed: {e:?}"));
}

/// Settings of a fast test bridge: any free port, one HTTP worker, short
/// long-polls, short shutdown deadline.
pub fn test_settings(
    queue_url: &str,
    events_topic: &str,
    commands_topic: Option<&str>,
) -> Settings {
    Settings {
        port: 0,
        workers: 1,
        command_queue_url: Some(queue_url.to_owned()),
        events_topic_arn: Some(events_topic.to_owned()),
        commands_topic_arn: commands_topic.map(str::to_owned),
        pollers: 2,
        receive_wait_secs: 1,
        shutdown_timeout_secs: SHUTDOWN_SECS,
        ..Settings::default()
    }
}

/// A Command JSON object for `client_id`, with a field the bridge does not know.
pub fn command(client_id: &str, name: &str) -> Value {
    serde_json::json!({
        "client_id": client_id,
        "command": name,
        "data": {"n": 1, "list": [1, "two", null]},
        "unknown_extra": {"kept": true},
    })
}

/// A hand-made SNS notification envelope around `message`.
pub fn envelope(message_id: &str, message: &str) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:app-tests",
        "Message": message,
        "Timestamp": "2024-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "",
        "UnsubscribeURL": "",
    })
    .to_string()
}

// ---------------------------------------------------------------------------
// The bridge

/// A bridge serving in a task of the test's runtime.
pub struct Bridge {
    /// The port it listens on.
    pub port: u16,
    /// Cancel to shut it down.
    pub shutdown: CancellationToken,
    /// Its counters.
    pub stats: Arc<Stats>,
    /// `broker = "aws"`: what its SQS source and SNS sink counted.
    pub aws_metrics: Option<AwsMetrics>,
    /// `run_until_stopped`, with the error rendered.
    pub task: Option<JoinHandle<Result<(), String>>>,
    /// The admin API's port, when it is on.
    pub admin_port: Option<u16>,
    /// Its broker adapters' readiness, with their detailed reasons.
    pub broker: app::broker::BrokerStatus,
}

impl Bridge {
    /// Builds the application with clients for the test moto and runs it.
    pub async fn start(settings: Settings) -> Self {
        Self::start_with(settings, &testkit::moto().sdk_config().await).await
    }

    /// Builds the application with clients made from `config` (e.g. one
    /// pointing at a `testkit::FaultProxy`) and runs it.
    pub async fn start_with(settings: Settings, config: &testkit::SdkConfig) -> Self {
        let app = Application::build(
            Config::new(settings).expect("valid settings"),
            Clients::from_config(config),
        )
        .await
        .unwrap_or_else(|e| panic!("Application::build failed: {e:#}"));
        let port = app.port();
        let shutdown = app.shutdown_token();
        let stats = app.stats();
        let aws_metrics = app.aws_metrics();
        let admin_port = app.admin_port();
        let broker = app.broker_status();
        let task =
            tokio::spawn(
                async move { app.run_until_stopped().await.map_err(|e| format!("{e:#}")) },
            );
        Self {
            port,
            shutdown,
            stats,
            aws_metrics,
            task: Some(task),
            admin_port,
            broker,
        }
    }

    /// What its SQS source and SNS sink counted (an AWS bridge's).
    pub fn aws(&self) -> &AwsMetrics {
        self.aws_metrics
            .as_ref()
            .expect("a bridge with broker = \"aws\"")
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn http(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `ws://127.0.0.1:PORT` + `path`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Connects a client through `/ws?client_id=ID`.
    pub async fn connect(&self, client_id: &str) -> Ws {
        connect(&self.ws_url(&format!("/ws?client_id={client_id}"))).await
    }

    /// Connects a client through `/ws/ID`.
    pub async fn connect_path(&self, client_id: &str) -> Ws {
        connect(&self.ws_url(&format!("/ws/{client_id}"))).await
    }

    /// Waits (bounded) until the consumer has received successfully once, so
    /// a Command sent afterwards is picked up by a running poller.
    pub async fn wait_until_polling(&self) {
        let aws = self.aws().clone();
        wait_until("the consumer's first successful receive", || {
            let healthy = aws.not_ready_reason().is_none();
            async move { healthy }
        })
        .await;
    }

    /// Cancels the shutdown token and waits for `run_until_stopped` to
    /// return; returns how long that took. Fails the test past the deadline
    /// (plus a second of slack) or when it returns an error.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        let task = self.task.take().expect("bridge already stopped");
        let limit = Duration::from_secs(SHUTDOWN_SECS + 1);
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(()))) => started.elapsed(),
            Ok(Ok(Err(e))) => panic!("run_until_stopped failed: {e}"),
            Ok(Err(e)) => panic!("bridge task panicked: {e}"),
            Err(_) => panic!("run_until_stopped did not return within {limit:?}"),
        }
    }
}

impl Bridge {
    /// Stops the bridge and returns what `run_until_stopped` reported,
    /// clean stop or not (bounded by the shutdown deadline and a second).
    pub async fn stop_with_result(mut self) -> Result<(), String> {
        self.shutdown.cancel();
        let task = self.task.take().expect("bridge already stopped");
        let limit = Duration::from_secs(SHUTDOWN_SECS + 1);
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => panic!("bridge task panicked: {e}"),
            Err(_) => panic!("run_until_stopped did not return within {limit:?}"),
        }
    }

    /// Stops the bridge and returns the error `run_until_stopped` reported:
    /// for tests of a shutdown that cannot finish in time.
    pub async fn stop_missing_its_deadline(mut self) -> String {
        self.shutdown.cancel();
        let task = self.task.take().expect("bridge already stopped");
        let limit = Duration::from_secs(SHUTDOWN_SECS + 1);
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(Ok(()))) => panic!("the shutdown was expected to miss its deadline"),
            Ok(Ok(Err(e))) => e,
            Ok(Err(e)) => panic!("bridge task panicked: {e}"),
            Err(_) => panic!("run_until_stopped did not return within {limit:?}"),
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // A test that failed half-way still stops its server.
        self.shutdown.cancel();
    }
}

// ---------------------------------------------------------------------------
// WebSocket clients

/// Connects a tokio-tungstenite client; panics with the HTTP answer when the
/// upgrade is refused.
pub async fn connect(url: &str) -> Ws {
    let Ok(connected) = tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(url)).await
    else {
        panic!("connecting to {url} timed out");
    };
    let (ws, response) = connected.unwrap_or_else(|e| panic!("connecting to {url} failed: {e}"));
    assert_eq!(response.status(), 101, "upgrade of {url}");
    ws
}

/// What the next data or close frame was.
#[derive(Debug)]
pub enum Next {
    /// A text frame.
    Text(String),
    /// A close frame (the client answers it).
    Close(Option<CloseFrame>),
    /// The stream ended without a close frame.
    Ended,
}

/// The next text or close frame within `within` (pings and pongs are
/// skipped); `None` when nothing came.
pub async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Next> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_elapsed) => return None,
            Ok(None) => return Some(Next::Ended),
            Ok(Some(Err(e))) => panic!("WebSocket read failed: {e}"),
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Text(text) => return Some(Next::Text(text.to_string())),
            Message::Close(frame) => return Some(Next::Close(frame)),
            Message::Binary(data) => panic!("unexpected binary frame: {data:?}"),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// The next text frame; fails the test on timeout, close or end.
/// Waits (bounded) for the close frame, and checks its code and reason.
pub async fn expect_close(ws: &mut Ws, code: u16, reason: &str) {
    match next_frame(ws, PATIENCE).await {
        Some(Next::Close(Some(close))) => {
            assert_eq!(
                (u16::from(close.code), close.reason.as_str()),
                (code, reason)
            );
        }
        other => panic!("expected a close frame {code} {reason:?}, got {other:?}"),
    }
}

pub async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws, PATIENCE).await {
        Some(Next::Text(text)) => text,
        other => panic!("expected a text frame within {PATIENCE:?}, got {other:?}"),
    }
}

/// The next text frame, parsed as JSON.
pub async fn next_json(ws: &mut Ws) -> Value {
    let text = next_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("frame is not JSON ({e}): {text}"))
}

/// Fails the test when any text or close frame arrives within `within`.
pub async fn assert_silent(ws: &mut Ws, within: Duration) {
    if let Some(frame) = next_frame(ws, within).await {
        panic!("expected nothing within {within:?}, got {frame:?}");
    }
}

/// Sends a text frame.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text))
        .await
        .expect("sending a text frame");
}

// ---------------------------------------------------------------------------
// Waiting

/// Polls `condition` every 50 ms until it holds; fails the test after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Files

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Self {
        let path = std::env::temp_dir().join(testkit::unique_name(prefix));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` inside the directory.
    pub fn write(&self, name: &str, contents: &str) {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, contents).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
