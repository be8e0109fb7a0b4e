//! SNS operations through the real SDK client, and the fan-out to SQS.

use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};

use crate::{emulator, PATIENCE};

fn string(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("a String attribute with a value is valid")
}

#[tokio::test]
async fn publish_fans_out_in_an_envelope_the_bridge_decodes() {
    let (emulator, aws) = emulator().await;
    let topic = aws.create_topic("commands").await;
    let wrapped = aws.create_queue("wrapped").await;
    let raw = aws.create_queue("raw").await;
    aws.subscribe_queue(&topic, &wrapped, false).await;
    aws.subscribe_queue(&topic, &raw, true).await;

    let command = r#"{"client_id":"c1","command":"go","data":{"n":1}}"#;
    let id = aws.publish(&topic, command, &[("client_id", "c1")]).await;

    let got = aws.receive_at_least(&wrapped.url, 1, PATIENCE).await;
    assert!(got[0].is_sns_envelope());
    assert_eq!(got[0].payload(), command);
    assert_eq!(got[0].published_attributes()["client_id"], "c1");
    let decoded = domain::decode_sqs_body(&got[0].body).unwrap();
    assert_eq!(&*decoded.json, command);
    assert_eq!(decoded.sns_message_id.as_deref(), Some(id.as_str()));
    assert!(decoded
        .sns_timestamp
        .as_deref()
        .and_then(domain::envelope::parse_timestamp)
        .is_some());

    let got = aws.receive_at_least(&raw.url, 1, PATIENCE).await;
    assert_eq!(got[0].body, command);
    assert_eq!(got[0].attributes["client_id"], "c1");
    emulator.stop().await;
}

#[tokio::test]
async fn publish_batch_reports_each_entry() {
    let (emulator, aws) = emulator().await;
    let topic = aws.create_topic("events").await;
    let queue = aws.create_queue("observer").await;
    aws.subscribe_queue(&topic, &queue, true).await;
    let entries = (0..3)
        .map(|i| {
            PublishBatchRequestEntry::builder()
                .id(i.to_string())
                .message(format!(r#"{{"action":"a{i}"}}"#))
                .message_attributes("action", string(&format!("a{i}")))
                .build()
                .unwrap()
        })
        .collect();
    let out = aws
        .sns
        .publish_batch()
        .topic_arn(&topic)
        .set_publish_batch_request_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.successful().len(), 3);
    assert!(out.failed().is_empty());
    let got = aws.receive_at_least(&queue.url, 3, PATIENCE).await;
    let mut actions: Vec<_> = got.iter().map(|r| r.attributes["action"].clone()).collect();
    actions.sort();
    assert_eq!(actions, ["a0", "a1", "a2"]);

    let too_many = (0..11)
        .map(|i| {
            PublishBatchRequestEntry::builder()
                .id(i.to_string())
                .message("x")
                .build()
                .unwrap()
        })
        .collect();
    let error = aws
        .sns
        .publish_batch()
        .topic_arn(&topic)
        .set_publish_batch_request_entries(Some(too_many))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(
        error.is_too_many_entries_in_batch_request_exception(),
        "{error:?}"
    );
    emulator.stop().await;
}

#[tokio::test]
async fn filter_policies_and_unsubscribe() {
    let (emulator, aws) = emulator().await;
    let topic = aws.create_topic("sharded").await;
    let shard_a = aws.create_queue("shard-a").await;
    let subscription = aws
        .subscribe_queue_filtered(&topic, &shard_a, true, r#"{"shard": ["a"]}"#)
        .await;
    aws.publish(&topic, "for a", &[("shard", "a")]).await;
    aws.publish(&topic, "for b", &[("shard", "b")]).await;
    let got = aws.receive_at_least(&shard_a.url, 1, PATIENCE).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "for a");

    aws.unsubscribe(&subscription).await;
    aws.publish(&topic, "after", &[("shard", "a")]).await;
    assert_eq!(aws.queue_counts(&shard_a.url).await, (0, 0));
    let error = aws
        .sns
        .publish()
        .topic_arn(format!("{topic}-missing"))
        .message("x")
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_not_found_exception(), "{error:?}");
    emulator.stop().await;
}

#[tokio::test]
async fn the_bridge_bootstrap_and_fanout_tools_run_against_the_emulator() {
    let (emulator, aws) = emulator().await;
    let plan = adapters_aws::bootstrap::Plan {
        events_topic: "wsbridge-events".into(),
        commands_topic: "wsbridge-commands".into(),
        command_queue: "wsbridge-commands".into(),
        max_receive_count: 5,
    };
    let infra = adapters_aws::bootstrap::ensure(&aws.sqs, &aws.sns, &plan)
        .await
        .unwrap();
    // Idempotent.
    let again = adapters_aws::bootstrap::ensure(&aws.sqs, &aws.sns, &plan)
        .await
        .unwrap();
    assert_eq!(again, infra);

    let fanout = adapters_aws::fanout::FanoutPlan {
        bridge: "wsbridge".into(),
        instance: "i-1".into(),
        commands_topic_arn: infra.commands_topic_arn.clone(),
        max_receive_count: 5,
    };
    let queue = adapters_aws::fanout::create_instance_queue(&aws.sqs, &aws.sns, &fanout)
        .await
        .unwrap();
    let collected = adapters_aws::fanout::collect_garbage(
        &aws.sqs,
        &aws.sns,
        "wsbridge",
        &infra.commands_topic_arn,
        std::time::Duration::ZERO,
        adapters_aws::fanout::GcScope::Instances,
    )
    .await
    .unwrap();
    assert_eq!(collected.len(), 1, "{collected:?}");
    assert_eq!(collected[0].queue_url, queue.queue_url);
    assert_eq!(collected[0].subscriptions, 1);
    emulator.stop().await;
}
