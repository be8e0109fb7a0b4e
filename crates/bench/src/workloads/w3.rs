//! W3: latency through moto — paired against a moto-only consumer, with an
//! A/A run of two such consumers for moto's own jitter.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters_aws::bootstrap::Infrastructure;
use anyhow::{anyhow, Context};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde_json::{json, Value};
use testkit::Aws;

use super::ctx::{Ctx, Server};
use super::measure::{ms, Tasks};
use crate::clients::{self};
use crate::frames;
use crate::hist::Histogram;
use crate::report::{round, Row};

/// W3: latency through moto at a low rate, paired: each Command is sent at
/// the same moment to two queues, one read by the bridge (and delivered to
/// a WebSocket client), one by a moto-only consumer (two long-poll loops
/// like the bridge's: receive, decode, delete). The latency the bridge adds
/// is the per-Command difference of the two arrivals, so moto's own jitter
/// (milliseconds) cancels out.
pub async fn w3(ctx: &mut Ctx) -> anyhow::Result<()> {
    let (count, rate) = if ctx.smoke { (5u64, 5.0) } else { (200, 5.0) };
    let endpoint = tokio::task::spawn_blocking(|| testkit::moto().endpoint().to_owned())
        .await
        .map_err(|_| anyhow!("moto is not available (scripts/moto-venv.sh, or MOTO_SERVER / WSBRIDGE_TEST_MOTO_URL)"))?;
    let aws = Aws::new(testkit::sdk_config_at(&endpoint).await);
    let infra = ctx.infra(&aws, "w3").await?;
    let direct_queue = aws.create_queue(&ctx.name("w3-direct")).await.url;

    // Arrival times (ns) by sequence number, on each side.
    let direct: Arrivals = Arc::default();
    let bridged: Arrivals = Arc::default();

    let pollers = direct_consumer(&aws, &direct_queue, &direct);

    let bridge = ctx.start_bridge_at(&endpoint, &infra, "w3", &[]).await?;
    let target = Server::Bridge(bridge, infra.clone());
    let mut ws = clients::open(
        &target.url(),
        "/ws?client_id=w3-0",
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        None,
    )
    .await?;
    let reader = {
        let arrivals = bridged.clone();
        Tasks(vec![tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(Ok(message)) = ws.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                    let now = frames::now_nanos();
                    if let (Some(seq), Ok(mut map)) = (seq_of(&text), arrivals.lock()) {
                        map.entry(seq).or_insert(now);
                    }
                }
            }
        })])
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent_at = send_pairs(
        &aws,
        &infra,
        &infra.command_queue_url,
        &direct_queue,
        count,
        rate,
    )
    .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |m: &Arrivals| m.lock().map(|m| m.len() as u64).unwrap_or(0) >= count;
    while !(complete(&direct) && complete(&bridged)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(pollers);
    drop(reader);
    target.stop().await?;

    let direct = direct.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let bridged = bridged.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let (added, mean_added) = pair_differences(&sent_at, &direct, &bridged, count);
    let noise = aa_noise(ctx, &aws, &infra, count, rate).await?;
    let mut direct_hist = Histogram::default();
    let mut bridged_hist = Histogram::default();
    for (seq, t) in &sent_at {
        if let Some(a) = direct.get(seq) {
            direct_hist.record(a.saturating_sub(*t) / 1000);
        }
        if let Some(a) = bridged.get(seq) {
            bridged_hist.record(a.saturating_sub(*t) / 1000);
        }
    }
    let pct = |p: f64| percentile_ms(&added, p);
    let case = format!("{count} Commands at {rate}/s, paired");
    let q = |h: &Histogram, p: f64| ms(h.quantile(p));
    ctx.push_row(Row::new(
        "W3",
        "moto-only",
        case.clone(),
        &[
            ("messages", json!(direct_hist.count())),
            ("p50_ms", q(&direct_hist, 0.5)),
            ("p99_ms", q(&direct_hist, 0.99)),
            ("max_ms", q(&direct_hist, 1.0)),
        ],
    ));
    ctx.push_row(Row::new(
        "W3",
        "wsbridge",
        case,
        &[
            ("messages", json!(bridged_hist.count())),
            ("p50_ms", q(&bridged_hist, 0.5)),
            ("p99_ms", q(&bridged_hist, 0.99)),
            ("max_ms", q(&bridged_hist, 1.0)),
            ("pairs", json!(added.len())),
            ("added_mean_ms", mean_added),
            ("aa_noise_p50_ms", noise.0),
            ("aa_noise_p99_ms", noise.1),
            ("added_p50_ms", pct(0.5)),
            ("added_p99_ms", pct(0.99)),
            ("added_min_ms", pct(0.0)),
        ],
    ));
    Ok(())
}

/// Arrival times (ns) by sequence number.
type Arrivals = Arc<std::sync::Mutex<HashMap<u64, u64>>>;

/// The sequence number of a W3 Command.
fn seq_of(json: &str) -> Option<u64> {
    serde_json::from_str::<Value>(json).ok()?["data"]["seq"].as_u64()
}

/// The moto-only consumer: two long-poll loops like the bridge's (receive
/// up to 10, decode, delete in a batch), recording arrivals.
fn direct_consumer(aws: &Aws, queue_url: &str, arrivals: &Arrivals) -> Tasks {
    let mut pollers = Vec::new();
    for _ in 0..2 {
        let (sqs, url, arrivals) = (aws.sqs.clone(), queue_url.to_owned(), arrivals.clone());
        pollers.push(tokio::spawn(async move {
            loop {
                let Ok(out) = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(20)
                    .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                    .message_system_attribute_names(
                        MessageSystemAttributeName::ApproximateReceiveCount,
                    )
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let now = frames::now_nanos();
                let mut entries = Vec::new();
                for (i, message) in out.messages().iter().enumerate() {
                    let seq = message
                        .body()
                        .and_then(|b| domain::decode_sqs_body(b).ok())
                        .and_then(|c| seq_of(&c.json));
                    if let (Some(seq), Ok(mut map)) = (seq, arrivals.lock()) {
                        map.entry(seq).or_insert(now);
                    }
                    if let Some(handle) = message.receipt_handle() {
                        if let Ok(entry) = DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
                            .build()
                        {
                            entries.push(entry);
                        }
                    }
                }
                if !entries.is_empty() {
                    let _ = sqs
                        .delete_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries))
                        .send()
                        .await;
                }
            }
        }));
    }

    Tasks(pollers)
}

/// Sends each of `count` Commands (for client `w3-0`, in an SNS envelope)
/// to both queues at the same moment, at `rate` per second; returns when
/// each was sent (ns). Moto takes milliseconds per SendMessage, so
/// whichever goes first arrives first: the order alternates, and pairs of
/// Commands are averaged by [`pair_differences`].
async fn send_pairs(
    aws: &Aws,
    infra: &Infrastructure,
    queue_a: &str,
    queue_b: &str,
    count: u64,
    rate: f64,
) -> anyhow::Result<HashMap<u64, u64>> {
    let mut sent_at = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for seq in 0..count {
        tick.tick().await;
        let t = frames::now_nanos();
        sent_at.insert(seq, t);
        let body = adapters_aws::tools::envelope(
            &frames::command("w3-0", seq, t, 0),
            &infra.commands_topic_arn,
        );
        let send = |url: &str| {
            aws.sqs
                .send_message()
                .queue_url(url)
                .message_body(body.clone())
                .send()
        };
        let (first, second) = if seq % 2 == 0 {
            (queue_a, queue_b)
        } else {
            (queue_b, queue_a)
        };
        let (a, b) = tokio::join!(send(first), send(second));
        a.context("SendMessage to moto")?;
        b.context("SendMessage to moto")?;
    }
    Ok(sent_at)
}

/// How much later side `b` got each pair of Commands than side `a` (µs,
/// sorted; one sample per pair, so the send order cancels), and the mean
/// difference over all Commands (ms).
fn pair_differences(
    sent_at: &HashMap<u64, u64>,
    a: &HashMap<u64, u64>,
    b: &HashMap<u64, u64>,
    count: u64,
) -> (Vec<i64>, Value) {
    let diff = |seq: u64| -> Option<i64> {
        let t = sent_at.get(&seq)?;
        let a = a.get(&seq)?.saturating_sub(*t) as i64;
        let b = b.get(&seq)?.saturating_sub(*t) as i64;
        Some((b - a) / 1000)
    };
    let mut pairs: Vec<i64> = (0..count / 2)
        .filter_map(|k| Some((diff(2 * k)? + diff(2 * k + 1)?) / 2))
        .collect();
    pairs.sort_unstable();
    let all: Vec<i64> = (0..count).filter_map(diff).collect();
    let mean = if all.is_empty() {
        Value::Null
    } else {
        round(
            all.iter().sum::<i64>() as f64 / all.len() as f64 / 1000.0,
            2,
        )
    };
    (pairs, mean)
}

/// The `p` quantile of sorted µs values, in ms.
fn percentile_ms(sorted: &[i64], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    round(sorted[rank - 1] as f64 / 1000.0, 2)
}

/// The same paired measurement with two moto-only consumers (an A/A test):
/// the p50 and p99 of the difference between two identical paths is what
/// moto's own jitter contributes to the W3 figures.
async fn aa_noise(
    ctx: &mut Ctx,
    aws: &Aws,
    infra: &Infrastructure,
    count: u64,
    rate: f64,
) -> anyhow::Result<(Value, Value)> {
    let queue_a = aws.create_queue(&ctx.name("w3-aa-a")).await.url;
    let queue_b = aws.create_queue(&ctx.name("w3-aa-b")).await.url;
    let (a, b): (Arrivals, Arrivals) = (Arc::default(), Arc::default());
    let pollers = (
        direct_consumer(aws, &queue_a, &a),
        direct_consumer(aws, &queue_b, &b),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at = send_pairs(aws, infra, &queue_a, &queue_b, count, rate).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let complete = |m: &Arrivals| m.lock().map(|m| m.len() as u64).unwrap_or(0) >= count;
    while !(complete(&a) && complete(&b)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(pollers);
    let a = a.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let b = b.lock().map_err(|_| anyhow!("poisoned"))?.clone();
    let (pairs, _) = pair_differences(&sent_at, &a, &b, count);
    // The noise is symmetric: its size, not its sign, matters.
    let mut sizes: Vec<i64> = pairs.iter().map(|d| d.abs()).collect();
    sizes.sort_unstable();
    Ok((percentile_ms(&sizes, 0.5), percentile_ms(&sizes, 0.99)))
}
