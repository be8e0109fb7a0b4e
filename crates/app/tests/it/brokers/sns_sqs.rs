//! The suite's SNS/SQS broker, on moto or on the embedded emulator: the
//! resources of `support::Env` (queue, dead-letter queue with a redrive
//! policy, commands and events topics, made by
//! `adapters_aws::bootstrap::ensure` under unique names). Moto is thrown
//! away at the end of the run and each test's emulator with its test, so
//! nothing is deleted.

use std::time::Duration;

use adapters_aws::sdk::Clients;
use app::broker::Connection;
use app::config::Settings;
use emulator::{Emulator, EmulatorConfig};
use testkit::{Aws, Received, TestQueue};

use super::{json, DeadLettered, Event, Pending, Resources};
use crate::support::{Env, PATIENCE};

/// What emulates SNS/SQS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The shared moto of the test run (`testkit::moto()`).
    Moto,
    /// An embedded emulator of the test's own, in-process on a free port.
    Emulator,
}

/// One test's resources on moto or the emulator.
pub struct AwsEnv {
    env: Env,
    /// The test's emulator, kept running as long as the resources.
    _emulator: Option<Emulator>,
}

impl AwsEnv {
    pub async fn new(resources: Resources, backend: Backend) -> Self {
        let (aws, emulator) = match backend {
            Backend::Moto => (testkit::moto().aws().await, None),
            Backend::Emulator => {
                let emulator = Emulator::start(EmulatorConfig::default())
                    .await
                    .expect("the embedded emulator starts on a free port");
                let aws = Aws::new(testkit::sdk_config_at(emulator.endpoint()).await);
                (aws, Some(emulator))
            }
        };
        let env = Env::with_aws(aws, resources.max_receive_count).await;
        if let Some(secs) = resources.visibility_timeout_secs {
            env.set_visibility_timeout(secs).await;
        }
        Self {
            env,
            _emulator: emulator,
        }
    }

    pub fn settings(&self) -> Settings {
        self.env.settings()
    }

    pub async fn connection(&self) -> Connection {
        Connection::Aws(Clients::from_config(&self.env.aws.config))
    }

    pub async fn send_command(&self, body: &str, enveloped: bool) {
        let infra = &self.env.infra;
        if enveloped {
            self.env
                .aws
                .publish(&infra.commands_topic_arn, body, &[])
                .await;
        } else {
            self.env.aws.send(&infra.command_queue_url, body).await;
        }
    }

    pub async fn events_observer(&self) -> AwsObserver {
        AwsObserver {
            aws: self.env.aws.clone(),
            queue: self.env.events_observer().await,
        }
    }

    pub async fn pending_commands(&self) -> Pending {
        let (visible, in_flight) = self
            .env
            .aws
            .queue_counts(&self.env.infra.command_queue_url)
            .await;
        Pending::new(visible, in_flight)
    }

    pub async fn dead_letters(&self, at_least: usize) -> Vec<DeadLettered> {
        let queue = &self.env.infra.dead_letter_queue_url;
        let mut got = self
            .env
            .aws
            .receive_at_least(queue, at_least, PATIENCE)
            .await;
        got.extend(self.env.aws.receive_all(queue, LINGER).await);
        got.into_iter()
            .map(|m| DeadLettered {
                body: m.body,
                attributes: m.attributes,
            })
            .collect()
    }
}

/// How long [`AwsEnv::dead_letters`] keeps looking for more.
const LINGER: Duration = Duration::from_millis(300);

/// A queue subscribed to the events topic with raw delivery off: each
/// event arrives in an SNS envelope, its attributes inside.
pub struct AwsObserver {
    aws: Aws,
    queue: TestQueue,
}

impl AwsObserver {
    pub async fn events(&self, at_least: usize, within: Duration) -> Vec<Event> {
        let got = self
            .aws
            .receive_at_least(&self.queue.url, at_least, within)
            .await;
        got.iter().map(event).collect()
    }

    pub async fn all_within(&self, within: Duration) -> Vec<Event> {
        let got = self.aws.receive_all(&self.queue.url, within).await;
        got.iter().map(event).collect()
    }
}

fn event(received: &Received) -> Event {
    assert!(
        received.is_sns_envelope(),
        "the events topic delivers SNS envelopes: {}",
        received.body
    );
    Event {
        body: json(&received.payload()),
        attributes: received.published_attributes(),
    }
}
