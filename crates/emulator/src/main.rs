//! `emulator`: the embedded SQS/SNS emulator as a process of its own, with
//! the fault injection of benchmarks and fault tests on the command line
//! (`wsbridge emulator` is the same emulator for users, without faults).
//!
//! ```text
//! emulator --port 4566 --latency-ms 20 --error-rate 0.01 --error-ops ReceiveMessage
//! ```
//!
//! Prints `export AWS_ENDPOINT_URL=http://127.0.0.1:PORT` on stdout once
//! listening, then serves until SIGINT or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use emulator::{Emulator, EmulatorConfig, FaultKind, Faults};

/// The embedded SQS (JSON 1.0) and SNS (query) emulator, in memory, with
/// fault injection for benchmarks and fault tests. Point AWS_ENDPOINT_URL at it.
#[derive(Debug, Parser)]
#[command(name = "emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Region used in ARNs.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Latency added to each SQS/SNS call, in milliseconds (half before it
    /// is handled, half before it is answered).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction (0..=1) of calls answered with an error.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Fraction (0..=1) of batch entries reported as failed.
    #[arg(long, default_value_t = 0.0)]
    entry_error_rate: f64,
    /// Error injected calls answer with: internal (500), throttle (400), unavailable (503).
    #[arg(long, default_value = "internal", value_parser = parse_kind)]
    error_kind: FaultKind,
    /// Operations the error rates apply to (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    error_ops: Vec<String>,
}

fn parse_kind(text: &str) -> Result<FaultKind, String> {
    match text {
        "internal" => Ok(FaultKind::Internal),
        "throttle" => Ok(FaultKind::Throttle),
        "unavailable" => Ok(FaultKind::Unavailable),
        other => Err(format!(
            "{other:?}: expected internal, throttle or unavailable"
        )),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.error_rate) || !(0.0..=1.0).contains(&args.entry_error_rate) {
        eprintln!("emulator: error rates are fractions in 0..=1");
        return ExitCode::from(2);
    }
    let config = EmulatorConfig {
        host: args.host,
        port: args.port,
        workers: args.workers,
        region: args.region,
        faults: Faults {
            latency_ms: args.latency_ms,
            error_rate: args.error_rate,
            entry_error_rate: args.entry_error_rate,
            error: args.error_kind,
            operations: args.error_ops,
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("emulator: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let emulator = match Emulator::start(config).await {
            Ok(emulator) => emulator,
            Err(e) => {
                eprintln!("emulator: cannot listen: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("export AWS_ENDPOINT_URL={}", emulator.endpoint());
        wait_for_signal().await;
        emulator.stop().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
