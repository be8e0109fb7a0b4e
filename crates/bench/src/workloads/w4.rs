//! W4: throughput — Commands to 1 000 clients at rising open-loop rates,
//! baseline and bridge in turn; W4b (one client id on many sockets) and
//! W4c (half the Commands for clients not connected) reuse its rate step.

use std::time::Duration;

use anyhow::anyhow;
use serde_json::{json, Value};

use super::ctx::{Ctx, Kind, Server};
use super::measure::{measure, rate_row};
use crate::clients::Fleet;
use crate::report::{round, Report, Row};
use crate::servers::{self, Measured, Stub};

async fn push_baseline(target: &mut Server, rate: f64, secs: f64) -> anyhow::Result<u64> {
    let Server::Baseline(baseline) = target else {
        return Err(anyhow!("not the baseline"));
    };
    let answer = baseline.push(rate, secs).await?;
    Ok(answer["commands"].as_u64().unwrap_or(0))
}

/// One rate step against either server; returns the row and whether it saturated.
#[allow(clippy::too_many_arguments)]
async fn step(
    ctx: &mut Ctx,
    workload: &str,
    target: &mut Server,
    fleet: &mut Fleet,
    ids: &[String],
    rate: f64,
    secs: f64,
    frames_per_command: u64,
    case: String,
) -> anyhow::Result<(Row, bool)> {
    let probe = target.probe();
    match target {
        Server::Baseline(_) => {
            let m = measure(
                fleet,
                probe,
                None,
                frames_per_command,
                push_baseline(target, rate, secs),
            )
            .await?;
            Ok(rate_row(
                workload,
                "baseline",
                case,
                rate,
                frames_per_command,
                &m,
                &[],
            ))
        }
        Server::Bridge(_, infra) => {
            let topic = infra.commands_topic_arn.clone();
            let (stub, _) = ctx.stub().await?;
            stub.reset_stats().await?;
            let stub_probe = stub.probe();
            let push = servers::inject(stub, &topic, ids, rate, Duration::from_secs_f64(secs), 0);
            let m = measure(fleet, probe, Some(stub_probe), frames_per_command, push).await?;
            let stats = stub.stats().await?;
            let (receives, _) = Stub::calls(&stats, "ReceiveMessage");
            let (deletes, _) = Stub::calls(&stats, "DeleteMessageBatch");
            let sqs_calls = if m.commands == 0 {
                Value::Null
            } else {
                round((receives + deletes) as f64 / m.commands as f64, 3)
            };
            Ok(rate_row(
                workload,
                "wsbridge",
                case,
                rate,
                frames_per_command,
                &m,
                &[("sqs_calls_per_cmd", sqs_calls)],
            ))
        }
    }
}

/// W4: Commands to 1 000 distinct clients at open-loop rates up to
/// saturation. Baseline and bridge run side by side (both fleets
/// connected) and are measured in turn at each rate, `passes` times; the
/// row kept is the median pass by CPU per frame (the machine is shared:
/// interleaving spreads background load over both).
pub async fn w4(ctx: &mut Ctx) -> anyhow::Result<()> {
    let conns = if ctx.smoke { 100 } else { 1000 };
    let default: &[f64] = if ctx.smoke {
        &[200.0, 500.0]
    } else {
        &[1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 40000.0]
    };
    let rates = ctx.rates.clone().unwrap_or_else(|| default.to_vec());
    let passes = ctx.passes.unwrap_or(if ctx.smoke { 1 } else { 3 }).max(1);
    let ids: Vec<String> = (0..conns).map(|i| format!("w4-{i}")).collect();
    let mut sides = Vec::new();
    for kind in ctx.kinds() {
        let target = ctx.start(kind, "w4", &[]).await?;
        let specs = ctx.specs(&target, "w4-", conns, 1);
        let (fleet, connected) = Fleet::start(&specs).await?;
        if connected.failed > 0 {
            return Err(anyhow!(
                "{} connections failed: {:?}",
                connected.failed,
                connected.first_error
            ));
        }
        sides.push((target, fleet, false));
    }
    for &rate in &rates {
        let secs = ctx.window(5.0, rate);
        let mut kept = Vec::new();
        for (target, fleet, saturated) in &mut sides {
            if *saturated {
                continue;
            }
            let mut runs = Vec::new();
            for _ in 0..passes {
                let (row, full) = step(
                    ctx,
                    "W4",
                    target,
                    fleet,
                    &ids,
                    rate,
                    secs,
                    1,
                    format!("{rate}/s"),
                )
                .await?;
                runs.push(row);
                if full {
                    *saturated = true;
                    break;
                }
            }
            kept.push(median(runs));
        }
        if kept.is_empty() {
            break;
        }
        for row in kept {
            ctx.push_row(row);
        }
    }
    for (target, fleet, _) in sides {
        let mut fleet = fleet;
        fleet.close().await?;
        fleet.finish().await;
        target.stop().await?;
    }
    ratios(&mut ctx.report, "W4");
    Ok(())
}

/// The pass with the median CPU per frame, with the spread of all passes.
fn median(mut runs: Vec<Row>) -> Row {
    let cpu = |r: &Row| r.num("cpu_us_per_frame").unwrap_or(f64::MAX);
    runs.sort_by(|a, b| cpu(a).total_cmp(&cpu(b)));
    let (low, high) = (
        runs.first().map(cpu).unwrap_or_default(),
        runs.last().map(cpu).unwrap_or_default(),
    );
    let count = runs.len();
    let mut row = runs.swap_remove(count / 2);
    row.metrics.insert("passes".into(), json!(count));
    row.metrics.insert(
        "cpu_us_per_frame_range".into(),
        json!(format!("{low:.1}–{high:.1}")),
    );
    row
}

/// Adds `ratio_to_baseline` (CPU per Command, same case) to the bridge rows.
fn ratios(report: &mut Report, workload: &str) {
    let baseline: Vec<(String, f64)> = report
        .rows_of(workload, "baseline")
        .filter_map(|r| Some((r.case.clone(), r.num("cpu_us_per_frame")?)))
        .collect();
    for row in report
        .rows
        .iter_mut()
        .filter(|r| r.workload == workload && r.server == "wsbridge")
    {
        let base = baseline
            .iter()
            .find(|(case, _)| *case == row.case)
            .map(|(_, v)| *v);
        if let (Some(base), Some(mine)) = (base, row.num("cpu_us_per_frame")) {
            if base > 0.0 {
                row.metrics
                    .insert("ratio_to_baseline".into(), round(mine / base, 2));
            }
        }
    }
}

/// W4b: one client id on 1, 10, 100 sockets.
pub async fn w4b(ctx: &mut Ctx) -> anyhow::Result<()> {
    let sockets: &[usize] = if ctx.smoke { &[1, 10] } else { &[1, 10, 100] };
    let rate = if ctx.smoke { 100.0 } else { 1000.0 };
    let ids = vec!["w4b-0".to_owned()];
    for kind in ctx.kinds() {
        let mut target = ctx.start(kind, "w4b", &[]).await?;
        for &n in sockets {
            let specs = ctx.specs(&target, "w4b-", 1, n);
            let (mut fleet, _) = Fleet::start(&specs).await?;
            let secs = ctx.window(5.0, rate * n as f64);
            let (row, _) = step(
                ctx,
                "W4b",
                &mut target,
                &mut fleet,
                &ids,
                rate,
                secs,
                n as u64,
                format!("1 id × {n} sockets, {rate}/s"),
            )
            .await?;
            ctx.push_row(row);
            fleet.close().await?;
            fleet.finish().await;
        }
        target.stop().await?;
    }
    ratios(&mut ctx.report, "W4b");
    Ok(())
}

/// W4c: half the Commands for clients that are not connected (dropped).
pub async fn w4c(ctx: &mut Ctx) -> anyhow::Result<()> {
    let conns = if ctx.smoke { 100 } else { 1000 };
    let rate = if ctx.smoke { 200.0 } else { 5000.0 };
    let secs = ctx.secs(5.0);
    let target = ctx.start(Kind::Bridge, "w4c", &[]).await?;
    let specs = ctx.specs(&target, "w4c-", conns, 1);
    let (mut fleet, _) = Fleet::start(&specs).await?;
    let ids: Vec<String> = (0..conns)
        .flat_map(|i| [format!("w4c-{i}"), format!("w4c-absent-{i}")])
        .collect();
    let Server::Bridge(bridge, infra) = &target else {
        return Err(anyhow!("not the bridge"));
    };
    let undeliverable0 = bridge
        .metric("wsbridge_commands_total{outcome=\"undeliverable\"}")
        .await?;
    let topic = infra.commands_topic_arn.clone();
    let probe = target.probe();
    let (stub, _) = ctx.stub().await?;
    let stub_probe = stub.probe();
    let push = servers::inject(stub, &topic, &ids, rate, Duration::from_secs_f64(secs), 0);
    // Half of them produce a frame.
    let m = measure(&mut fleet, probe, Some(stub_probe), 1, async {
        Ok(push.await? / 2)
    })
    .await?;
    let Server::Bridge(bridge, _) = &target else {
        return Err(anyhow!("not the bridge"));
    };
    let undeliverable = bridge
        .metric("wsbridge_commands_total{outcome=\"undeliverable\"}")
        .await?
        - undeliverable0;
    let received = m.commands * 2;
    let (row, _) = rate_row(
        "W4c",
        "wsbridge",
        format!("{rate}/s, half for absent clients"),
        rate / 2.0,
        1,
        &m,
        &[
            ("received_cmds", json!(received)),
            ("undeliverable", round(undeliverable, 0)),
            (
                "cpu_us_per_received_cmd",
                round(m.cpu_secs * 1e6 / received.max(1) as f64, 2),
            ),
        ],
    );
    ctx.push_row(row);
    fleet.close().await?;
    fleet.finish().await;
    target.stop().await?;
    Ok(())
}
