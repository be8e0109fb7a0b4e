//! W2: connect storm — handshakes per second, p99 handshake, memory after.

use serde_json::json;

use super::ctx::Ctx;
use super::measure::{mib, ms, Sampler};
use crate::clients::{self, StormSpec};
use crate::report::{round, Row};

/// W2: handshakes per second, p99 handshake, memory after the storm.
pub async fn w2(ctx: &mut Ctx) -> anyhow::Result<()> {
    let count = if ctx.smoke { 100 } else { 6000 };
    for kind in ctx.kinds() {
        let target = ctx.start(kind, "w2", &[]).await?;
        let probe = target.probe();
        let spec = |ctx: &mut Ctx, n: usize, concurrency: usize, prefix: &str| StormSpec {
            url: target.url(),
            path: target.path().into(),
            prefix: prefix.into(),
            count: n,
            concurrency,
            source_ip: ctx.source_ip(),
        };
        // Warm-up: pools and first allocations are not the storm's cost.
        let warm = spec(ctx, 100.min(count), 20, "w2-warm-");
        clients::storm(&[warm]).await?;
        ctx.pause(1.0).await;
        let r0 = probe.read();
        let sampler = Sampler::start(probe);
        let specs = [
            spec(ctx, count / 2, 50, "w2-a-"),
            spec(ctx, count - count / 2, 50, "w2-b-"),
        ];
        let cpu0 = probe.read().cpu_secs;
        let storm = clients::storm(&specs).await?;
        let (ok, hist) = (storm.ok, &storm.handshakes);
        let cpu = probe.read().cpu_secs - cpu0;
        let peak = sampler.stop();
        ctx.pause(3.0).await;
        let r2 = probe.read();
        // More storms: memory the first one left behind is reused (the
        // allocator keeps it) rather than leaked when this stops growing.
        let mut after = vec![mib(r2.rss_kib)];
        for round in 1..ctx.storms.unwrap_or(2).max(1) {
            let again = [
                spec(ctx, count / 2, 50, &format!("w2-{round}a-")),
                spec(ctx, count - count / 2, 50, &format!("w2-{round}b-")),
            ];
            clients::storm(&again).await?;
            ctx.pause(3.0).await;
            after.push(mib(probe.read().rss_kib));
        }
        let row = Row::new(
            "W2",
            target.label(),
            format!("{count} handshakes, 100 at once"),
            &[
                ("ok", json!(ok)),
                ("failed", json!(storm.failed)),
                ("first_error", json!(storm.first_error)),
                (
                    "handshakes_per_s",
                    round(ok as f64 / storm.elapsed_s.max(1e-9), 0),
                ),
                ("close_p50_ms", ms(storm.closes.quantile(0.5))),
                ("close_p99_ms", ms(storm.closes.quantile(0.99))),
                ("p50_ms", ms(hist.quantile(0.5))),
                ("p99_ms", ms(hist.quantile(0.99))),
                ("max_ms", ms(hist.quantile(1.0))),
                (
                    "cpu_us_per_handshake",
                    round(cpu * 1e6 / ok.max(1) as f64, 1),
                ),
                ("rss_before_mib", mib(r0.rss_kib)),
                ("rss_peak_mib", mib(peak)),
                ("rss_after_mib", mib(r2.rss_kib)),
                ("retained_kib", json!(r2.rss_kib as i64 - r0.rss_kib as i64)),
                ("rss_after_each_storm_mib", json!(after)),
            ],
        );
        ctx.push_row(row);
        target.stop().await?;
    }
    Ok(())
}
