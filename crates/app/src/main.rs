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
