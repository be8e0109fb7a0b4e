//! `SnsEventSink` against moto.

use std::collections::{BTreeMap, BTreeSet};
use std::task::Poll;
use std::time::Duration;

use adapters_aws::{SnsEventSink, SnsSinkSettings};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use domain::{EventSink, PublishError};
use serde_json::Value;
use testkit::{moto, unique_name};
use tokio::task::JoinSet;

use crate::support::{event, poll_once, take_raw, CallLog, WAIT};

/// SNS's limit on one message (body and attributes), 256 KiB.
const MAX_PAYLOAD_BYTES: usize = 262_144;

#[tokio::test]
async fn publish_delivers_an_envelope_with_the_body_and_string_attributes() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("sink-env")).await;
    let queue = aws.create_queue(&unique_name("sink-env-q")).await;
    aws.subscribe_queue(&topic, &queue, false).await;
    let sink = SnsEventSink::spawn(aws.sns.clone(), &topic, SnsSinkSettings::default());

    // Odd spacing, escapes and non-ASCII: the body must arrive byte for byte.
    let body = "{ \"action\" : \"say\",\"data\":{\"text\":\"h\u{e9}llo \\n \\\"q\\\" \u{1f680}\"} , \"client_id\":\"c-1\" }";
    sink.publish(event("c-1", "say", body)).await.unwrap();

    let got = aws.receive_at_least(&queue.url, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    let envelope = got[0].json();
    assert_eq!(envelope["Type"], "Notification");
    assert_eq!(envelope["TopicArn"], topic.as_str());
    assert_eq!(envelope["Message"].as_str(), Some(body));
    let attributes = &envelope["MessageAttributes"];
    assert_eq!(
        attributes["client_id"],
        serde_json::json!({"Type": "String", "Value": "c-1"})
    );
    assert_eq!(
        attributes["action"],
        serde_json::json!({"Type": "String", "Value": "say"})
    );
    assert_eq!(attributes.as_object().map(|a| a.len()), Some(2));
}

#[tokio::test]
async fn raw_delivery_carries_the_body_and_sqs_message_attributes() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("sink-raw")).await;
    let queue = aws.create_queue(&unique_name("sink-raw-q")).await;
    aws.subscribe_queue(&topic, &queue, true).await;
    let sink = SnsEventSink::spawn(aws.sns.clone(), &topic, SnsSinkSettings::default());

    let body = r#"{"action":"move","data":[1,2,3],"client_id":"dev-7"}"#;
    sink.publish(event("dev-7", "move", body)).await.unwrap();

    let got = take_raw(&aws.sqs, &queue.url, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body(), Some(body));
    let attributes: BTreeMap<&str, (&str, Option<&str>)> = got[0]
        .message_attributes()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), (v.data_type(), v.string_value())))
        .collect();
    assert_eq!(
        attributes,
        BTreeMap::from([
            ("action", ("String", Some("move"))),
            ("client_id", ("String", Some("dev-7"))),
        ])
    );
}

#[tokio::test]
async fn concurrent_publishes_are_batched_and_each_arrives_once() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("sink-many")).await;
    let queue = aws.create_queue(&unique_name("sink-many-q")).await;
    aws.subscribe_queue(&topic, &queue, true).await;
    let log = CallLog::default();
    // A generous linger, so all 25 are waiting before the first batch leaves.
    let settings = SnsSinkSettings {
        linger: Duration::from_millis(200),
        ..SnsSinkSettings::default()
    };
    let sink = SnsEventSink::spawn(log.sns_client(&aws.config), &topic, settings);

    let bodies: BTreeSet<String> = (0..25)
        .map(|i| format!(r#"{{"action":"tick","n":{i},"client_id":"c{}"}}"#, i % 4))
        .collect();
    let mut tasks = JoinSet::new();
    for body in bodies.clone() {
        let sink = sink.clone();
        tasks.spawn(async move {
            let client_id = serde_json::from_str::<Value>(&body).unwrap()["client_id"]
                .as_str()
                .unwrap()
                .to_owned();
            sink.publish(event(&client_id, "tick", body)).await
        });
    }
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.unwrap(), Ok(()));
    }

    let calls = log.calls();
    assert!(
        calls.iter().all(|c| c.operation == "PublishBatch"),
        "{calls:?}"
    );
    assert!(calls.iter().all(|c| c.messages.len() <= 10), "{calls:?}");
    let sent: Vec<&String> = calls.iter().flat_map(|c| &c.messages).collect();
    assert_eq!(sent.len(), 25, "each event sent once: {calls:?}");
    assert!(
        (3..25).contains(&calls.len()),
        "25 events in {} calls",
        calls.len()
    );

    let got = aws.receive_at_least(&queue.url, 25, WAIT).await;
    assert_eq!(got.len(), 25);
    let received: BTreeSet<String> = got.into_iter().map(|m| m.body).collect();
    assert_eq!(received, bodies);
    // Moto delivers during the publish call: nothing more can still come.
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
}

#[tokio::test]
async fn an_oversized_event_is_rejected_without_a_call() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("sink-big")).await;
    let log = CallLog::default();
    let sink = SnsEventSink::spawn(
        log.sns_client(&aws.config),
        &topic,
        SnsSinkSettings::default(),
    );

    // What SNS counts: body, attribute names, types and values.
    let overhead = "client_id".len() + "c1".len() + "action".len() + "big".len() + 2 * 6;
    let too_big = event("c1", "big", "x".repeat(MAX_PAYLOAD_BYTES - overhead + 1));
    let result = tokio::time::timeout(WAIT, sink.publish(too_big)).await;
    assert!(
        matches!(result, Ok(Err(PublishError::Rejected(_)))),
        "{result:?}"
    );
    assert_eq!(log.calls(), Vec::new());

    // One byte less is exactly the limit, and goes out.
    let at_limit = "x".repeat(MAX_PAYLOAD_BYTES - overhead);
    sink.publish(event("c1", "big", at_limit.clone()))
        .await
        .unwrap();
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].messages, vec![at_limit]);
}

#[tokio::test]
async fn publish_to_a_missing_topic_fails_as_unavailable() {
    let aws = moto().aws().await;
    let existing_name = unique_name("sink-there");
    let existing = aws.create_topic(&existing_name).await;
    let missing = existing.replace(&existing_name, &unique_name("sink-missing"));
    let sink = SnsEventSink::spawn(aws.sns.clone(), &missing, SnsSinkSettings::default());

    let result = tokio::time::timeout(
        Duration::from_secs(30),
        sink.publish(event("c1", "a", "{}")),
    )
    .await
    .expect("publish did not give up within 30 s");
    // Moto answers HTTP 404 `NotFound`; the sink reports every failed call as
    // Unavailable, which is what the uplink tells the client (retry later).
    match result {
        Err(PublishError::Unavailable(reason)) => {
            assert!(reason.contains("PublishBatch"), "{reason}");
            assert!(reason.contains("NotFound"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn flush_returns_once_pending_publishes_are_answered() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("sink-flush")).await;
    let queue = aws.create_queue(&unique_name("sink-flush-q")).await;
    aws.subscribe_queue(&topic, &queue, true).await;
    // A linger far beyond the test's patience: only the flush sends the batch.
    let settings = SnsSinkSettings {
        linger: Duration::from_secs(60),
        ..SnsSinkSettings::default()
    };
    let sink = SnsEventSink::spawn(aws.sns.clone(), &topic, settings);

    let mut pending: Vec<_> = (0..3)
        .map(|i| sink.publish(event("c1", "a", format!("e{i}"))))
        .collect();
    for publish in &mut pending {
        // Polled once: queued for the batcher, not answered yet.
        assert!(poll_once(publish).await.is_pending());
    }

    tokio::time::timeout(WAIT, sink.flush())
        .await
        .expect("flush did not cut the linger short");
    for publish in &mut pending {
        assert_eq!(poll_once(publish).await, Poll::Ready(Ok(())));
    }
    assert_eq!(aws.queue_counts(&queue.url).await, (3, 0));
}

#[tokio::test]
async fn a_fifo_topic_keeps_each_clients_order() {
    let aws = moto().aws().await;
    let topic = aws
        .create_topic(&format!("{}.fifo", unique_name("sink-fifo")))
        .await;
    let queue = aws
        .create_queue(&format!("{}.fifo", unique_name("sink-fifo-q")))
        .await;
    aws.subscribe_queue(&topic, &queue, true).await;
    let sink = SnsEventSink::spawn(aws.sns.clone(), &topic, SnsSinkSettings::default());

    // Two clients publish concurrently, each one event at a time (as a
    // connection does), so their events share batches.
    let publish_all = |client_id: &'static str| {
        let sink = sink.clone();
        async move {
            for n in 0..10 {
                let body = format!(r#"{{"action":"seq","n":{n},"client_id":"{client_id}"}}"#);
                sink.publish(event(client_id, "seq", body)).await.unwrap();
            }
        }
    };
    tokio::join!(publish_all("alice"), publish_all("bob"));

    let got = take_raw(&aws.sqs, &queue.url, 20, WAIT).await;
    assert_eq!(got.len(), 20);
    let mut per_client: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in &got {
        let body: Value = serde_json::from_str(message.body().unwrap()).unwrap();
        let client_id = body["client_id"].as_str().unwrap().to_owned();
        let group = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId));
        assert_eq!(group, Some(&client_id), "one message group per client");
        per_client
            .entry(client_id)
            .or_default()
            .push(body["n"].as_u64().unwrap());
    }
    let in_order: Vec<u64> = (0..10).collect();
    assert_eq!(
        per_client,
        BTreeMap::from([
            ("alice".to_owned(), in_order.clone()),
            ("bob".to_owned(), in_order)
        ])
    );
}
