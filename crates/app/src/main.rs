//! The `wsbridge` binary.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc instead of glibc's malloc: the AWS SDK's request path allocates
/// heavily, and with jemalloc a delivered Command costs markedly less CPU at
/// about the same memory per connection (BENCHMARKS.md, W1 and W4). Only the
/// binary sets it; the library leaves the choice to whoever links it.
/// `--no-default-features` builds the binary on the system allocator.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let mut cli = app::cli::Cli::parse();
    // `.env` is a development file: `dev` alone reads it, filling in what the
    // environment does not set (never overriding), before the runtime starts
    // any thread; then the command line is read again, so that the
    // BRIDGE_PROFILE or BRIDGE_CONFIG_DIR it may set apply.
    if cli.reads_dotenv() {
        match app::cli::load_dotenv() {
            Ok(filled) => cli = app::cli::Cli::parse().with_dotenv(filled),
            Err(e) => {
                eprintln!("wsbridge: {e}");
                return ExitCode::from(2);
            }
        }
    }
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
