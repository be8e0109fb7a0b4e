//! W6: one client that never reads — the bridge's memory stays bounded and
//! the other clients' latency unchanged.

use std::time::Duration;

use anyhow::anyhow;
use serde_json::json;

use super::ctx::{Ctx, Kind, Server};
use super::measure::{measure, mib, ms, Outcome, Sampler};
use crate::clients::{ClientSpec, Fleet};
use crate::report::{round, Row};
use crate::servers;

/// One W6 phase: the readers get `rate` Commands/s, the heavy client id
/// `slow_rate` big ones; returns what the readers saw, the bridge's peak RSS
/// growth and its RSS before.
async fn w6_phase(
    ctx: &mut Ctx,
    target: &Server,
    readers: &mut Fleet,
    ids: &[String],
    rate: f64,
    slow_rate: f64,
    secs: f64,
) -> anyhow::Result<(Outcome, u64, u64)> {
    let Server::Bridge(_, infra) = target else {
        return Err(anyhow!("not the bridge"));
    };
    let topic = infra.commands_topic_arn.clone();
    let probe = target.probe();
    let rss0 = probe.read().rss_kib;
    let sampler = Sampler::start(probe);
    let (stub, _) = ctx.stub().await?;
    let duration = Duration::from_secs_f64(secs);
    let heavy = vec![W6_HEAVY_ID.to_owned()];
    let push = async {
        let (normal, slow) = tokio::join!(
            servers::inject(stub, &topic, ids, rate, duration, 0),
            servers::inject(stub, &topic, &heavy, slow_rate, duration, W6_PAD),
        );
        slow?;
        normal
    };
    let m = measure(readers, probe, None, 1, push).await?;
    let peak = sampler.stop();
    Ok((m, peak.saturating_sub(rss0), rss0))
}

/// The client id that gets the big Commands in W6.
const W6_HEAVY_ID: &str = "w6-heavy-0";
/// Extra bytes of each big Command in W6.
const W6_PAD: usize = 4000;

/// W6: 999 readers at 2 000 Commands/s, and one more client id getting
/// 500 big (4 KB) Commands/s. Control: that client reads. Then it stalls:
/// never reads (4 KB receive buffer), and a new stalled connection of it
/// opens every 2 s. The bridge's memory must stay bounded (stalled
/// connections closed with 1013) and the readers' latency unchanged.
pub async fn w6(ctx: &mut Ctx) -> anyhow::Result<()> {
    let readers = if ctx.smoke { 99 } else { 999 };
    let rate = if ctx.smoke { 200.0 } else { 2000.0 };
    let slow_rate = if ctx.smoke { 100.0 } else { 500.0 };
    let secs = ctx.secs(10.0);
    let restall_ms = if ctx.smoke { 500 } else { 2000 };
    let target = ctx.start(Kind::Bridge, "w6", &[]).await?;
    let specs = ctx.specs(&target, "w6-", readers, 1);
    let (mut fleet, _) = Fleet::start(&specs).await?;
    let ids: Vec<String> = (0..readers).map(|i| format!("w6-{i}")).collect();
    let heavy_spec = |ctx: &mut Ctx, stall: bool| ClientSpec {
        url: target.url(),
        path: target.path().into(),
        prefix: "w6-heavy-".into(),
        first: 0,
        ids: 1,
        sockets_per_id: 1,
        source_ip: ctx.source_ip(),
        concurrency: 1,
        stall,
        restall_ms: stall.then_some(restall_ms),
        rcvbuf: stall.then_some(4096),
    };
    let common = |m: &Outcome, growth: u64, rss0: u64| {
        vec![
            ("readers", json!(readers)),
            ("readers_rate_per_s", round(rate, 0)),
            ("heavy_rate_per_s", round(slow_rate, 0)),
            ("heavy_frame_bytes", json!(W6_PAD + 100)),
            ("readers_frames", json!(m.seen.frames)),
            (
                "readers_lost",
                json!(m.commands.saturating_sub(m.seen.frames)),
            ),
            ("readers_p50_ms", ms(m.seen.latency.quantile(0.5))),
            ("readers_p99_ms", ms(m.seen.latency.quantile(0.99))),
            ("rss_before_mib", mib(rss0)),
            ("rss_growth_mib", mib(growth)),
            (
                "cpu_us_per_cmd",
                round(m.cpu_secs * 1e6 / (m.commands as f64 + slow_rate * secs), 2),
            ),
        ]
    };

    // Control: the heavy client reads.
    let heavy = heavy_spec(ctx, false);
    let (mut heavy_reader, _) = Fleet::start(&[heavy]).await?;
    let (m, growth, rss0) = w6_phase(ctx, &target, &mut fleet, &ids, rate, slow_rate, secs).await?;
    let heavy_seen = heavy_reader.report().await?;
    let control_p99 = m.seen.latency.quantile(0.99);
    let mut metrics = common(&m, growth, rss0);
    metrics.push(("heavy_frames", json!(heavy_seen.frames)));
    ctx.push_row(Row::new(
        "W6",
        "wsbridge",
        "control: heavy client reads",
        &metrics,
    ));
    heavy_reader.close().await?;
    heavy_reader.finish().await;

    // The heavy client stalls.
    let Server::Bridge(bridge, _) = &target else {
        return Err(anyhow!("not the bridge"));
    };
    let closed0 = bridge
        .metric("wsbridge_connections_closed_total{code=\"1013\"}")
        .await?;
    let staller = heavy_spec(ctx, true);
    let (stalled, _) = Fleet::start(&[staller]).await?;
    let (m, growth, rss0) = w6_phase(ctx, &target, &mut fleet, &ids, rate, slow_rate, secs).await?;
    ctx.pause(1.0).await;
    let Server::Bridge(bridge, _) = &target else {
        return Err(anyhow!("not the bridge"));
    };
    let closed = bridge
        .metric("wsbridge_connections_closed_total{code=\"1013\"}")
        .await?
        - closed0;
    let rss_after = target.probe().read().rss_kib;
    let mut metrics = common(&m, growth, rss0);
    metrics.extend([
        ("control_p99_ms", ms(control_p99)),
        ("rss_after_mib", mib(rss_after)),
        ("closed_1013", round(closed, 0)),
        (
            "stalled_conns",
            json!(1 + (secs * 1000.0 / restall_ms as f64) as u64),
        ),
    ]);
    ctx.push_row(Row::new("W6", "wsbridge", "heavy client stalls", &metrics));
    stalled.finish().await;
    fleet.close().await?;
    fleet.finish().await;
    target.stop().await?;
    Ok(())
}
