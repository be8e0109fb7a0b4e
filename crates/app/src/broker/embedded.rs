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

/// The address the emulator listens on unless told otherwise: loopback only.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// Starts the emulator on `host`:`port` (0: any free port) in this
/// process's runtime, with ARNs in the configured region.
pub async fn start(host: &str, port: u16) -> anyhow::Result<Emulator> {
    let config = EmulatorConfig {
        host: host.to_owned(),
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
        anyhow::anyhow!("cannot start the embedded SQS/SNS emulator on {host}:{port}: {e}{hint}")
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

/// The shell lines that point AWS tools in another shell at the emulator
/// at `endpoint`: `export AWS_ENDPOINT_URL=…` (a loopback address when the
/// emulator listens on every interface), then the region and dummy
/// credentials when that shell has none (the tools need some). What `.env`
/// filled in (`from_dotenv`, the names `dev` read from it) is not in that
/// shell, so it is printed too.
pub fn exports(endpoint: &str, from_dotenv: &[String]) -> Vec<String> {
    export_lines(endpoint, &env, from_dotenv)
}

fn export_lines(
    endpoint: &str,
    env: &dyn Fn(&str) -> Option<String>,
    from_dotenv: &[String],
) -> Vec<String> {
    let inherited = |name: &str| env(name).is_some() && !from_dotenv.iter().any(|n| n == name);
    let mut lines = vec![format!("export AWS_ENDPOINT_URL={}", reachable(endpoint))];
    if !inherited("AWS_REGION") && !inherited("AWS_DEFAULT_REGION") {
        // The SDKs read the first, the AWS CLI v1 only the second.
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        lines.push(format!(
            "export AWS_REGION={region} AWS_DEFAULT_REGION={region}"
        ));
    }
    if !(inherited("AWS_ACCESS_KEY_ID") && inherited("AWS_SECRET_ACCESS_KEY")) {
        lines.push(format!(
            "export AWS_ACCESS_KEY_ID={DUMMY_CREDENTIAL} AWS_SECRET_ACCESS_KEY={DUMMY_CREDENTIAL}"
        ));
    }
    lines
}

/// `endpoint` as a client reaches it: an emulator listening on every
/// interface (`0.0.0.0`, `[::]`) is reached on loopback.
pub fn reachable(endpoint: &str) -> String {
    endpoint
        .replacen("//0.0.0.0:", "//127.0.0.1:", 1)
        .replacen("//[::]:", "//[::1]:", 1)
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lines(env: &[(&str, &str)], from_dotenv: &[&str], endpoint: &str) -> Vec<String> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let from_dotenv: Vec<String> = from_dotenv.iter().map(|n| (*n).to_owned()).collect();
        export_lines(endpoint, &|name| env.get(name).cloned(), &from_dotenv)
    }

    #[test]
    fn the_other_shell_gets_what_it_lacks() {
        let endpoint = "http://127.0.0.1:9324";
        assert_eq!(
            lines(&[], &[], endpoint),
            [
                "export AWS_ENDPOINT_URL=http://127.0.0.1:9324",
                "export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1",
                "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test",
            ]
        );
        // Set in the environment: the other shell has them too.
        let set = [
            ("AWS_REGION", "eu-west-3"),
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ];
        assert_eq!(
            lines(&set, &[], endpoint),
            ["export AWS_ENDPOINT_URL=http://127.0.0.1:9324"]
        );
        // Filled in from .env by `dev`: the other shell lacks them. The
        // region in use is printed; credentials never, only dummy ones.
        let all = ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
        let printed = lines(&set, &all, endpoint);
        assert_eq!(
            printed,
            [
                "export AWS_ENDPOINT_URL=http://127.0.0.1:9324",
                "export AWS_REGION=eu-west-3 AWS_DEFAULT_REGION=eu-west-3",
                "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test",
            ]
        );
        assert!(!printed.concat().contains("s3cr3t"), "{printed:?}");
    }

    #[test]
    fn an_emulator_on_every_interface_is_reached_on_loopback() {
        assert_eq!(reachable("http://0.0.0.0:9324"), "http://127.0.0.1:9324");
        assert_eq!(reachable("http://[::]:9324"), "http://[::1]:9324");
        assert_eq!(reachable("http://10.1.2.3:9324"), "http://10.1.2.3:9324");
    }
}
