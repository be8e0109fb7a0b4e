//! Loading the shared AWS SDK configuration.

use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Builder;

/// Longest a single SQS/SNS call attempt may take. Above the 20 s long-poll
/// wait, so a healthy receive never times out, yet a black-holed endpoint is
/// noticed within half a minute.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(25);

/// Longest a receive may take with all its retries: a poller under a
/// black-holed endpoint is back (and `/ready` says why) within it.
pub const RECEIVE_TIMEOUT: Duration = Duration::from_secs(50);

/// Longest a single delete, visibility change or dead-letter send attempt
/// may take.
pub const SETTLE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest one of those may take with all its retries.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(12);

/// Longest a single SNS publish attempt may take.
pub const PUBLISH_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a publish may take with all its retries.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

/// Loads region, credentials and endpoint (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// the usual credential chain) from the environment.
///
/// The SDK crates are built without their default HTTP stack, so the client
/// is chosen here: hyper with rustls on the `ring` provider.
pub async fn load() -> SdkConfig {
    let http_client = Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(RECEIVE_TIMEOUT)
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(timeouts)
        .load()
        .await
}

/// The SQS and SNS clients, built from one configuration.
#[derive(Debug, Clone)]
pub struct Clients {
    /// SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// SNS client.
    pub sns: aws_sdk_sns::Client,
}

impl Clients {
    /// Clients configured from the environment (see [`load`]).
    pub async fn from_env() -> Self {
        Self::from_config(&load().await)
    }

    /// Clients for an already loaded configuration.
    ///
    /// SNS calls get a tighter budget than SQS long polls: a client waiting
    /// for its ack should hear about an outage within seconds, not minutes.
    ///
    /// Stalled-stream protection is off for both: it wraps every request and
    /// response body in a throughput monitor with timers of its own, per call,
    /// while the bodies here are a few KiB and every attempt is already bounded
    /// by an attempt timeout ([`ATTEMPT_TIMEOUT`], [`PUBLISH_ATTEMPT_TIMEOUT`]).
    pub fn from_config(config: &SdkConfig) -> Self {
        let sqs = aws_sdk_sqs::config::Builder::from(config)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build();
        let sns = aws_sdk_sns::config::Builder::from(config)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(PUBLISH_ATTEMPT_TIMEOUT)
                    .operation_timeout(PUBLISH_TIMEOUT)
                    .build(),
            )
            .build();
        Self {
            sqs: aws_sdk_sqs::Client::from_conf(sqs),
            sns: aws_sdk_sns::Client::from_conf(sns),
        }
    }
}
