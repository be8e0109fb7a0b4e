//! The shard-range queues of sharded mode (`adapters_aws::sharded`) against
//! moto: the filtered subscription takes exactly its range's Commands, the
//! queue is found again by the range's next owner, and `collect_garbage`
//! leaves range queues alone unless asked.

use std::time::Duration;

use adapters_aws::bootstrap::queue_name_from_url;
use adapters_aws::fanout::{collect_garbage, queue_tags, GcScope, TAG_BRIDGE, TAG_HEARTBEAT};
use adapters_aws::sharded::{ensure_shard_queue, ShardPlan, TAG_SHARDS};
use adapters_aws::tools;
use domain::{shard_of, ClientId, ShardRange};
use testkit::{moto, unique_name, Aws};

use crate::support::WAIT;

const SHARDS: u32 = 8;

fn client(id: &str) -> ClientId {
    ClientId::parse(id).unwrap()
}

/// Client ids (`<prefix>0`, `<prefix>1`, …) whose shard among [`SHARDS`] is
/// inside `range`, and as many outside it.
fn clients_around(prefix: &str, range: &ShardRange, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for i in 0.. {
        let id = format!("{prefix}{i}");
        let bucket = if range.contains(shard_of(&client(&id), SHARDS)) {
            &mut inside
        } else {
            &mut outside
        };
        if bucket.len() < n {
            bucket.push(id);
        }
        if inside.len() == n && outside.len() == n {
            break;
        }
    }
    (inside, outside)
}

async fn setup(prefix: &str) -> (Aws, String, ShardPlan) {
    let aws = moto().aws().await;
    let topic = aws
        .create_topic(&unique_name(&format!("{prefix}-cmds")))
        .await;
    let plan = ShardPlan {
        bridge: unique_name("b"),
        shards: SHARDS,
        owned: ShardRange::new(2, 5, SHARDS).unwrap(),
        commands_topic_arn: topic.clone(),
        max_receive_count: 3,
    };
    (aws, topic, plan)
}

fn command(id: &str, text: &str) -> String {
    serde_json::json!({"client_id": id, "command": text}).to_string()
}

#[tokio::test]
async fn a_shard_queue_receives_exactly_the_commands_of_its_range() {
    let (aws, topic, plan) = setup("shard-filter").await;
    let queue = ensure_shard_queue(&aws.sqs, &aws.sns, &plan).await.unwrap();
    assert_eq!(
        queue_name_from_url(&queue.queue_url),
        Some(format!("{}-s8-2-5", plan.bridge).as_str())
    );
    let tags = queue_tags(&aws.sqs, &queue.queue_url).await.unwrap();
    assert_eq!(tags.get(TAG_BRIDGE), Some(&plan.bridge));
    assert_eq!(tags.get(TAG_SHARDS).map(String::as_str), Some("2..5/8"));
    assert!(tags.contains_key(TAG_HEARTBEAT), "{tags:?}");

    // Everything published reaches an unfiltered bystander; only the range's
    // Commands reach the shard queue. A Command without the attribute
    // matches no range.
    let bystander = aws.create_queue(&unique_name("shard-all")).await;
    aws.subscribe_queue(&topic, &bystander, false).await;
    let (inside, outside) = clients_around("c", &plan.owned, 4);
    for id in inside.iter().chain(&outside) {
        tools::publish_to_topic(
            &aws.sns,
            &topic,
            &command(id, "x"),
            &client(id),
            Some(SHARDS),
        )
        .await
        .unwrap();
    }
    tools::publish_to_topic(
        &aws.sns,
        &topic,
        &command(&inside[0], "no-shard"),
        &client(&inside[0]),
        None,
    )
    .await
    .unwrap();

    let all = aws.receive_at_least(&bystander.url, 9, WAIT).await;
    assert_eq!(all.len(), 9, "publishing works");
    let shard_attribute = all
        .iter()
        .find(|m| m.payload() == command(&inside[0], "x"))
        .map(|m| m.published_attributes()["shard"].clone());
    assert_eq!(
        shard_attribute,
        Some(shard_of(&client(&inside[0]), SHARDS).to_string())
    );
    let got = aws
        .receive_all(&queue.queue_url, Duration::from_secs(2))
        .await;
    let mut received: Vec<String> = got.iter().map(|m| m.payload()).collect();
    received.sort();
    let mut expected: Vec<String> = inside.iter().map(|id| command(id, "x")).collect();
    expected.sort();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn the_next_owner_of_a_range_finds_its_queue_and_what_was_published_meanwhile() {
    let (aws, topic, plan) = setup("shard-again").await;
    let first = ensure_shard_queue(&aws.sqs, &aws.sns, &plan).await.unwrap();
    // The owner stops (the queue stays); a Command is published meanwhile.
    let (inside, _) = clients_around("r", &plan.owned, 1);
    tools::publish_to_topic(
        &aws.sns,
        &topic,
        &command(&inside[0], "meanwhile"),
        &client(&inside[0]),
        Some(SHARDS),
    )
    .await
    .unwrap();

    let second = ensure_shard_queue(&aws.sqs, &aws.sns, &plan).await.unwrap();
    assert_eq!(second, first, "same queue and subscription");
    let subscriptions = aws
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    assert_eq!(subscriptions.subscriptions().len(), 1);
    let got = aws.receive_at_least(&second.queue_url, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload(), command(&inside[0], "meanwhile"));
}

#[tokio::test]
async fn garbage_collection_removes_stale_shard_queues_only_when_asked() {
    let (aws, topic, plan) = setup("shard-gc").await;
    let queue = ensure_shard_queue(&aws.sqs, &aws.sns, &plan).await.unwrap();
    // Stale for any threshold: the heartbeat is an hour old.
    let hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3_600;
    aws.sqs
        .tag_queue()
        .queue_url(&queue.queue_url)
        .tags(TAG_HEARTBEAT, hour_ago.to_string())
        .send()
        .await
        .unwrap();
    let stale = Duration::from_secs(600);

    let kept = collect_garbage(
        &aws.sqs,
        &aws.sns,
        &plan.bridge,
        &topic,
        stale,
        GcScope::Instances,
    )
    .await
    .unwrap();
    assert!(kept.is_empty(), "{kept:?}");

    let removed = collect_garbage(
        &aws.sqs,
        &aws.sns,
        &plan.bridge,
        &topic,
        stale,
        GcScope::InstancesAndShards,
    )
    .await
    .unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].queue_url, queue.queue_url);
    assert_eq!(removed[0].instance, "shards 2..5/8");
    assert_eq!(removed[0].subscriptions, 1);
}
