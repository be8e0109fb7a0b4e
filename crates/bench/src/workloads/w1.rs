//! W1: idle connections — memory per connection at several sizes.

use serde_json::json;

use super::ctx::Ctx;
use super::measure::mib;
use crate::clients::Fleet;
use crate::procfs::KernelMemory;
use crate::report::{round, Row};

/// W1: RSS and kernel memory per idle connection, at several sizes.
pub async fn w1(ctx: &mut Ctx) -> anyhow::Result<()> {
    let default: &[usize] = if ctx.smoke {
        &[50, 200]
    } else {
        &[1000, 5000, 15000]
    };
    let sizes = ctx.sizes.clone().unwrap_or_else(|| default.to_vec());
    for kind in ctx.kinds() {
        for &n in &sizes {
            let mut target = ctx.start(kind, "w1", &[]).await?;
            ctx.pause(1.0).await;
            let probe = target.probe();
            let (r0, k0) = (probe.read(), KernelMemory::read());
            let specs = ctx.specs(&target, "w1-", n, 1);
            let (mut fleet, connected) = Fleet::start(&specs).await?;
            ctx.pause(2.0).await;
            let (r1, k1) = (probe.read(), KernelMemory::read());
            let server_conns = target.connections().await?;
            fleet.close().await?;
            fleet.finish().await;
            ctx.pause(2.0).await;
            let r2 = probe.read();
            let per = |after: u64, before: u64| round((after as f64 - before as f64) / n as f64, 2);
            let row = Row::new(
                "W1",
                target.label(),
                format!("{n} conns"),
                &[
                    ("conns", json!(n)),
                    ("connected", json!(connected.connected)),
                    ("failed", json!(connected.failed)),
                    ("first_error", json!(connected.first_error)),
                    ("server_conns", json!(server_conns)),
                    ("rss_before_mib", mib(r0.rss_kib)),
                    ("rss_mib", mib(r1.rss_kib)),
                    ("user_kib_per_conn", per(r1.rss_kib, r0.rss_kib)),
                    ("anon_kib_per_conn", per(r1.anon_kib, r0.anon_kib)),
                    ("kernel_kib_per_conn", per(k1.total_kib(), k0.total_kib())),
                    (
                        "tcp_sockets_added",
                        json!(k1.tcp_inuse.saturating_sub(k0.tcp_inuse)),
                    ),
                    ("threads", json!(r1.threads)),
                    ("rss_after_close_mib", mib(r2.rss_kib)),
                ],
            );
            ctx.push_row(row);
            target.stop().await?;
        }
    }
    ctx.report.notes.push(
        "W1 kernel_kib_per_conn is the system-wide growth of Slab + TCP buffer memory per \
         connection, both ends of the loopback pair together (the clients run on the same machine)"
            .into(),
    );
    Ok(())
}
