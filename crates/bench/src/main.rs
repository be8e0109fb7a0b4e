//! `bench`: the wsbridge benchmark suite. Development only, outside the
//! hexagon: it drives the real `wsbridge` release binary (against the
//! in-memory SQS/SNS stub of `crates/emulator`, or moto for W3) and a raw
//! tokio-tungstenite baseline, with load generators in worker processes,
//! and reports CPU time per message (from `/proc/<pid>/stat`), memory per
//! connection (`/proc/<pid>/status`) and latency percentiles.
//!
//! ```text
//! cargo run --release -p bench -- all          # the full suite, ≈ 10 min
//! cargo run -p bench -- --smoke all            # every workload tiny, seconds
//! cargo run --release -p bench -- w4 w5        # some workloads
//! ```
//!
//! Writes `target/bench/results.json` (see `--out`) and logs of every bridge
//! to `target/bench/logs/`. See BENCHMARKS.md for what each workload does.

mod baseline;
mod clients;
mod frames;
mod hist;
mod procfs;
mod report;
mod servers;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::Parser;

/// Every workload, in the order `all` runs them.
const WORKLOADS: &[&str] = &["w1", "w2", "w3", "w4", "w4b", "w4c", "w5", "w6", "w7"];

/// Benchmarks of wsbridge against a raw tokio-tungstenite baseline.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Cli {
    /// Workloads to run: all, w1, w2, w3, w4, w4b, w4c, w5, w6, w7.
    #[arg(required = true)]
    workloads: Vec<String>,
    /// Every workload tiny (seconds in all); figures mean nothing, for CI.
    #[arg(long)]
    smoke: bool,
    /// Where the JSON goes (default: target/bench/results.json, or
    /// target/bench/smoke.json with --smoke).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The wsbridge binary (default: next to this one, built first with cargo).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Do not run `cargo build` for the wsbridge binary.
    #[arg(long)]
    no_build: bool,
    /// Latency of every stub call, in ms (AWS: 10–30); several,
    /// comma-separated (e.g. 0,5,20), run the workloads once per latency,
    /// each row tagged with its latency.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64])]
    latency_ms: Vec<u64>,
    /// BRIDGE_POLLERS for the bridge (default: the bridge's own default).
    #[arg(long)]
    pollers: Option<usize>,
    /// Run the bridge under this command, e.g. "valgrind --tool=callgrind".
    #[arg(long)]
    wrap: Option<String>,
    /// W4's rates (Commands/s), comma-separated, instead of the default ladder.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    /// W1's connection counts, comma-separated, instead of 1000,5000,15000.
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Passes per W4 rate; the median is kept (default 3, 1 with --smoke).
    #[arg(long)]
    passes: Option<usize>,
    /// Connect storms in W2 (default 2): does the bridge's memory keep growing?
    #[arg(long)]
    storms: Option<usize>,
    /// Measure only the bridge (no baseline rows), e.g. while profiling it.
    #[arg(long)]
    bridge_only: bool,
}

fn main() -> ExitCode {
    // Worker processes: the bench re-executes itself.
    let args: Vec<String> = std::env::args().collect();
    let internal = match args.get(1).map(String::as_str) {
        Some("__stub") => Some(servers::stub_process(
            flag(&args, "--latency-ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        )),
        Some("__baseline") => Some(baseline::baseline_server()),
        Some("__clients") => Some(
            flag(&args, "--spec")
                .ok_or_else(|| anyhow!("--spec missing"))
                .and_then(|spec| clients::client_worker(&spec)),
        ),
        Some("__storm") => Some(
            flag(&args, "--spec")
                .ok_or_else(|| anyhow!("--spec missing"))
                .and_then(|spec| clients::storm_worker(&spec)),
        ),
        _ => None,
    };
    if let Some(result) = internal {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench worker: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The wsbridge binary of the same profile as this one, built (or found
/// up to date) by cargo.
fn bridge_binary(cli: &Cli) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &cli.bin {
        // The bridge runs in another directory: a relative path would not hold.
        return bin
            .canonicalize()
            .with_context(|| format!("--bin {}", bin.display()));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    let bin = dir.join("wsbridge");
    if !cli.no_build {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command
            .current_dir(workspace_root())
            .args(["build", "-p", "app", "--bin", "wsbridge"]);
        if release {
            command.arg("--release");
        }
        println!(
            "building wsbridge ({})",
            if release { "release" } else { "debug" }
        );
        let status = command.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of wsbridge failed ({status})");
        }
    }
    if !bin.is_file() {
        bail!("{} not found (build it, or pass --bin)", bin.display());
    }
    Ok(bin)
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let mut names: Vec<&str> = Vec::new();
    for name in &cli.workloads {
        match name.as_str() {
            "all" => names.extend(WORKLOADS),
            other if WORKLOADS.contains(&other) => {
                names.push(WORKLOADS[WORKLOADS.iter().position(|w| *w == other).unwrap_or(0)])
            }
            other => bail!("unknown workload {other:?} (all, {})", WORKLOADS.join(", ")),
        }
    }
    names.dedup();
    let bin = bridge_binary(&cli)?;
    let target = workspace_root().join("target/bench");
    let out = cli.out.clone().unwrap_or_else(|| {
        target.join(if cli.smoke {
            "smoke.json"
        } else {
            "results.json"
        })
    });
    if !cli.smoke && !bin.to_string_lossy().contains("release") {
        eprintln!(
            "warning: {} is not a release build; figures of a debug build mean little",
            bin.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        let first_latency = cli.latency_ms.first().copied().unwrap_or(0);
        let mut ctx =
            workloads::Ctx::new(cli.smoke, bin.clone(), target.join("logs"), first_latency);
        ctx.pollers = cli.pollers;
        ctx.rates = cli.rates.clone();
        ctx.sizes = cli.sizes.clone();
        ctx.passes = cli.passes;
        ctx.storms = cli.storms;
        ctx.bridge_only = cli.bridge_only;
        ctx.wrap = cli
            .wrap
            .as_deref()
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        ctx.report.mode = if cli.smoke { "smoke" } else { "full" }.into();
        ctx.report.machine = procfs::machine();
        ctx.report.settings.insert(
            "stub_latency_ms".into(),
            serde_json::to_value(&cli.latency_ms).unwrap_or_default(),
        );
        ctx.report
            .settings
            .insert("bridge_binary".into(), bin.display().to_string().into());
        ctx.report.settings.insert(
            "bridge_pollers".into(),
            cli.pollers
                .map_or("default (2, adaptive up to 32)".into(), |p| p.to_string())
                .into(),
        );
        ctx.report.settings.insert(
            "load_average_at_start".into(),
            procfs::load_average().into(),
        );
        let tag = cli.latency_ms.len() > 1;
        for &latency in &cli.latency_ms {
            // A stub of its own per latency.
            ctx.finish().await;
            ctx.latency_ms = latency;
            let first_row = ctx.report.rows.len();
            for name in &names {
                workloads::run(&mut ctx, name).await;
            }
            if tag {
                for row in &mut ctx.report.rows[first_row..] {
                    row.case = format!("{} @{latency}ms", row.case);
                }
            }
        }
        ctx.report
            .settings
            .insert("load_average_at_end".into(), procfs::load_average().into());
        ctx.finish().await;
        workloads::targets(&mut ctx.report);
        ctx.report
    });
    println!("{}", report.table());
    write(&out, &report)?;
    println!("results written to {}", out.display());
    Ok(report.problems.is_empty())
}

fn write(path: &Path, report: &report::Report) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))
}
