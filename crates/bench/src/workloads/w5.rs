//! W5: uplink — ClientMessages from 1 000 connections through the bridge to SNS.

use std::time::{Duration, Instant};

use serde_json::json;

use super::ctx::{Ctx, Kind};
use super::measure::ms;
use crate::clients::Fleet;
use crate::frames;
use crate::report::{round, Row};
use crate::servers::{Measured, Stub};

/// W5: ClientMessages from 1 000 connections through the bridge to SNS.
pub async fn w5(ctx: &mut Ctx) -> anyhow::Result<()> {
    let conns = if ctx.smoke { 100 } else { 1000 };
    let rates: &[f64] = if ctx.smoke {
        &[200.0]
    } else {
        &[1000.0, 2000.0, 5000.0, 10000.0]
    };
    let target = ctx.start(Kind::Bridge, "w5", &[]).await?;
    let specs = ctx.specs(&target, "w5-", conns, 1);
    let (mut fleet, _) = Fleet::start(&specs).await?;
    let probe = target.probe();
    for &rate in rates {
        let secs = ctx.window(5.0, rate);
        let (stub, _) = ctx.stub().await?;
        stub.reset_stats().await?;
        let stub_probe = stub.probe();
        fleet.reset().await?;
        let cpu0 = probe.read().cpu_secs;
        let stub0 = stub_probe.read().cpu_secs;
        let started = Instant::now();
        let started_ns = frames::now_nanos();
        let sent = fleet.uplink(rate, secs).await?;
        let (mut last, mut moved_at) = (0u64, Instant::now());
        let (seen, done_at) = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let seen = fleet.report().await?;
            let now = Instant::now();
            if seen.acks + seen.errors >= sent {
                break (seen, now);
            }
            if seen.acks != last {
                last = seen.acks;
                moved_at = now;
            } else if moved_at.elapsed() > Duration::from_secs(3) {
                break (seen, moved_at);
            }
        };
        let cpu = probe.read().cpu_secs - cpu0;
        let stub_cpu = stub_probe.read().cpu_secs - stub0;
        let stats = stub.stats().await?;
        let (batches, entries) = Stub::calls(&stats, "PublishBatch");
        let (singles, _) = Stub::calls(&stats, "Publish");
        let elapsed = (done_at - started).as_secs_f64();
        let span = (seen.last_ack_at.saturating_sub(started_ns) as f64 / 1e9).max(secs);
        let acked_per_s = seen.acks as f64 / span.max(1e-9);
        let saturated = seen.acks * 100 < sent * 97 || acked_per_s < 0.9 * rate;
        let row = Row::new(
            "W5",
            "wsbridge",
            format!("{rate}/s over {conns} conns"),
            &[
                ("offered_per_s", round(rate, 0)),
                ("sent", json!(sent)),
                ("acks", json!(seen.acks)),
                ("errors", json!(seen.errors)),
                ("lost", json!(sent.saturating_sub(seen.acks + seen.errors))),
                ("acked_per_s", round(acked_per_s, 0)),
                (
                    "cpu_us_per_msg",
                    round(cpu * 1e6 / seen.acks.max(1) as f64, 2),
                ),
                ("server_cpu_pct", round(cpu / elapsed.max(1e-9) * 100.0, 0)),
                (
                    "sns_calls_per_msg",
                    round((batches + singles) as f64 / seen.acks.max(1) as f64, 3),
                ),
                (
                    "entries_per_batch",
                    round(entries as f64 / batches.max(1) as f64, 2),
                ),
                (
                    "stub_cpu_us_per_msg",
                    round(stub_cpu * 1e6 / seen.acks.max(1) as f64, 2),
                ),
                ("p50_ms", ms(seen.ack_latency.quantile(0.5))),
                ("p99_ms", ms(seen.ack_latency.quantile(0.99))),
                ("saturated", json!(saturated)),
            ],
        );
        ctx.push_row(row);
        if saturated {
            break;
        }
    }
    fleet.close().await?;
    fleet.finish().await;
    target.stop().await?;
    Ok(())
}
