//! W7: what one SQS call of the receive path costs the bridge in CPU,
//! through the AWS SDK and through the lean client (`sqs_client = "lean"`),
//! measured in this process against the stub: ReceiveMessage on an empty
//! queue, ReceiveMessage of ten messages, DeleteMessageBatch of ten.
//!
//! The calls run one at a time, as the bridge's `SqsCommandSource` makes
//! them (same settle budget, same metrics), so the figure is the client's
//! per-call pipeline, not the stub's nor a connection pool's.

use std::time::Instant;

use adapters_aws::sdk::Clients;
use adapters_aws::{SqsCommandSource, SqsHttpClient, SqsSourceSettings};
use anyhow::anyhow;
use domain::CommandSource;
use serde_json::json;

use super::ctx::Ctx;
use crate::procfs::Probe;
use crate::report::{round, Row};

/// Runs each case `calls` times per client and records µs of CPU a call.
pub async fn w7(ctx: &mut Ctx) -> anyhow::Result<()> {
    let calls: usize = if ctx.smoke { 100 } else { 3000 };
    let queue_name = ctx.name("w7-queue");
    let (stub, aws) = ctx.stub().await?;
    let queue = aws.create_queue(&queue_name).await;
    let clients = Clients::from_config(&aws.config);
    let me = Probe::new(std::process::id());
    let mut rows = Vec::new();
    for lean in [false, true] {
        let client = if lean { "lean" } else { "sdk" };
        let mut source = SqsCommandSource::new(
            clients.sqs.clone(),
            &queue.url,
            SqsSourceSettings {
                wait_time: std::time::Duration::ZERO,
                ..SqsSourceSettings::default()
            },
        );
        if lean {
            source = source.with_http_client(
                SqsHttpClient::from_config(&clients.config).map_err(|e| anyhow!(e))?,
            );
        }
        // Warm up: connections, credentials, the queue's facts.
        for _ in 0..20 {
            source.receive().await?;
        }

        let (cpu0, wall0) = (me.read().cpu_secs, Instant::now());
        for _ in 0..calls {
            let got = source.receive().await?;
            if !got.is_empty() {
                return Err(anyhow!("W7: the queue was not empty"));
            }
        }
        let empty = per_call(me.read().cpu_secs - cpu0, wall0, calls);

        let bodies: Vec<String> = (0..calls * 10)
            .map(|i| json!({"client_id": "w7", "command": i}).to_string())
            .collect();
        for chunk in bodies.chunks(5000) {
            stub.load(&queue.url, chunk.to_vec()).await?;
        }
        let (mut receive_cpu, mut delete_cpu) = (0.0, 0.0);
        let (mut receives, mut deletes, mut messages) = (0usize, 0usize, 0usize);
        let started = Instant::now();
        while messages < calls * 10 {
            let cpu0 = me.read().cpu_secs;
            let got = source.receive().await?;
            let cpu1 = me.read().cpu_secs;
            receive_cpu += cpu1 - cpu0;
            receives += 1;
            if got.is_empty() {
                return Err(anyhow!("W7: the queue ran dry at {messages} messages"));
            }
            messages += got.len();
            source
                .acknowledge(got.into_iter().map(|m| m.receipt).collect())
                .await?;
            delete_cpu += me.read().cpu_secs - cpu1;
            deletes += 1;
        }
        let full = per_call(receive_cpu, started, receives);
        let delete = per_call(delete_cpu, started, deletes);
        for (case, (cpu_us, _)) in [
            ("ReceiveMessage, empty", empty),
            ("ReceiveMessage, 10 messages", full),
            ("DeleteMessageBatch, 10 entries", delete),
        ] {
            rows.push(Row::new(
                "W7",
                client,
                case,
                &[
                    (
                        "calls",
                        json!(if case.contains("empty") {
                            calls
                        } else {
                            receives
                        }),
                    ),
                    ("cpu_us_per_call", round(cpu_us, 1)),
                    (
                        "messages_per_receive",
                        round(messages as f64 / receives.max(1) as f64, 2),
                    ),
                ],
            ));
        }
        println!(
            "  W7 {client}: empty receive {:.1} µs, full receive {:.1} µs, delete of ten {:.1} µs of CPU a call",
            empty.0, full.0, delete.0
        );
    }
    for row in rows {
        ctx.push_row(row);
    }
    Ok(())
}

/// (µs of CPU a call, µs of wall time a call since `since`).
fn per_call(cpu_secs: f64, since: Instant, calls: usize) -> (f64, f64) {
    let calls = calls.max(1) as f64;
    (
        cpu_secs * 1e6 / calls,
        since.elapsed().as_secs_f64() * 1e6 / calls,
    )
}
