//! Shard-range queues for `sharded` mode (docs/scaling.md): a
//! replica owns a contiguous range of shards and consumes one queue,
//! subscribed to the commands topic with a filter policy that takes only
//! Commands whose `shard` message attribute falls in the range.
//!
//! The queue is named after the range, not the instance, and is left in
//! place when the replica stops: whoever owns the range next (the same pod
//! restarted, or its replacement) finds the Commands published meanwhile.
//! One numeric range is a single filter value, far inside SNS's limits
//! (150 values, 5 keys per policy).

use domain::{ShardRange, MAX_SHARDS};
use serde_json::json;
use tracing::info;

use crate::bootstrap::BootstrapError;
use crate::fanout::{provision, InstanceQueue, ReplicaQueue};

/// Tag holding a shard-range queue's `START..END/SHARDS`; `wsbridge gc`
/// leaves queues carrying it alone unless asked otherwise.
pub const TAG_SHARDS: &str = "wsbridge:shards";

/// The message attribute publishers set to a Command's shard (a Number).
pub const SHARD_ATTRIBUTE: &str = "shard";

/// What a shard-range queue is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// Bridge name: the queue name prefix and the value of the bridge tag.
    pub bridge: String,
    /// The fleet's number of shards.
    pub shards: u32,
    /// The range this replica owns.
    pub owned: ShardRange,
    /// The commands topic the queue subscribes to.
    pub commands_topic_arn: String,
    /// Receives after which the shared dead-letter queue takes a message.
    pub max_receive_count: u32,
}

/// The queue name of a range: `<bridge>-s<SHARDS>-<START>-<END>` (`.fifo`
/// kept for FIFO topics). At most 40 + 1 + 6 + 2 × 6 + 5 characters, well
/// inside SQS's 80.
pub fn queue_name(plan: &ShardPlan) -> String {
    debug_assert!(plan.shards <= MAX_SHARDS);
    let fifo = if plan.commands_topic_arn.ends_with(".fifo") {
        ".fifo"
    } else {
        ""
    };
    format!(
        "{}-s{}-{}-{}{fifo}",
        plan.bridge,
        plan.shards,
        plan.owned.start(),
        plan.owned.end()
    )
}

/// The subscription filter policy taking the range's Commands: one numeric
/// range on the `shard` attribute.
pub fn filter_policy(owned: &ShardRange) -> String {
    json!({
        SHARD_ATTRIBUTE: [{"numeric": [">=", owned.start(), "<", owned.end()]}]
    })
    .to_string()
}

/// Creates (or finds, when the range had an owner before) the range's queue,
/// tagged, with the bridge's dead-letter queue and the filtered subscription.
pub async fn ensure_shard_queue(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    plan: &ShardPlan,
) -> Result<InstanceQueue, BootstrapError> {
    let queue = provision(
        sqs,
        sns,
        &ReplicaQueue {
            name: queue_name(plan),
            bridge: &plan.bridge,
            tags: vec![(TAG_SHARDS, format!("{}/{}", plan.owned, plan.shards))],
            commands_topic_arn: &plan.commands_topic_arn,
            max_receive_count: plan.max_receive_count,
            filter_policy: Some(filter_policy(&plan.owned)),
        },
    )
    .await?;
    info!(queue = %queue.queue_url, shards = %plan.owned, of = plan.shards, "shard queue ready");
    Ok(queue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(topic: &str) -> ShardPlan {
        ShardPlan {
            bridge: "wsbridge".into(),
            shards: 4096,
            owned: ShardRange::new(1366, 2731, 4096).unwrap(),
            commands_topic_arn: topic.into(),
            max_receive_count: 5,
        }
    }

    #[test]
    fn a_range_names_its_queue() {
        assert_eq!(
            queue_name(&plan("arn:aws:sns:r:1:t")),
            "wsbridge-s4096-1366-2731"
        );
        assert_eq!(
            queue_name(&plan("arn:aws:sns:r:1:t.fifo")),
            "wsbridge-s4096-1366-2731.fifo"
        );
    }

    #[test]
    fn the_filter_policy_is_one_numeric_range() {
        let policy: serde_json::Value =
            serde_json::from_str(&filter_policy(&plan("t").owned)).unwrap();
        assert_eq!(
            policy,
            json!({"shard": [{"numeric": [">=", 1366, "<", 2731]}]})
        );
    }
}
