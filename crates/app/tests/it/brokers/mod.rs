//! One behaviour suite, two brokers: the end-to-end behaviours of the bridge
//! that do not depend on which broker is behind it, written once against
//! [`Broker`] and run against SNS/SQS — emulated by moto, and by the
//! embedded emulator (`crates/emulator`, `wsbridge dev`'s default backend,
//! held to moto's behaviour here) — and RabbitMQ (AMQP).
//!
//! Each behaviour is a plain `async fn(Broker)`; [`both_brokers!`] turns it
//! into a module with three tests, `<behaviour>::moto`,
//! `<behaviour>::emulator` and `<behaviour>::rabbit` (so `cargo nextest run
//! -p app brokers::` runs the suite, `… rabbit` one broker's part).
//!
//! What differs per broker lives in [`sns_sqs`] and [`rabbit`], behind
//! [`TestEnv`]: fresh, uniquely named resources per test; the bridge's
//! settings and connection; putting a Command on the command queue (bare,
//! or enveloped: through the SNS commands topic / the commands exchange);
//! an observer of published events (a queue subscribed to the events topic
//! / bound to the events exchange); the messages the command queue still
//! holds; and the dead letters.
//!
//! RabbitMQ is the one at `WSBRIDGE_TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`); its queue counts come from
//! `rabbitmqctl`, so it must be the local node.

use std::collections::BTreeMap;
use std::time::Duration;

use app::broker::Connection;
use app::config::{Config, Settings};
use app::startup::Application;
use serde_json::Value;

use crate::support::{Bridge, PATIENCE, QUIET};

pub(crate) mod rabbit;
mod rabbit_hardening;
mod sns_sqs;

/// Defines, for each named `async fn(Broker)` of the enclosing module, a
/// module of that name with the tests `moto`, `emulator` and `rabbit`.
macro_rules! both_brokers {
    ($($behaviour:ident),+ $(,)?) => {$(
        mod $behaviour {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn moto() {
                super::$behaviour($crate::brokers::Broker::Moto).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn emulator() {
                super::$behaviour($crate::brokers::Broker::Emulator).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rabbit() {
                super::$behaviour($crate::brokers::Broker::Rabbit).await;
            }
        }
    )+};
}

mod acks;
mod control;
mod downlink;
mod presence;
mod unacked_limit;
mod unacknowledged;
mod uplink;

/// The broker behind a bridge under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// SNS/SQS, emulated by moto.
    Moto,
    /// SNS/SQS, emulated by the embedded emulator (one per test).
    Emulator,
    /// RabbitMQ (AMQP 0-9-1).
    Rabbit,
}

/// How the resources of a test are made.
#[derive(Debug, Clone, Copy)]
pub struct Resources {
    /// SQS: receives after which the redrive policy moves a message to the
    /// dead-letter queue. (RabbitMQ dead-letters a rejected message at once.)
    pub max_receive_count: u32,
    /// SQS: the command queue's visibility timeout, when not moto's default
    /// of 30 s.
    pub visibility_timeout_secs: Option<u32>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            max_receive_count: 5,
            visibility_timeout_secs: None,
        }
    }
}

impl Resources {
    /// A message the bridge leaves alone reaches the dead-letter queue
    /// within seconds (SQS: 1 s visibility timeout, moved at the 2nd receive).
    pub fn fast_redrive() -> Self {
        Self {
            max_receive_count: 2,
            visibility_timeout_secs: Some(1),
        }
    }
}

impl Broker {
    /// Fresh resources with [`Resources::default`].
    pub async fn env(self) -> TestEnv {
        self.env_with(Resources::default()).await
    }

    /// Fresh, uniquely named resources: the command queue with its
    /// dead-letter queue, the commands topic / exchange feeding it, and the
    /// events topic / exchange, made by the bridge's own bootstrap.
    pub async fn env_with(self, resources: Resources) -> TestEnv {
        match self {
            Broker::Moto => {
                TestEnv::Aws(sns_sqs::AwsEnv::new(resources, sns_sqs::Backend::Moto).await)
            }
            Broker::Emulator => {
                TestEnv::Aws(sns_sqs::AwsEnv::new(resources, sns_sqs::Backend::Emulator).await)
            }
            Broker::Rabbit => TestEnv::Rabbit(rabbit::RabbitEnv::new().await),
        }
    }
}

/// Messages the command queue still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pending {
    /// Waiting to be received (SQS: visible; AMQP: ready).
    pub ready: u64,
    /// Received and not settled, or released and waiting out a delay
    /// (SQS: in flight; AMQP: unacknowledged, plus the delay queue).
    pub held: u64,
}

impl Pending {
    /// Nothing left.
    pub const NONE: Self = Self { ready: 0, held: 0 };

    /// `ready` and `held`.
    pub const fn new(ready: u64, held: u64) -> Self {
        Self { ready, held }
    }
}

/// One event published by the bridge, as a subscriber sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The published JSON (the ClientMessage with the server's `client_id`).
    pub body: Value,
    /// SNS message attributes / AMQP headers.
    pub attributes: BTreeMap<String, String>,
}

/// A message taken from the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLettered {
    /// The body, as the bridge received it.
    pub body: String,
    /// SQS message attributes / AMQP headers with text values (among them
    /// `wsbridge_reason` and `wsbridge_detail`).
    pub attributes: BTreeMap<String, String>,
}

impl DeadLettered {
    /// The `wsbridge_reason` the bridge gave it.
    pub fn reason(&self) -> Option<&str> {
        self.attributes
            .get(domain::REASON_ATTRIBUTE)
            .map(String::as_str)
    }
}

/// The resources of one test on one broker.
pub enum TestEnv {
    /// On SNS/SQS (moto or the embedded emulator).
    Aws(sns_sqs::AwsEnv),
    /// On RabbitMQ.
    Rabbit(rabbit::RabbitEnv),
}

impl TestEnv {
    /// Settings for a bridge over these resources (a fast test bridge: any
    /// free port, one worker, short receive waits and shutdown deadline).
    pub fn settings(&self) -> Settings {
        match self {
            TestEnv::Aws(env) => env.settings(),
            TestEnv::Rabbit(env) => env.settings(),
        }
    }

    /// How the bridge reaches the broker.
    pub async fn connection(&self) -> Connection {
        match self {
            TestEnv::Aws(env) => env.connection().await,
            TestEnv::Rabbit(_) => Connection::Amqp,
        }
    }

    /// Starts a bridge with [`TestEnv::settings`], adjusted by `adjust`.
    pub async fn bridge(&self, adjust: impl FnOnce(&mut Settings)) -> Bridge {
        let mut settings = self.settings();
        adjust(&mut settings);
        start_bridge(settings, self.connection().await).await
    }

    /// Puts `body` on the command queue the way a backend would: bare,
    /// straight into the queue, or `enveloped`: through the commands topic
    /// (SNS wraps it in its notification envelope) / in an SNS-style
    /// envelope through the commands exchange.
    pub async fn send_command(&self, body: &str, enveloped: bool) {
        match self {
            TestEnv::Aws(env) => env.send_command(body, enveloped).await,
            TestEnv::Rabbit(env) => env.send_command(body, enveloped).await,
        }
    }

    /// Starts watching what the bridge publishes (only events published
    /// from now on are seen).
    pub async fn events_observer(&self) -> Observer {
        match self {
            TestEnv::Aws(env) => Observer::Aws(env.events_observer().await),
            TestEnv::Rabbit(env) => Observer::Rabbit(env.events_observer().await),
        }
    }

    /// What the command queue holds right now.
    pub async fn pending_commands(&self) -> Pending {
        match self {
            TestEnv::Aws(env) => env.pending_commands().await,
            TestEnv::Rabbit(env) => env.pending_commands().await,
        }
    }

    /// [`TestEnv::pending_commands`], polled until it is `expected` or
    /// [`PATIENCE`] has passed; returns the last answer (assert on it).
    pub async fn wait_for_pending(&self, expected: Pending) -> Pending {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let pending = self.pending_commands().await;
            if pending == expected || tokio::time::Instant::now() >= deadline {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Takes the bodies from the dead-letter queue until at least
    /// `at_least` have arrived or [`PATIENCE`] has passed, then whatever
    /// else arrives within a short while.
    pub async fn dead_letters(&self, at_least: usize) -> Vec<DeadLettered> {
        match self {
            TestEnv::Aws(env) => env.dead_letters(at_least).await,
            TestEnv::Rabbit(env) => env.dead_letters(at_least).await,
        }
    }
}

/// Watches the events topic / exchange.
pub enum Observer {
    /// A queue subscribed to the SNS events topic (raw delivery off).
    Aws(sns_sqs::AwsObserver),
    /// A temporary queue bound to the events exchange (`#`).
    Rabbit(rabbit::RabbitObserver),
}

impl Observer {
    /// Takes events until at least `at_least` have arrived or [`PATIENCE`]
    /// has passed; returns what arrived either way (assert on the length).
    pub async fn events(&mut self, at_least: usize) -> Vec<Event> {
        match self {
            Observer::Aws(observer) => observer.events(at_least, PATIENCE).await,
            Observer::Rabbit(observer) => observer.events(at_least, PATIENCE).await,
        }
    }

    /// Fails the test when any event arrives within [`QUIET`].
    pub async fn assert_quiet(&mut self) {
        let seen = match self {
            Observer::Aws(observer) => observer.all_within(QUIET).await,
            Observer::Rabbit(observer) => observer.all_within(QUIET).await,
        };
        assert!(seen.is_empty(), "expected no more events, got {seen:?}");
    }
}

/// Builds the application over `connection` and runs it in a task of the
/// test's runtime.
pub async fn start_bridge(settings: Settings, connection: Connection) -> Bridge {
    let app = Application::build(Config::new(settings).expect("valid settings"), connection)
        .await
        .unwrap_or_else(|e| panic!("Application::build failed: {e:#}"));
    let port = app.port();
    let shutdown = app.shutdown_token();
    let stats = app.stats();
    let aws_metrics = app.aws_metrics();
    let admin_port = app.admin_port();
    let broker = app.broker_status();
    let task =
        tokio::spawn(async move { app.run_until_stopped().await.map_err(|e| format!("{e:#}")) });
    Bridge {
        port,
        shutdown,
        stats,
        aws_metrics,
        task: Some(task),
        admin_port,
        broker,
    }
}

/// Parses a published body.
fn json(body: &str) -> Value {
    serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("published body is not JSON ({e}): {body}"))
}
