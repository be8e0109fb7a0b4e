//! SQS and SNS helpers for tests. Every helper panics with the AWS error in full
//! when a call fails: a failed setup step is a failed test.
//!
//! The parts: setting up topics, queues and subscriptions (`setup`),
//! publishing, sending and receiving (`messages`), and reading what was
//! received (`received`).

use std::fmt::Debug;

use aws_config::SdkConfig;
use aws_sdk_sqs::error::DisplayErrorContext;

mod messages;
mod received;
mod setup;

pub use received::Received;

/// SQS and SNS clients built from one configuration, with helpers to set up
/// topics and queues and to look at what arrived. Build it inside the test
/// (clients belong to the runtime they were created on): `testkit::moto().aws().await`.
#[derive(Debug, Clone)]
pub struct Aws {
    /// The configuration both clients were built from (pass it to code under test).
    pub config: SdkConfig,
    /// SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// SNS client.
    pub sns: aws_sdk_sns::Client,
}

/// A queue created by a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestQueue {
    /// Queue name.
    pub name: String,
    /// Queue URL (what SQS calls take).
    pub url: String,
    /// Queue ARN (what SNS subscriptions and redrive policies take).
    pub arn: String,
}

fn fail<E: std::error::Error>(what: &str, error: E) -> ! {
    panic!("testkit: {what} failed: {}", DisplayErrorContext(error))
}

fn missing<T: Debug>(what: &str, output: T) -> ! {
    panic!("testkit: {what} answered without the expected field: {output:?}")
}

impl Aws {
    /// Clients for `config`.
    pub fn new(config: SdkConfig) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(&config),
            sns: aws_sdk_sns::Client::new(&config),
            config,
        }
    }
}
