//! `wsbridge emulator`: the embedded SQS/SNS emulator alone, in memory on
//! 127.0.0.1 (or the `--host` given, e.g. 0.0.0.0 in a container), until
//! SIGTERM/Ctrl-C. `dev` starts the same one in-process, on loopback, when
//! no endpoint is given.

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{cancel_on_signal, Failure};
use crate::broker::embedded;
use crate::config::Config;

/// Starts the emulator on `host` (default 127.0.0.1) and `port` (default:
/// the `emulator_port` setting), prints the shell lines that point AWS
/// tools at it, serves until a signal.
pub(crate) async fn run(
    config: &Config,
    host: Option<&str>,
    port: Option<u16>,
) -> Result<(), Failure> {
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone()).map_err(|e| Failure::Runtime(e.into()))?;
    let host = host.unwrap_or(embedded::DEFAULT_HOST);
    let emulator = embedded::start(host, port.unwrap_or_else(|| config.emulator_port())).await?;
    // This process read no .env: the environment is the caller's.
    for line in embedded::exports(emulator.endpoint(), &[]) {
        println!("{line}");
    }
    info!(endpoint = %emulator.endpoint(), "embedded SQS/SNS emulator serving until Ctrl-C");
    stop.cancelled().await;
    emulator.stop().await;
    info!("embedded SQS/SNS emulator stopped");
    Ok(())
}
