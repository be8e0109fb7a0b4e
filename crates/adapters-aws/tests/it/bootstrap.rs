//! `bootstrap::ensure` against moto.

use adapters_aws::bootstrap::{
    dead_letter_name, ensure, queue_name_from_url, topic_name_from_arn, Infrastructure, Plan,
};
use adapters_aws::tools;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;
use testkit::{moto, unique_name, Aws};

use crate::support::{client, WAIT};

fn plan(suffix: &str) -> Plan {
    Plan {
        events_topic: format!("{}{suffix}", unique_name("boot-events")),
        commands_topic: format!("{}{suffix}", unique_name("boot-commands")),
        command_queue: format!("{}{suffix}", unique_name("boot-cmdq")),
        max_receive_count: 4,
    }
}

async fn queue_attribute(aws: &Aws, url: &str, name: QueueAttributeName) -> Option<String> {
    aws.sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&name))
        .cloned()
}

/// (subscription ARN, protocol, endpoint) of every subscription of a topic.
async fn subscriptions(aws: &Aws, topic_arn: &str) -> Vec<(String, String, String)> {
    aws.sns
        .list_subscriptions_by_topic()
        .topic_arn(topic_arn)
        .send()
        .await
        .unwrap()
        .subscriptions()
        .iter()
        .map(|s| {
            (
                s.subscription_arn().unwrap_or_default().to_owned(),
                s.protocol().unwrap_or_default().to_owned(),
                s.endpoint().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Checks every resource of `infra` exists as `plan` describes.
async fn assert_matches_plan(aws: &Aws, plan: &Plan, infra: &Infrastructure) {
    assert_eq!(
        topic_name_from_arn(&infra.events_topic_arn),
        Some(plan.events_topic.as_str())
    );
    assert_eq!(
        topic_name_from_arn(&infra.commands_topic_arn),
        Some(plan.commands_topic.as_str())
    );
    for arn in [&infra.events_topic_arn, &infra.commands_topic_arn] {
        aws.sns
            .get_topic_attributes()
            .topic_arn(arn)
            .send()
            .await
            .unwrap_or_else(|e| panic!("topic {arn} missing: {e:?}"));
    }
    assert_eq!(
        queue_name_from_url(&infra.command_queue_url),
        Some(plan.command_queue.as_str())
    );
    assert_eq!(
        queue_name_from_url(&infra.dead_letter_queue_url),
        Some(dead_letter_name(&plan.command_queue).as_str())
    );
    // Both queues exist and are empty.
    assert_eq!(aws.queue_counts(&infra.command_queue_url).await, (0, 0));
    assert_eq!(aws.queue_counts(&infra.dead_letter_queue_url).await, (0, 0));

    let queue_arn = aws.queue_arn(&infra.command_queue_url).await;
    assert_eq!(
        subscriptions(aws, &infra.commands_topic_arn).await,
        vec![(
            infra.subscription_arn.clone(),
            "sqs".to_owned(),
            queue_arn.clone()
        )]
    );
    let sub = aws
        .sns
        .get_subscription_attributes()
        .subscription_arn(&infra.subscription_arn)
        .send()
        .await
        .unwrap();
    let raw = sub
        .attributes()
        .and_then(|a| a.get("RawMessageDelivery"))
        .map(String::as_str);
    assert_eq!(raw, Some("false"), "the bridge expects envelopes");
    // Nothing is subscribed to the events topic by the bootstrap.
    assert_eq!(
        subscriptions(aws, &infra.events_topic_arn).await,
        Vec::new()
    );

    let policy = queue_attribute(aws, &infra.command_queue_url, QueueAttributeName::Policy)
        .await
        .expect("a queue policy");
    let policy: Value = serde_json::from_str(&policy).unwrap();
    let statement = &policy["Statement"][0];
    assert_eq!(statement["Effect"], "Allow");
    assert_eq!(statement["Action"], "sqs:SendMessage");
    assert_eq!(statement["Resource"], queue_arn.as_str());
    assert_eq!(
        statement["Condition"]["ArnEquals"]["aws:SourceArn"],
        infra.commands_topic_arn.as_str()
    );
}

#[tokio::test]
async fn ensure_creates_topics_queues_and_the_subscription() {
    let aws = moto().aws().await;
    let plan = plan("");
    let infra = ensure(&aws.sqs, &aws.sns, &plan).await.unwrap();
    assert_matches_plan(&aws, &plan, &infra).await;
}

#[tokio::test]
async fn ensure_twice_finds_what_the_first_run_created() {
    let aws = moto().aws().await;
    let plan = plan("");
    let first = ensure(&aws.sqs, &aws.sns, &plan).await.unwrap();
    let second = ensure(&aws.sqs, &aws.sns, &plan).await.unwrap();
    assert_eq!(first, second);
    // Still exactly one subscription, one queue each.
    assert_matches_plan(&aws, &plan, &second).await;
}

#[tokio::test]
async fn a_command_published_to_the_commands_topic_decodes_from_the_command_queue() {
    let aws = moto().aws().await;
    let infra = ensure(&aws.sqs, &aws.sns, &plan("")).await.unwrap();

    let command = r#"{"client_id":"user-42","command":"notify","data":{"text":"hi"},"extra":true}"#;
    let message_id = aws.publish(&infra.commands_topic_arn, command, &[]).await;

    let got = aws
        .receive_at_least(&infra.command_queue_url, 1, WAIT)
        .await;
    assert_eq!(got.len(), 1);
    assert!(got[0].is_sns_envelope(), "{}", got[0].body);
    let decoded = domain::decode_sqs_body(&got[0].body).unwrap();
    assert_eq!(&*decoded.json, command);
    assert_eq!(decoded.client_id.as_str(), "user-42");
    assert_eq!(decoded.sns_message_id.as_deref(), Some(message_id.as_str()));
    let typed: domain::Command = serde_json::from_str(&decoded.json).unwrap();
    assert_eq!(typed.command, "notify");
    assert_eq!(typed.extra.get("extra"), Some(&Value::Bool(true)));
}

#[tokio::test]
async fn the_command_queue_redrives_to_the_dead_letter_queue() {
    let aws = moto().aws().await;
    let plan = plan("");
    let infra = ensure(&aws.sqs, &aws.sns, &plan).await.unwrap();

    let redrive = queue_attribute(
        &aws,
        &infra.command_queue_url,
        QueueAttributeName::RedrivePolicy,
    )
    .await
    .expect("a redrive policy");
    let redrive: Value = serde_json::from_str(&redrive).unwrap();
    assert_eq!(
        redrive["deadLetterTargetArn"],
        aws.queue_arn(&infra.dead_letter_queue_url).await.as_str()
    );
    // AWS renders the count as a string, moto as a number: accept both.
    let count = match &redrive["maxReceiveCount"] {
        Value::String(s) => s.parse::<u64>().ok(),
        other => other.as_u64(),
    };
    assert_eq!(count, Some(u64::from(plan.max_receive_count)));
}

#[tokio::test]
async fn ensure_works_with_a_fifo_plan() {
    let aws = moto().aws().await;
    let plan = plan(".fifo");
    let infra = ensure(&aws.sqs, &aws.sns, &plan).await.unwrap();
    assert_matches_plan(&aws, &plan, &infra).await;
    assert!(infra.dead_letter_queue_url.ends_with("-dlq.fifo"));
    for url in [&infra.command_queue_url, &infra.dead_letter_queue_url] {
        assert_eq!(
            queue_attribute(&aws, url, QueueAttributeName::FifoQueue)
                .await
                .as_deref(),
            Some("true"),
            "{url}"
        );
    }
    for arn in [&infra.events_topic_arn, &infra.commands_topic_arn] {
        let attributes = aws
            .sns
            .get_topic_attributes()
            .topic_arn(arn)
            .send()
            .await
            .unwrap();
        let fifo = attributes
            .attributes()
            .and_then(|a| a.get("FifoTopic"))
            .map(String::as_str);
        assert_eq!(fifo, Some("true"), "{arn}");
    }
    assert!(queue_attribute(
        &aws,
        &infra.command_queue_url,
        QueueAttributeName::RedrivePolicy
    )
    .await
    .is_some());

    let command = r#"{"client_id":"f1","command":"go"}"#;
    tools::publish_to_topic(
        &aws.sns,
        &infra.commands_topic_arn,
        command,
        &client("f1"),
        None,
    )
    .await
    .unwrap();
    let got = aws
        .receive_at_least(&infra.command_queue_url, 1, WAIT)
        .await;
    assert_eq!(got.len(), 1);
    let decoded = domain::decode_sqs_body(&got[0].body).unwrap();
    assert_eq!(&*decoded.json, command);
}
