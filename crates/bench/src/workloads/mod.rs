//! The workloads W1–W7, each bounded in count and time, against
//! the raw baseline and the real `wsbridge` binary.
//!
//! One file per workload (`w1` … `w7`; W4b and W4c live with W4, whose rate
//! step they share), the context they run in (`ctx`), the measuring they
//! share (`measure`) and the targets judged from their rows (`targets`).

use std::time::Instant;

use anyhow::anyhow;

mod ctx;
mod measure;
mod targets;
mod w1;
mod w2;
mod w3;
mod w4;
mod w5;
mod w6;
mod w7;

pub use ctx::Ctx;
pub use targets::targets;

/// Runs the workload `name` (`w1` … `w7`, `w4b`, `w4c`), recording how
/// long it took and, instead of stopping the run, its failure.
pub async fn run(ctx: &mut Ctx, name: &str) {
    println!("== {name}");
    let started = Instant::now();
    let result = match name {
        "w1" => w1::w1(ctx).await,
        "w2" => w2::w2(ctx).await,
        "w3" => w3::w3(ctx).await,
        "w4" => w4::w4(ctx).await,
        "w4b" => w4::w4b(ctx).await,
        "w4c" => w4::w4c(ctx).await,
        "w5" => w5::w5(ctx).await,
        "w6" => w6::w6(ctx).await,
        "w7" => w7::w7(ctx).await,
        other => Err(anyhow!("no workload {other:?}")),
    };
    if let Err(e) = result {
        eprintln!("{name} failed: {e:#}");
        ctx.report.problems.push(format!("{name}: {e:#}"));
    }
    ctx.report.durations.insert(
        name.to_owned(),
        (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    );
}
