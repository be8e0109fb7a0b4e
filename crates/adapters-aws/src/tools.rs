//! The operations behind `wsbridge send-command` and `wsbridge monitor`:
//! putting a Command on the queue or topic the way a backend would, and
//! watching what the bridge publishes to the events topic.

use std::collections::BTreeMap;
use std::time::SystemTime;

use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_types::date_time::Format;
use aws_smithy_types::DateTime;
use domain::{shard_of, ClientId, SnsEnvelope};
use serde_json::json;

use crate::bootstrap::{self, BootstrapError};
use crate::classify::describe;
use crate::sharded::SHARD_ATTRIBUTE;

/// A tool's call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(String);

impl From<BootstrapError> for ToolError {
    fn from(e: BootstrapError) -> Self {
        Self(e.to_string())
    }
}

/// Wraps a Command in an SNS `Notification` envelope, as an SNS → SQS
/// subscription with raw delivery off would.
pub fn envelope(command_json: &str, topic_arn: &str) -> String {
    json!({
        "Type": "Notification",
        "MessageId": random_id(),
        "TopicArn": topic_arn,
        "Message": command_json,
        "Timestamp": DateTime::from(SystemTime::now()).fmt(Format::DateTime).unwrap_or_default(),
        "SignatureVersion": "1",
        "Signature": "",
        "SigningCertURL": "",
        "UnsubscribeURL": "",
    })
    .to_string()
}

fn random_id() -> String {
    let n: u128 = rand::random();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The URL of the queue named `name` on the configured endpoint.
pub async fn queue_url_by_name(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String, ToolError> {
    let out = sqs
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| ToolError(describe(&format!("GetQueueUrl {name}"), &e)))?;
    out.queue_url
        .ok_or_else(|| ToolError(format!("GetQueueUrl {name}: no URL in the answer")))
}

/// The ARN of the topic named `name` (SNS has no lookup by name: the
/// account's topics are listed, page by page).
pub async fn topic_arn_by_name(sns: &aws_sdk_sns::Client, name: &str) -> Result<String, ToolError> {
    let mut next: Option<String> = None;
    loop {
        let out = sns
            .list_topics()
            .set_next_token(next.take())
            .send()
            .await
            .map_err(|e| ToolError(describe("ListTopics", &e)))?;
        let found = out
            .topics()
            .iter()
            .filter_map(|t| t.topic_arn())
            .find(|arn| bootstrap::topic_name_from_arn(arn) == Some(name));
        if let Some(arn) = found {
            return Ok(arn.to_owned());
        }
        match out.next_token {
            Some(token) if !token.is_empty() => next = Some(token),
            _ => return Err(ToolError(format!("no topic named {name}"))),
        }
    }
}

/// Sends a Command straight to a queue (the envelope or the bare body);
/// returns the SQS message id.
pub async fn send_to_queue(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    body: &str,
    client_id: &ClientId,
) -> Result<String, ToolError> {
    let mut request = sqs.send_message().queue_url(queue_url).message_body(body);
    if queue_url.ends_with(".fifo") {
        request = request
            .message_group_id(client_id.as_str())
            .message_deduplication_id(random_id());
    }
    let out = request
        .send()
        .await
        .map_err(|e| ToolError(describe("SendMessage", &e)))?;
    Ok(out.message_id.unwrap_or_default())
}

/// Publishes a Command to the commands topic, with a `client_id` attribute
/// for subscriptions that filter on it and, given the fleet's number of
/// shards, the Number attribute `shard` that sharded replicas' subscriptions
/// filter on; returns the SNS message id.
pub async fn publish_to_topic(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    command_json: &str,
    client_id: &ClientId,
    shards: Option<u32>,
) -> Result<String, ToolError> {
    publish_to_topic_with(sns, topic_arn, command_json, client_id, shards, &[]).await
}

/// [`publish_to_topic`], with `extra` String attributes besides.
pub async fn publish_to_topic_with(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    command_json: &str,
    client_id: &ClientId,
    shards: Option<u32>,
    extra: &[(&str, &str)],
) -> Result<String, ToolError> {
    let attribute = |data_type: &str, value: String| {
        MessageAttributeValue::builder()
            .data_type(data_type)
            .string_value(value)
            .build()
            .map_err(|e| ToolError(e.to_string()))
    };
    let mut request = sns
        .publish()
        .topic_arn(topic_arn)
        .message(command_json)
        .message_attributes("client_id", attribute("String", client_id.to_string())?);
    if let Some(shards) = shards {
        let shard = shard_of(client_id, shards);
        request =
            request.message_attributes(SHARD_ATTRIBUTE, attribute("Number", shard.to_string())?);
    }
    for (name, value) in extra {
        request = request.message_attributes(*name, attribute("String", (*value).to_owned())?);
    }
    if topic_arn.ends_with(".fifo") {
        request = request
            .message_group_id(client_id.as_str())
            .message_deduplication_id(random_id());
    }
    let out = request
        .send()
        .await
        .map_err(|e| ToolError(describe("Publish", &e)))?;
    Ok(out.message_id.unwrap_or_default())
}

/// One event seen on the events topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    /// SNS message id.
    pub message_id: String,
    /// The published ClientMessage JSON.
    pub message: String,
    /// The message attributes (`client_id`, `action`, …).
    pub attributes: BTreeMap<String, String>,
}

/// A temporary queue subscribed to the events topic.
#[derive(Debug)]
pub struct Monitor {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    queue_url: String,
    subscription_arn: String,
}

impl Monitor {
    /// Creates a uniquely named queue and subscribes it to `events_topic_arn`.
    pub async fn start(
        sqs: aws_sdk_sqs::Client,
        sns: aws_sdk_sns::Client,
        events_topic_arn: &str,
    ) -> Result<Self, ToolError> {
        let suffix = if events_topic_arn.ends_with(".fifo") {
            ".fifo"
        } else {
            ""
        };
        let name = format!("wsbridge-monitor-{}{suffix}", &random_id()[..8]);
        let queue_url = bootstrap::create_queue(&sqs, &name).await?;
        let queue_arn = bootstrap::queue_arn(&sqs, &queue_url).await?;
        sqs.set_queue_attributes()
            .queue_url(&queue_url)
            .attributes(
                QueueAttributeName::Policy,
                bootstrap::allow_topic_policy(&queue_arn, events_topic_arn),
            )
            .send()
            .await
            .map_err(|e| ToolError(describe("SetQueueAttributes", &e)))?;
        let subscription_arn =
            bootstrap::subscribe_queue(&sns, events_topic_arn, &queue_arn, false).await?;
        Ok(Self {
            sqs,
            sns,
            queue_url,
            subscription_arn,
        })
    }

    /// The temporary queue's URL.
    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    /// Waits up to `wait_seconds` for events, deletes and returns them.
    pub async fn next_events(&self, wait_seconds: i32) -> Result<Vec<SeenEvent>, ToolError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_seconds)
            .send()
            .await
            .map_err(|e| ToolError(describe("ReceiveMessage", &e)))?;
        let mut seen = Vec::new();
        for message in out.messages.unwrap_or_default() {
            let body = message.body.unwrap_or_default();
            seen.push(match serde_json::from_str::<SnsEnvelope>(&body) {
                Ok(envelope) => SeenEvent {
                    message_id: envelope.message_id,
                    message: envelope.message,
                    attributes: envelope
                        .message_attributes
                        .into_iter()
                        .map(|(k, v)| (k, v.value))
                        .collect(),
                },
                Err(_) => SeenEvent {
                    message_id: message.message_id.unwrap_or_default(),
                    message: body,
                    attributes: BTreeMap::new(),
                },
            });
            if let Some(receipt) = message.receipt_handle {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .map_err(|e| ToolError(describe("DeleteMessage", &e)))?;
            }
        }
        Ok(seen)
    }

    /// Unsubscribes, then deletes the queue (in that order: SNS refuses to
    /// publish to a topic with a subscription to a deleted queue on some
    /// emulators).
    pub async fn stop(self) -> Result<(), ToolError> {
        self.sns
            .unsubscribe()
            .subscription_arn(&self.subscription_arn)
            .send()
            .await
            .map_err(|e| ToolError(describe("Unsubscribe", &e)))?;
        self.sqs
            .delete_queue()
            .queue_url(&self.queue_url)
            .send()
            .await
            .map_err(|e| ToolError(describe("DeleteQueue", &e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_decodes_back_to_the_command() {
        let command = r#"{"command":"test","client_id":"client123"}"#;
        let body = envelope(command, "arn:aws:sns:us-east-1:123456789012:t");
        let decoded = domain::decode_sqs_body(&body).unwrap();
        assert_eq!(&*decoded.json, command);
        assert_eq!(decoded.client_id.as_str(), "client123");
        assert!(decoded.sns_message_id.is_some_and(|id| id.len() == 36));
    }
}
