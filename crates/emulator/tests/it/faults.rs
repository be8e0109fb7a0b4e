//! Latency and fault injection, through the SDK and the control routes.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use emulator::{FaultKind, Faults};

use crate::emulator;

#[tokio::test]
async fn latency_delays_every_call() {
    let (emulator, aws) = emulator().await;
    let queue = aws.create_queue("slow").await;
    emulator.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let started = Instant::now();
    aws.send(&queue.url, "x").await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    emulator.stop().await;
}

#[tokio::test]
async fn injected_errors_fail_the_chosen_operation_only() {
    let (emulator, aws) = emulator().await;
    let queue = aws.create_queue("faulty").await;
    emulator.set_faults(Faults {
        error_rate: 1.0,
        error: FaultKind::Internal,
        operations: vec!["ReceiveMessage".into()],
        ..Faults::default()
    });
    aws.send(&queue.url, "x").await;
    let error = aws
        .sqs
        .receive_message()
        .queue_url(&queue.url)
        .send()
        .await
        .unwrap_err();
    let service = error.into_service_error();
    assert_eq!(
        aws_sdk_sqs::error::ProvideErrorMetadata::code(&service),
        Some("InternalError")
    );
    let receive = &emulator.operations()["ReceiveMessage"];
    // The SDK retried a 500 (standard retry mode: three attempts).
    assert_eq!(receive.calls, 3);
    assert_eq!(receive.injected, 3);
    emulator.stop().await;
}

#[tokio::test]
async fn injected_entry_failures_are_not_the_senders_fault() {
    let (emulator, aws) = emulator().await;
    let queue = aws.create_queue("partial").await;
    aws.send(&queue.url, "x").await;
    let got = aws
        .sqs
        .receive_message()
        .queue_url(&queue.url)
        .send()
        .await
        .unwrap();
    emulator.set_faults(Faults {
        entry_error_rate: 1.0,
        ..Faults::default()
    });
    let out = aws
        .sqs
        .delete_message_batch()
        .queue_url(&queue.url)
        .entries(
            DeleteMessageBatchRequestEntry::builder()
                .id("0")
                .receipt_handle(got.messages()[0].receipt_handle().unwrap())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed().len(), 1);
    assert!(!out.failed()[0].sender_fault());
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 1));
    emulator.stop().await;
}

#[tokio::test]
async fn control_routes_set_faults_load_messages_and_count_calls() {
    let (emulator, aws) = emulator().await;
    let queue = aws.create_queue("bulk").await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", emulator.endpoint());
    let sent: serde_json::Value = http
        .post(url("/__stub/send"))
        .json(&serde_json::json!({"queue": queue.url, "bodies": ["a", "b", "c"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sent["sent"], 3);
    let answer = http
        .post(url("/__stub/faults"))
        .body(r#"{"latency_ms": 5, "error_rate": 2.0}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    http.post(url("/__stub/faults"))
        .body(r#"{"latency_ms": 5}"#)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    assert_eq!(emulator.faults().latency_ms, 5);
    let got = aws.receive_at_least(&queue.url, 3, crate::PATIENCE).await;
    assert_eq!(got.len(), 3);
    let stats: serde_json::Value = http
        .get(url("/__stub/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["enqueued"], 3);
    assert_eq!(stats["queues"]["bulk"]["visible"], 0);
    assert!(stats["operations"]["ReceiveMessage"]["entries"].as_u64() >= Some(3));
    emulator.stop().await;
}
