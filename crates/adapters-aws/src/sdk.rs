//! Loading the shared AWS SDK configuration.

use std::sync::Arc;
use std::time::Duration;

use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use aws_smithy_http_client::Builder;

use crate::credentials::CachedCredentials;

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

/// The timeouts [`load`] puts on the shared configuration, which the SQS
/// client (long polls) keeps: [`ATTEMPT_TIMEOUT`] per attempt,
/// [`RECEIVE_TIMEOUT`] in all. Public so that a configuration made elsewhere
/// (a test's, pointed at a proxy) can carry production's budgets.
pub fn sqs_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(RECEIVE_TIMEOUT)
        .build()
}

/// Loads region, credentials and endpoint (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// the default credential chain) from the environment.
///
/// Credentials come from a provider, not a value: the SDK caches what it
/// returns and asks again shortly before the expiry (a few seconds ahead,
/// jittered), so temporary credentials (assumed roles, web identity, ECS/IMDS)
/// are renewed while traffic flows.
///
/// The chain is aws-config's default one: environment, the shared config and
/// credentials files (static keys, assumed roles, SSO, `credential_process`,
/// web identity), web identity from the environment (EKS IRSA), the ECS
/// container endpoint, IMDS.
///
/// The SDK crates are built without their default HTTP stack, so the client
/// is chosen here: hyper with rustls on the `ring` provider. The loader
/// hands it to the credential providers that call out (STS, SSO, ECS,
/// IMDS) as well as to the clients.
pub async fn load() -> SdkConfig {
    let http_client = Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(sqs_timeouts())
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
    /// The configuration they were built from (for the lean SQS client).
    pub config: Arc<SdkConfig>,
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
    ///
    /// The configured credentials provider is put behind one cache that every
    /// client built here — and the lean SQS client built from
    /// [`Clients::config`] — renews through.
    pub fn from_config(config: &SdkConfig) -> Self {
        let config = &match config.credentials_provider() {
            Some(provider) => config
                .to_builder()
                .credentials_provider(SharedCredentialsProvider::new(CachedCredentials::new(
                    provider,
                )))
                .build(),
            None => config.clone(),
        };
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
            config: Arc::new(config.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQS's longest long poll.
    const LONGEST_WAIT: Duration = Duration::from_secs(20);

    #[test]
    fn a_healthy_long_poll_fits_an_attempt_and_a_black_hole_ends_within_two() {
        // Below: a 20 s long poll must never time out.
        assert!(ATTEMPT_TIMEOUT > LONGEST_WAIT);
        // Above: a poller under a black hole is back, and `/ready` says
        // why, within two long polls with their attempt timeouts.
        assert!(RECEIVE_TIMEOUT >= ATTEMPT_TIMEOUT);
        assert!(RECEIVE_TIMEOUT <= (LONGEST_WAIT + ATTEMPT_TIMEOUT) * 2);
        assert!(SETTLE_TIMEOUT >= SETTLE_ATTEMPT_TIMEOUT);
        let timeouts = sqs_timeouts();
        assert_eq!(timeouts.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        assert_eq!(timeouts.operation_timeout(), Some(RECEIVE_TIMEOUT));
    }
}
