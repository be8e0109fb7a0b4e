//! The per-instance queues of fanout mode (`adapters_aws::fanout`) against
//! moto: creation (tags, dead-letter queue, redrive, subscription), the
//! heartbeat, removal, and the garbage collection of dead instances.
//!
//! Every test has its own commands topic and bridge name (`collect_garbage`
//! lists queues by the bridge name prefix), so they run in parallel.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adapters_aws::bootstrap::{dead_letter_name, queue_name_from_url};
use adapters_aws::fanout::{
    collect_garbage, create_instance_queue, heartbeat, queue_tags, remove_instance_queue,
    FanoutPlan, GcScope, InstanceQueue, TAG_BRIDGE, TAG_HEARTBEAT, TAG_INSTANCE,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};
use testkit::{moto, unique_name, Aws, TestQueue};

use crate::support::WAIT;

/// How old a heartbeat is when a test makes an instance look dead.
const LONG_AGO_SECS: u64 = 3_600;
/// The staleness threshold the garbage-collection tests use.
const STALE_AFTER: Duration = Duration::from_secs(600);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A fresh commands topic and a bridge name no other test uses.
async fn setup(prefix: &str) -> (Aws, String, String) {
    let aws = moto().aws().await;
    let topic = aws
        .create_topic(&unique_name(&format!("{prefix}-cmds")))
        .await;
    // 1 + 32 + 1 characters: room for "-<instance>" within SQS's 80.
    let bridge = unique_name("b");
    (aws, topic, bridge)
}

fn plan(bridge: &str, instance: &str, topic: &str) -> FanoutPlan {
    FanoutPlan {
        bridge: bridge.to_owned(),
        instance: instance.to_owned(),
        commands_topic_arn: topic.to_owned(),
        max_receive_count: 3,
    }
}

async fn create(aws: &Aws, plan: &FanoutPlan) -> InstanceQueue {
    create_instance_queue(&aws.sqs, &aws.sns, plan)
        .await
        .unwrap_or_else(|e| panic!("create_instance_queue {}: {e}", plan.instance))
}

/// Queue URLs whose name starts with `prefix`.
async fn queues_named(aws: &Aws, prefix: &str) -> Vec<String> {
    let mut urls = aws
        .sqs
        .list_queues()
        .queue_name_prefix(prefix)
        .send()
        .await
        .unwrap()
        .queue_urls
        .unwrap_or_default();
    urls.sort();
    urls
}

/// (subscription ARN, endpoint) of every subscription of a topic.
async fn subscriptions(aws: &Aws, topic: &str) -> Vec<(String, String)> {
    aws.sns
        .list_subscriptions_by_topic()
        .topic_arn(topic)
        .send()
        .await
        .unwrap()
        .subscriptions()
        .iter()
        .map(|s| {
            (
                s.subscription_arn().unwrap_or_default().to_owned(),
                s.endpoint().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn exists(aws: &Aws, queue_url: &str) -> bool {
    let name = queue_name_from_url(queue_url).unwrap();
    aws.sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .is_ok()
}

async fn attribute(aws: &Aws, queue_url: &str, name: QueueAttributeName) -> Option<String> {
    aws.sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(name.clone())
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&name))
        .cloned()
}

/// Makes an instance look dead: its heartbeat is an hour old.
async fn age_heartbeat(aws: &Aws, queue_url: &str) {
    aws.sqs
        .tag_queue()
        .queue_url(queue_url)
        .tags(TAG_HEARTBEAT, (now_secs() - LONG_AGO_SECS).to_string())
        .send()
        .await
        .unwrap();
}

/// A plain queue subscribed to the topic: a second consumer whose deliveries
/// show that publishing still works.
async fn bystander(aws: &Aws, topic: &str) -> TestQueue {
    let queue = aws.create_queue(&unique_name("fan-bystander")).await;
    aws.subscribe_queue(topic, &queue, false).await;
    queue
}

#[tokio::test]
async fn an_instance_queue_is_tagged_redriven_and_subscribed_to_the_commands_topic() {
    let (aws, topic, bridge) = setup("fan-create").await;
    let plan = plan(&bridge, "i-one", &topic);
    let before = now_secs();
    let queue = create(&aws, &plan).await;
    let after = now_secs();

    assert_eq!(
        queue_name_from_url(&queue.queue_url),
        Some(format!("{bridge}-i-one").as_str())
    );
    let tags = queue_tags(&aws.sqs, &queue.queue_url).await.unwrap();
    assert_eq!(tags.get(TAG_BRIDGE), Some(&bridge), "{tags:?}");
    assert_eq!(tags.get(TAG_INSTANCE).map(String::as_str), Some("i-one"));
    let beat: u64 = tags[TAG_HEARTBEAT].parse().unwrap();
    assert!(
        (before..=after).contains(&beat),
        "{beat} not in {before}..={after}"
    );

    // The bridge's shared dead-letter queue takes what is received 3 times.
    let dead_letter = aws
        .sqs
        .get_queue_url()
        .queue_name(dead_letter_name(&bridge))
        .send()
        .await
        .unwrap_or_else(|e| panic!("no dead-letter queue for {bridge}: {e:?}"))
        .queue_url
        .unwrap();
    let redrive: Value = serde_json::from_str(
        &attribute(&aws, &queue.queue_url, QueueAttributeName::RedrivePolicy)
            .await
            .expect("no redrive policy"),
    )
    .unwrap();
    assert_eq!(
        redrive["deadLetterTargetArn"],
        json!(aws.queue_arn(&dead_letter).await)
    );
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "3"
    );
    // The queue policy lets this topic (and only it) deliver.
    let policy: Value = serde_json::from_str(
        &attribute(&aws, &queue.queue_url, QueueAttributeName::Policy)
            .await
            .expect("no queue policy"),
    )
    .unwrap();
    assert_eq!(
        policy["Statement"][0]["Condition"]["ArnEquals"]["aws:SourceArn"],
        json!(topic),
        "{policy}"
    );

    // Subscribed: exactly one subscription, to this queue, and a Command
    // published to the topic lands in it, with its client_id attribute.
    let queue_arn = aws.queue_arn(&queue.queue_url).await;
    assert_eq!(
        subscriptions(&aws, &topic).await,
        vec![(queue.subscription_arn.clone(), queue_arn)]
    );
    let command = json!({"client_id": "c-fan", "command": "hello"}).to_string();
    let message_id = aws
        .publish(&topic, &command, &[("client_id", "c-fan")])
        .await;
    let got = aws.receive_at_least(&queue.queue_url, 1, WAIT).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].is_sns_envelope(), "{}", got[0].body);
    assert_eq!(got[0].payload(), command);
    assert_eq!(got[0].json()["MessageId"], json!(message_id));
    assert_eq!(
        got[0]
            .published_attributes()
            .get("client_id")
            .map(String::as_str),
        Some("c-fan")
    );

    remove_instance_queue(&aws.sqs, &aws.sns, &queue)
        .await
        .unwrap();
}

#[tokio::test]
async fn creating_an_instance_queue_again_finds_the_same_queue_and_subscription() {
    // A replica restarted with a fixed instance_id (e.g. a StatefulSet pod name).
    let (aws, topic, bridge) = setup("fan-again").await;
    let plan = plan(&bridge, "pod-0", &topic);
    let first = create(&aws, &plan).await;
    let second = create(&aws, &plan).await;
    assert_eq!(first, second);
    assert_eq!(subscriptions(&aws, &topic).await.len(), 1);
    remove_instance_queue(&aws.sqs, &aws.sns, &second)
        .await
        .unwrap();
}

#[tokio::test]
async fn heartbeat_refreshes_the_tag_and_leaves_the_others() {
    let (aws, topic, bridge) = setup("fan-beat").await;
    let queue = create(&aws, &plan(&bridge, "i-beat", &topic)).await;
    age_heartbeat(&aws, &queue.queue_url).await;
    let aged: u64 = queue_tags(&aws.sqs, &queue.queue_url).await.unwrap()[TAG_HEARTBEAT]
        .parse()
        .unwrap();
    assert!(aged <= now_secs() - LONG_AGO_SECS);

    let before = now_secs();
    heartbeat(&aws.sqs, &queue.queue_url).await.unwrap();
    let tags = queue_tags(&aws.sqs, &queue.queue_url).await.unwrap();
    let beat: u64 = tags[TAG_HEARTBEAT].parse().unwrap();
    assert!(beat >= before && beat <= now_secs(), "{beat}");
    assert_eq!(tags.get(TAG_BRIDGE), Some(&bridge));
    assert_eq!(tags.get(TAG_INSTANCE).map(String::as_str), Some("i-beat"));

    remove_instance_queue(&aws.sqs, &aws.sns, &queue)
        .await
        .unwrap();
}

#[tokio::test]
async fn removing_an_instance_queue_leaves_no_queue_and_no_subscription() {
    let (aws, topic, bridge) = setup("fan-remove").await;
    let other = bystander(&aws, &topic).await;
    let queue = create(&aws, &plan(&bridge, "i-gone", &topic)).await;
    let queue_arn = aws.queue_arn(&queue.queue_url).await;
    assert!(subscriptions(&aws, &topic)
        .await
        .iter()
        .any(|(_, endpoint)| *endpoint == queue_arn));

    remove_instance_queue(&aws.sqs, &aws.sns, &queue)
        .await
        .unwrap();

    assert!(!exists(&aws, &queue.queue_url).await);
    let left = subscriptions(&aws, &topic).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].1, other.arn);
    // Only the dead-letter queue, which other instances share, is left of
    // this bridge.
    assert_eq!(
        queues_named(&aws, &bridge).await,
        vec![aws
            .sqs
            .get_queue_url()
            .queue_name(dead_letter_name(&bridge))
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap()]
    );
    // Publishing still works (moto fails a Publish as a whole when a
    // subscription points at a deleted queue) and reaches the other queue.
    aws.publish(&topic, r#"{"client_id":"c","command":"after"}"#, &[])
        .await;
    assert_eq!(aws.receive_at_least(&other.url, 1, WAIT).await.len(), 1);
}

#[tokio::test]
async fn garbage_collection_removes_only_stale_instances_of_its_bridge() {
    let (aws, topic, bridge) = setup("fan-gc").await;
    let stale_a = create(&aws, &plan(&bridge, "stale-a", &topic)).await;
    let stale_b = create(&aws, &plan(&bridge, "stale-b", &topic)).await;
    let fresh = create(&aws, &plan(&bridge, "fresh", &topic)).await;
    for queue in [&stale_a, &stale_b] {
        age_heartbeat(&aws, &queue.queue_url).await;
    }
    // Another bridge whose name starts with this one's: its queues match
    // the name prefix, but not the bridge tag.
    let neighbour = format!("{bridge}-x");
    let neighbours = create(&aws, &plan(&neighbour, "old", &topic)).await;
    age_heartbeat(&aws, &neighbours.queue_url).await;
    // An untagged queue with the prefix, made by someone else.
    let untagged = aws.create_queue(&format!("{bridge}-manual")).await;
    let dead_letter_url = aws
        .sqs
        .get_queue_url()
        .queue_name(dead_letter_name(&bridge))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let other = bystander(&aws, &topic).await;

    let mut removed = collect_garbage(
        &aws.sqs,
        &aws.sns,
        &bridge,
        &topic,
        STALE_AFTER,
        GcScope::Instances,
    )
    .await
    .unwrap();
    removed.sort_by(|a, b| a.instance.cmp(&b.instance));
    let summary: Vec<(String, String, usize)> = removed
        .iter()
        .map(|c| (c.queue_url.clone(), c.instance.clone(), c.subscriptions))
        .collect();
    assert_eq!(
        summary,
        vec![
            (stale_a.queue_url.clone(), "stale-a".to_owned(), 1),
            (stale_b.queue_url.clone(), "stale-b".to_owned(), 1),
        ]
    );

    for queue in [&stale_a, &stale_b] {
        assert!(!exists(&aws, &queue.queue_url).await, "{}", queue.queue_url);
    }
    for url in [
        &fresh.queue_url,
        &neighbours.queue_url,
        &untagged.url,
        &dead_letter_url,
    ] {
        assert!(exists(&aws, url).await, "{url} was removed");
    }
    let mut endpoints: Vec<String> = subscriptions(&aws, &topic)
        .await
        .into_iter()
        .map(|(_, endpoint)| endpoint)
        .collect();
    endpoints.sort();
    let mut expected = vec![
        aws.queue_arn(&fresh.queue_url).await,
        aws.queue_arn(&neighbours.queue_url).await,
        other.arn.clone(),
    ];
    expected.sort();
    assert_eq!(endpoints, expected);

    // A second pass finds nothing; the topic still delivers to the live queues.
    assert!(collect_garbage(
        &aws.sqs,
        &aws.sns,
        &bridge,
        &topic,
        STALE_AFTER,
        GcScope::Instances
    )
    .await
    .unwrap()
    .is_empty());
    aws.publish(&topic, r#"{"client_id":"c","command":"after-gc"}"#, &[])
        .await;
    assert_eq!(
        aws.receive_at_least(&fresh.queue_url, 1, WAIT).await.len(),
        1
    );

    for queue in [&fresh, &neighbours] {
        remove_instance_queue(&aws.sqs, &aws.sns, queue)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn garbage_collection_treats_a_missing_heartbeat_as_stale_and_honours_the_threshold() {
    let (aws, topic, bridge) = setup("fan-gc-threshold").await;
    let queue = create(&aws, &plan(&bridge, "i-1", &topic)).await;
    // Two minutes old: stale for a 60 s threshold, not for a 600 s one.
    aws.sqs
        .tag_queue()
        .queue_url(&queue.queue_url)
        .tags(TAG_HEARTBEAT, (now_secs() - 120).to_string())
        .send()
        .await
        .unwrap();
    assert!(collect_garbage(
        &aws.sqs,
        &aws.sns,
        &bridge,
        &topic,
        STALE_AFTER,
        GcScope::Instances
    )
    .await
    .unwrap()
    .is_empty());
    let removed = collect_garbage(
        &aws.sqs,
        &aws.sns,
        &bridge,
        &topic,
        Duration::from_secs(60),
        GcScope::Instances,
    )
    .await
    .unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert!(!exists(&aws, &queue.queue_url).await);

    // A queue tagged with the bridge but without a heartbeat (its instance
    // died between TagQueue calls, or someone removed the tag) is stale.
    let orphan = create(&aws, &plan(&bridge, "i-2", &topic)).await;
    aws.sqs
        .untag_queue()
        .queue_url(&orphan.queue_url)
        .tag_keys(TAG_HEARTBEAT)
        .send()
        .await
        .unwrap();
    let removed = collect_garbage(
        &aws.sqs,
        &aws.sns,
        &bridge,
        &topic,
        STALE_AFTER,
        GcScope::Instances,
    )
    .await
    .unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].instance, "i-2");
    assert!(subscriptions(&aws, &topic).await.is_empty());
}
