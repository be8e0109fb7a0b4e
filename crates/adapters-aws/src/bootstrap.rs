//! Idempotent creation of what the bridge needs on SNS/SQS: the events and
//! commands topics, the command queue with its dead-letter queue and redrive
//! policy, and the commands topic → command queue subscription.
//!
//! Safe to run on every start: each step either creates the resource or finds
//! the existing one, and attributes are (re)applied rather than compared.

use std::collections::HashMap;

use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::json;

use crate::classify::describe;

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Name of the topic client events are published to.
    pub events_topic: String,
    /// Name of the topic backends publish Commands to.
    pub commands_topic: String,
    /// Name of the queue the bridge consumes.
    pub command_queue: String,
    /// Receives after which a message moves to the dead-letter queue.
    pub max_receive_count: u32,
}

/// What exists afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Infrastructure {
    /// ARN of the events topic.
    pub events_topic_arn: String,
    /// ARN of the commands topic.
    pub commands_topic_arn: String,
    /// URL of the command queue.
    pub command_queue_url: String,
    /// URL of the command queue's dead-letter queue.
    pub dead_letter_queue_url: String,
    /// ARN of the commands topic → command queue subscription.
    pub subscription_arn: String,
}

/// A step of the bootstrap failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BootstrapError(String);

impl BootstrapError {
    /// An error with this description.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The queue name at the end of a queue URL.
pub fn queue_name_from_url(url: &str) -> Option<&str> {
    url.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !n.contains(':'))
}

/// The topic name at the end of a topic ARN.
pub fn topic_name_from_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn") && arn.split(':').count() == 6)
        .then(|| arn.rsplit(':').next())
        .flatten()
        .filter(|n| !n.is_empty())
}

/// Creates (or finds) every resource of the plan.
pub async fn ensure(
    sqs: &aws_sdk_sqs::Client,
    sns: &aws_sdk_sns::Client,
    plan: &Plan,
) -> Result<Infrastructure, BootstrapError> {
    let events_topic_arn = create_topic(sns, &plan.events_topic).await?;
    let commands_topic_arn = create_topic(sns, &plan.commands_topic).await?;

    let dead_letter_name = dead_letter_name(&plan.command_queue);
    let dead_letter_queue_url = create_queue(sqs, &dead_letter_name).await?;
    let dead_letter_arn = queue_arn(sqs, &dead_letter_queue_url).await?;

    let command_queue_url = create_queue(sqs, &plan.command_queue).await?;
    let command_queue_arn = queue_arn(sqs, &command_queue_url).await?;
    let redrive = json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": plan.max_receive_count.to_string(),
    });
    let policy = allow_topic_policy(&command_queue_arn, &commands_topic_arn);
    sqs.set_queue_attributes()
        .queue_url(&command_queue_url)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(QueueAttributeName::Policy, policy)
        .send()
        .await
        .map_err(|e| BootstrapError(describe("SetQueueAttributes", &e)))?;

    let subscription_arn =
        subscribe_queue(sns, &commands_topic_arn, &command_queue_arn, false).await?;

    Ok(Infrastructure {
        events_topic_arn,
        commands_topic_arn,
        command_queue_url,
        dead_letter_queue_url,
        subscription_arn,
    })
}

/// The dead-letter queue's name for a queue (`x` → `x-dlq`, `x.fifo` → `x-dlq.fifo`).
pub fn dead_letter_name(queue: &str) -> String {
    match queue.strip_suffix(".fifo") {
        Some(stem) => format!("{stem}-dlq.fifo"),
        None => format!("{queue}-dlq"),
    }
}

/// Creates a topic (FIFO when the name ends in `.fifo`); returns its ARN.
pub async fn create_topic(sns: &aws_sdk_sns::Client, name: &str) -> Result<String, BootstrapError> {
    let mut request = sns.create_topic().name(name);
    if name.ends_with(".fifo") {
        request = request
            .attributes("FifoTopic", "true")
            .attributes("ContentBasedDeduplication", "true");
    }
    let out = request
        .send()
        .await
        .map_err(|e| BootstrapError(describe("CreateTopic", &e)))?;
    out.topic_arn
        .ok_or_else(|| BootstrapError(format!("CreateTopic {name}: no TopicArn in the answer")))
}

/// Creates a queue (FIFO when the name ends in `.fifo`); returns its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, BootstrapError> {
    let mut attributes = HashMap::new();
    if name.ends_with(".fifo") {
        attributes.insert(QueueAttributeName::FifoQueue, "true".to_owned());
        attributes.insert(
            QueueAttributeName::ContentBasedDeduplication,
            "true".to_owned(),
        );
    }
    let out = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes((!attributes.is_empty()).then_some(attributes))
        .send()
        .await
        .map_err(|e| BootstrapError(describe("CreateQueue", &e)))?;
    out.queue_url
        .ok_or_else(|| BootstrapError(format!("CreateQueue {name}: no QueueUrl in the answer")))
}

/// The ARN of a queue.
pub async fn queue_arn(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<String, BootstrapError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| BootstrapError(describe("GetQueueAttributes", &e)))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| BootstrapError(format!("GetQueueAttributes {queue_url}: no QueueArn")))
}

/// Lets `topic_arn` send to the queue, as SNS → SQS delivery requires on AWS.
pub fn allow_topic_policy(queue_arn: &str, topic_arn: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AllowSnsDelivery",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}
        }]
    })
    .to_string()
}

/// Subscribes a queue to a topic (SNS returns the existing subscription when
/// there is one); returns the subscription ARN.
pub async fn subscribe_queue(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    queue_arn: &str,
    raw_delivery: bool,
) -> Result<String, BootstrapError> {
    subscribe_queue_filtered(sns, topic_arn, queue_arn, raw_delivery, None).await
}

/// [`subscribe_queue`] with a filter policy on message attributes: the queue
/// gets only the messages the policy matches.
pub async fn subscribe_queue_filtered(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    queue_arn: &str,
    raw_delivery: bool,
    filter_policy: Option<&str>,
) -> Result<String, BootstrapError> {
    let mut request = sns
        .subscribe()
        .topic_arn(topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", raw_delivery.to_string());
    if let Some(policy) = filter_policy {
        request = request.attributes("FilterPolicy", policy);
    }
    let out = request
        .return_subscription_arn(true)
        .send()
        .await
        .map_err(|e| BootstrapError(describe("Subscribe", &e)))?;
    out.subscription_arn
        .ok_or_else(|| BootstrapError(format!("Subscribe {queue_arn}: no SubscriptionArn")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_urls_and_arns() {
        assert_eq!(
            queue_name_from_url("http://127.0.0.1:5000/123456789012/cmds"),
            Some("cmds")
        );
        assert_eq!(
            queue_name_from_url("https://sqs.eu-west-1.amazonaws.com/123456789012/q.fifo/"),
            Some("q.fifo")
        );
        assert_eq!(queue_name_from_url(""), None);
        assert_eq!(
            topic_name_from_arn("arn:aws:sns:us-east-1:123456789012:events"),
            Some("events")
        );
        assert_eq!(topic_name_from_arn("events"), None);
        assert_eq!(
            topic_name_from_arn("arn:aws:sns:us-east-1:123456789012:"),
            None
        );
    }

    #[test]
    fn dead_letter_names_keep_the_fifo_suffix() {
        assert_eq!(dead_letter_name("cmds"), "cmds-dlq");
        assert_eq!(dead_letter_name("cmds.fifo"), "cmds-dlq.fifo");
    }
}
