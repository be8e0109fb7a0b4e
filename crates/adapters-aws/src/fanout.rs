//! Per-instance queues for `fanout` mode (docs/scaling.md): each replica consumes a
//! queue of its own, subscribed to the commands topic, so every replica sees
//! every Command and delivers those of its own clients.
//!
//! Each queue is tagged with the bridge name, the instance id and a heartbeat
//! (refreshed while the instance runs), so queues of replicas that died
//! without cleaning up can be found and removed ([`collect_garbage`]).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;
use tracing::{info, warn};

use crate::bootstrap::{self, BootstrapError};
use crate::classify::describe;
use crate::sharded::TAG_SHARDS;

/// Tag naming the bridge a queue belongs to.
pub const TAG_BRIDGE: &str = "wsbridge:bridge";
/// Tag holding the instance id.
pub const TAG_INSTANCE: &str = "wsbridge:instance";
/// Tag holding the last heartbeat, in seconds since the Unix epoch.
pub const TAG_HEARTBEAT: &str = "wsbridge:heartbeat";

/// What an instance's queue is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutPlan {
    /// Bridge name: the queue name prefix and the value of [`TAG_BRIDGE`].
    pub bridge: String,
    /// This instance's id (unique among live replicas).
    pub instance: String,
    /// The commands topic the queue subscribes to.
    pub commands_topic_arn: String,
    /// Receives after which the shared dead-letter queue takes a message.
    pub max_receive_count: u32,
}

/// An instance's queue and subscription, to remove at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceQueue {
    /// The queue's URL.
    pub queue_url: String,
    /// The commands topic subscription feeding it.
    pub subscription_arn: String,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The queue name of an instance: `<bridge>-<instance>` (`.fifo` kept for FIFO topics).
pub fn queue_name(plan: &FanoutPlan) -> String {
    let fifo = if plan.commands_topic_arn.ends_with(".fifo") {
        ".fifo"
    } else {
        ""
    };
    let mut name = format!("{}-{}", plan.bridge, plan.instance);
    name.truncate(80 - fifo.len());
    name + fifo
}

/// Creates the instance's queue (tagged), the bridge's shared dead-letter
/// queue, the redrive policy, and the subscription to the commands topic.
pub async fn create_instance_queue(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    plan: &FanoutPlan,
) -> Result<InstanceQueue, BootstrapError> {
    let queue = provision(
        sqs,
        sns,
        &ReplicaQueue {
            name: queue_name(plan),
            bridge: &plan.bridge,
            tags: vec![(TAG_INSTANCE, plan.instance.clone())],
            commands_topic_arn: &plan.commands_topic_arn,
            max_receive_count: plan.max_receive_count,
            filter_policy: None,
        },
    )
    .await?;
    info!(queue = %queue.queue_url, instance = %plan.instance, "instance queue ready");
    Ok(queue)
}

/// A queue of one replica (fanout) or one shard range (sharded), fed by the
/// commands topic.
pub(crate) struct ReplicaQueue<'a> {
    pub name: String,
    pub bridge: &'a str,
    /// Tags besides the bridge and the heartbeat.
    pub tags: Vec<(&'static str, String)>,
    pub commands_topic_arn: &'a str,
    pub max_receive_count: u32,
    /// The subscription's filter policy; `None`: every Command.
    pub filter_policy: Option<String>,
}

/// Creates (or finds) the queue, the bridge's shared dead-letter queue, the
/// redrive and access policies, the tags and the subscription. Every step is
/// idempotent, so a replica restarting on an existing queue finds it as it left it.
pub(crate) async fn provision(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    queue: &ReplicaQueue<'_>,
) -> Result<InstanceQueue, BootstrapError> {
    let fifo = if queue.name.ends_with(".fifo") {
        ".fifo"
    } else {
        ""
    };
    let dead_letter_url = bootstrap::create_queue(
        sqs,
        &bootstrap::dead_letter_name(&format!("{}{fifo}", queue.bridge)),
    )
    .await?;
    let dead_letter_arn = bootstrap::queue_arn(sqs, &dead_letter_url).await?;
    let queue_url = bootstrap::create_queue(sqs, &queue.name).await?;
    let queue_arn = bootstrap::queue_arn(sqs, &queue_url).await?;
    let redrive = json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": queue.max_receive_count.to_string(),
    });
    sqs.set_queue_attributes()
        .queue_url(&queue_url)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(
            QueueAttributeName::Policy,
            bootstrap::allow_topic_policy(&queue_arn, queue.commands_topic_arn),
        )
        .send()
        .await
        .map_err(|e| BootstrapError::new(describe("SetQueueAttributes", &e)))?;
    let mut tag = sqs
        .tag_queue()
        .queue_url(&queue_url)
        .tags(TAG_BRIDGE, queue.bridge)
        .tags(TAG_HEARTBEAT, now_secs().to_string());
    for (key, value) in &queue.tags {
        tag = tag.tags(*key, value);
    }
    tag.send()
        .await
        .map_err(|e| BootstrapError::new(describe("TagQueue", &e)))?;
    let subscription_arn = bootstrap::subscribe_queue_filtered(
        sns,
        queue.commands_topic_arn,
        &queue_arn,
        false,
        queue.filter_policy.as_deref(),
    )
    .await?;
    Ok(InstanceQueue {
        queue_url,
        subscription_arn,
    })
}

/// Refreshes the queue's heartbeat tag.
pub async fn heartbeat(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<(), BootstrapError> {
    sqs.tag_queue()
        .queue_url(queue_url)
        .tags(TAG_HEARTBEAT, now_secs().to_string())
        .send()
        .await
        .map_err(|e| BootstrapError::new(describe("TagQueue", &e)))?;
    Ok(())
}

/// Whether the queue exists: `Ok(false)` only when SQS says it does not.
pub async fn queue_exists(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<bool, BootstrapError> {
    match sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_queue_does_not_exist()) =>
        {
            Ok(false)
        }
        Err(e) => Err(BootstrapError::new(describe("GetQueueAttributes", &e))),
    }
}

/// Unsubscribes, then deletes the queue (in that order: a topic with a
/// subscription to a deleted queue fails every publish on some emulators).
pub async fn remove_instance_queue(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    queue: &InstanceQueue,
) -> Result<(), BootstrapError> {
    sns.unsubscribe()
        .subscription_arn(&queue.subscription_arn)
        .send()
        .await
        .map_err(|e| BootstrapError::new(describe("Unsubscribe", &e)))?;
    sqs.delete_queue()
        .queue_url(&queue.queue_url)
        .send()
        .await
        .map_err(|e| BootstrapError::new(describe("DeleteQueue", &e)))?;
    info!(queue = %queue.queue_url, "instance queue removed");
    Ok(())
}

/// A queue removed by [`collect_garbage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The removed queue's URL.
    pub queue_url: String,
    /// The instance it belonged to (`shards START..END/COUNT` for a shard-range queue).
    pub instance: String,
    /// Subscriptions removed with it.
    pub subscriptions: usize,
}

/// Which queues [`collect_garbage`] may remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcScope {
    /// Fanout instance queues only. Shard-range queues outlive their
    /// replica on purpose (the next owner of the range finds the Commands
    /// published meanwhile), so they are left alone.
    Instances,
    /// Instance queues and shard-range queues: for a sharded fleet that
    /// shrank or was re-split, whose old ranges have no owner any more.
    InstancesAndShards,
}

/// Removes the queues (and their subscriptions to the commands topic) of
/// instances of `bridge` whose heartbeat is older than `stale_after`.
pub async fn collect_garbage(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    bridge: &str,
    commands_topic_arn: &str,
    stale_after: Duration,
    scope: GcScope,
) -> Result<Vec<Collected>, BootstrapError> {
    let now = now_secs();
    let mut collected = Vec::new();
    let subscriptions = topic_subscriptions(sns, commands_topic_arn).await?;
    for queue_url in queues_with_prefix(sqs, &format!("{bridge}-")).await? {
        let tags = sqs
            .list_queue_tags()
            .queue_url(&queue_url)
            .send()
            .await
            .map_err(|e| BootstrapError::new(describe("ListQueueTags", &e)))?
            .tags
            .unwrap_or_default();
        if tags.get(TAG_BRIDGE).map(String::as_str) != Some(bridge) {
            continue; // not an instance queue of this bridge (e.g. its dead-letter queue)
        }
        let shards = tags.get(TAG_SHARDS);
        if shards.is_some() && scope == GcScope::Instances {
            continue;
        }
        let heartbeat = tags
            .get(TAG_HEARTBEAT)
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        if now.saturating_sub(heartbeat) < stale_after.as_secs() {
            continue;
        }
        let queue_arn = bootstrap::queue_arn(sqs, &queue_url).await?;
        let mut removed = 0;
        for (subscription_arn, endpoint) in &subscriptions {
            if endpoint == &queue_arn {
                sns.unsubscribe()
                    .subscription_arn(subscription_arn)
                    .send()
                    .await
                    .map_err(|e| BootstrapError::new(describe("Unsubscribe", &e)))?;
                removed += 1;
            }
        }
        if let Err(e) = sqs.delete_queue().queue_url(&queue_url).send().await {
            warn!(queue = %queue_url, error = %describe("DeleteQueue", &e), "orphan queue not removed");
            continue;
        }
        collected.push(Collected {
            queue_url,
            instance: match shards {
                Some(range) => format!("shards {range}"),
                None => tags.get(TAG_INSTANCE).cloned().unwrap_or_default(),
            },
            subscriptions: removed,
        });
    }
    Ok(collected)
}

async fn queues_with_prefix(
    sqs: &aws_sdk_sqs::Client,
    prefix: &str,
) -> Result<Vec<String>, BootstrapError> {
    let mut urls = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let out = sqs
            .list_queues()
            .queue_name_prefix(prefix)
            .max_results(1000)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| BootstrapError::new(describe("ListQueues", &e)))?;
        urls.extend(out.queue_urls.unwrap_or_default());
        match out.next_token {
            Some(token) if !token.is_empty() => next = Some(token),
            _ => return Ok(urls),
        }
    }
}

/// (subscription ARN, endpoint) of every subscription to a topic.
async fn topic_subscriptions(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
) -> Result<Vec<(String, String)>, BootstrapError> {
    let mut found = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let out = sns
            .list_subscriptions_by_topic()
            .topic_arn(topic_arn)
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| BootstrapError::new(describe("ListSubscriptionsByTopic", &e)))?;
        for s in out.subscriptions.unwrap_or_default() {
            if let (Some(arn), Some(endpoint)) = (s.subscription_arn, s.endpoint) {
                found.push((arn, endpoint));
            }
        }
        match out.next_token {
            Some(token) if !token.is_empty() => next = Some(token),
            _ => return Ok(found),
        }
    }
}

/// The tags of a queue, for tests and tools.
pub async fn queue_tags(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<HashMap<String, String>, BootstrapError> {
    Ok(sqs
        .list_queue_tags()
        .queue_url(queue_url)
        .send()
        .await
        .map_err(|e| BootstrapError::new(describe("ListQueueTags", &e)))?
        .tags
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(topic: &str) -> FanoutPlan {
        FanoutPlan {
            bridge: "wsbridge".into(),
            instance: "abc123".into(),
            commands_topic_arn: topic.into(),
            max_receive_count: 5,
        }
    }

    #[test]
    fn queue_names_keep_fifo_and_the_length_limit() {
        assert_eq!(queue_name(&plan("arn:aws:sns:r:1:t")), "wsbridge-abc123");
        assert_eq!(
            queue_name(&plan("arn:aws:sns:r:1:t.fifo")),
            "wsbridge-abc123.fifo"
        );
        let mut long = plan("arn:aws:sns:r:1:t.fifo");
        long.instance = "x".repeat(100);
        let name = queue_name(&long);
        assert_eq!(name.len(), 80);
        assert!(name.ends_with(".fifo"));
    }
}
