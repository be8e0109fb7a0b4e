//! Integration tests of the stub through the real `aws-sdk-sqs` /
//! `aws-sdk-sns` clients, and of the bridge running against it.

mod bridge;
mod faults;
mod sns;
mod sqs;

use std::time::Duration;

use sqs_stub::{StubConfig, StubServer};
use testkit::Aws;

/// The longest any expectation waits.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A stub on a free port, and SDK clients pointed at it.
pub async fn stub() -> (StubServer, Aws) {
    let stub = StubServer::start(StubConfig::default())
        .await
        .expect("the stub starts");
    let aws = Aws::new(testkit::sdk_config_at(stub.endpoint()).await);
    (stub, aws)
}
