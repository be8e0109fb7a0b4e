//! The `wsbridge` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `.env` fills in what the environment does not set (never overrides);
    // done before the runtime starts any thread.
    let _ = dotenvy::dotenv();
    let cli = app::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wsbridge: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(app::cli::run(cli))
}
