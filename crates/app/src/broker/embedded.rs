//! The embedded SQS/SNS emulator (the `emulator` crate) as `wsbridge dev`'s
//! default backend and as `wsbridge emulator`: started in-process on
//! 127.0.0.1, the SDK configuration that points the bridge at it, and the
//! shell lines that point the AWS tools (CLI, SDKs, the helper commands) at
//! it.

use std::io;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use emulator::{Emulator, EmulatorConfig};

/// The region used when the environment names none (the emulator's ARNs
/// and the SDK's signing region).
pub const DEFAULT_REGION: &str = "us-east-1";
/// The access key id and secret given to the SDK when the environment has
/// no credentials: the emulator checks no signature.
pub const DUMMY_CREDENTIAL: &str = "test";

/// Starts the emulator on 127.0.0.1:`port` (0: any free port) in this
/// process's runtime, with ARNs in the configured region.
pub async fn start(port: u16) -> anyhow::Result<Emulator> {
    let config = EmulatorConfig {
        host: "127.0.0.1".into(),
        port,
        region: region(),
        ..EmulatorConfig::default()
    };
    Emulator::start(config).await.map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse {
            " (another `wsbridge dev` or `wsbridge emulator`? set BRIDGE_EMULATOR_PORT, \
             0 = any free port, or AWS_ENDPOINT_URL to use the emulator already there)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot start the embedded SQS/SNS emulator on 127.0.0.1:{port}: {e}{hint}")
    })
}

/// The SDK configuration for the emulator at `endpoint`: the region of the
/// environment (`AWS_REGION`, `AWS_DEFAULT_REGION`) or [`DEFAULT_REGION`];
/// the credentials of the environment (`AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`) or static dummy ones, so that no credential
/// chain is searched (no instance metadata lookup); the HTTP client and
/// timeouts of production ([`adapters_aws::sdk::load`]).
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(adapters_aws::sdk::sqs_timeouts())
        .endpoint_url(endpoint)
        .region(Region::new(region()));
    if !credentials_in_env() {
        loader = loader.credentials_provider(Credentials::new(
            DUMMY_CREDENTIAL,
            DUMMY_CREDENTIAL,
            None,
            None,
            "wsbridge-emulator",
        ));
    }
    loader.load().await
}

/// The shell lines that point AWS tools at the emulator at `endpoint`:
/// `export AWS_ENDPOINT_URL=…`, then the region and dummy credentials when
/// the environment has none (the tools need some).
pub fn exports(endpoint: &str) -> Vec<String> {
    let mut lines = vec![format!("export AWS_ENDPOINT_URL={endpoint}")];
    if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
        // The SDKs read the first, the AWS CLI v1 only the second.
        lines.push(format!(
            "export AWS_REGION={DEFAULT_REGION} AWS_DEFAULT_REGION={DEFAULT_REGION}"
        ));
    }
    if !credentials_in_env() {
        lines.push(format!(
            "export AWS_ACCESS_KEY_ID={DUMMY_CREDENTIAL} AWS_SECRET_ACCESS_KEY={DUMMY_CREDENTIAL}"
        ));
    }
    lines
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn region() -> String {
    env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| DEFAULT_REGION.to_owned())
}

fn credentials_in_env() -> bool {
    env("AWS_ACCESS_KEY_ID").is_some() && env("AWS_SECRET_ACCESS_KEY").is_some()
}

/// Whether the environment names an endpoint (`AWS_ENDPOINT_URL`), which
/// `dev` then uses instead of starting the emulator.
pub fn endpoint_in_env() -> bool {
    env("AWS_ENDPOINT_URL").is_some()
}
