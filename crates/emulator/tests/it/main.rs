//! Integration tests of the emulator through the real `aws-sdk-sqs` /
//! `aws-sdk-sns` clients, side by side with moto (`oracle`), through the
//! AWS CLI and boto3 (`clients`), and of the answers to what it does not
//! implement (`unsupported`). The bridge itself runs against it in the
//! app's broker suite (`crates/app/tests/it/brokers`), beside moto.

mod clients;
mod faults;
mod oracle;
mod sns;
mod sqs;
mod unsupported;

use std::time::Duration;

use emulator::{Emulator, EmulatorConfig};
use testkit::Aws;

/// The longest any expectation waits.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// An emulator on a free port, and SDK clients pointed at it.
pub async fn emulator() -> (Emulator, Aws) {
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .expect("the emulator starts");
    let aws = Aws::new(testkit::sdk_config_at(emulator.endpoint()).await);
    (emulator, aws)
}
