//! `AwsMetrics` as the source and the sink record into it, against moto:
//! receive failures and readiness, deletes, and the latency of every call.

use std::time::Duration;

use adapters_aws::metrics::{AwsSnapshot, NOT_RECEIVED_YET};
use adapters_aws::{
    AwsMetrics, SnsEventSink, SnsSinkSettings, SqsCommandSource, SqsSourceSettings,
};
use domain::{CommandSource, DeadLetter, EventSink, GiveUpReason};
use prometheus_client::registry::Registry;
use testkit::{moto, unique_name, Aws};

use crate::support::{event, WAIT};

fn source(aws: &Aws, queue_url: &str, metrics: &AwsMetrics) -> SqsCommandSource {
    SqsCommandSource::new(
        aws.sqs.clone(),
        queue_url,
        SqsSourceSettings {
            wait_time: Duration::from_secs(1),
            ..SqsSourceSettings::default()
        },
    )
    .with_metrics(metrics.clone())
}

/// The metrics in the Prometheus text format.
fn text(metrics: &AwsMetrics) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(metrics.clone()));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
    out
}

#[tokio::test]
async fn a_failed_receive_is_counted_and_named_until_a_receive_succeeds() {
    let aws = moto().aws().await;
    let existing = aws.create_queue(&unique_name("met-there")).await;
    let missing_url = existing
        .url
        .replace(&existing.name, &unique_name("met-missing"));
    let metrics = AwsMetrics::new();
    assert_eq!(
        metrics.not_ready_reason().as_deref(),
        Some(NOT_RECEIVED_YET)
    );

    let missing = source(&aws, &missing_url, &metrics);
    tokio::time::timeout(WAIT, missing.receive())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        metrics.snapshot(),
        AwsSnapshot {
            receive_errors: 1,
            ..AwsSnapshot::default()
        }
    );
    let reason = metrics.not_ready_reason().unwrap_or_default();
    assert!(
        reason.starts_with("the command consumer's last receive failed: SQS ReceiveMessage: "),
        "{reason}"
    );
    assert!(reason.contains("NonExistentQueue"), "{reason}");
    assert!(
        !reason.contains(&missing_url),
        "no request detail: {reason}"
    );

    let there = source(&aws, &existing.url, &metrics);
    there.receive().await.unwrap();
    assert_eq!(metrics.not_ready_reason(), None);
    assert_eq!(metrics.snapshot().receive_errors, 1);
}

#[tokio::test]
async fn deletes_and_every_call_are_recorded_settle_failures_counted() {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("met-del")).await;
    let topic = aws.create_topic(&unique_name("met-topic")).await;
    let metrics = AwsMetrics::new();
    let source = source(&aws, &queue.url, &metrics);
    let sink = SnsEventSink::spawn_with_metrics(
        aws.sns.clone(),
        &topic,
        SnsSinkSettings::default(),
        metrics.clone(),
    );
    for i in 0..2 {
        aws.send(&queue.url, &format!("m{i}")).await;
    }
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(source.receive().await.unwrap());
    }
    source
        .acknowledge(got.iter().map(|m| m.receipt.clone()).collect())
        .await
        .unwrap();
    // Without a redrive policy a rejected message is deleted.
    aws.send(&queue.url, "bad").await;
    let bad = loop {
        if let Some(m) = source.receive().await.unwrap().pop() {
            break m;
        }
    };
    source
        .dead_letter(vec![DeadLetter::new(bad, GiveUpReason::Malformed, "bad")])
        .await
        .unwrap();
    sink.publish(event("c-1", "say", "{}")).await.unwrap();
    assert_eq!(
        metrics.snapshot(),
        AwsSnapshot {
            deleted: 3,
            ..AwsSnapshot::default()
        }
    );

    // A queue that is gone: the release fails, after the source's retries.
    aws.sqs
        .delete_queue()
        .queue_url(&queue.url)
        .send()
        .await
        .unwrap();
    let result = source
        .release(vec![got[0].receipt.clone()], Duration::ZERO)
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(metrics.snapshot().settle_errors, 1);

    let text = text(&metrics);
    for (operation, service) in [
        ("ReceiveMessage", "sqs"),
        ("DeleteMessageBatch", "sqs"),
        ("GetQueueAttributes", "sqs"),
        ("ChangeMessageVisibilityBatch", "sqs"),
        ("PublishBatch", "sns"),
    ] {
        let prefix = format!(
            "wsbridge_backend_call_duration_seconds_count{{service=\"{service}\",operation=\"{operation}\"}} "
        );
        let count: f64 = text
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing from:\n{text}"));
        assert!(count >= 1.0, "{prefix}{count}");
    }
}
