//! What the source learns about its queue once, at its first receive: the
//! visibility timeout (held deliveries are extended ahead of it), where
//! given-up messages go (the dead-letter queue), and after how many receives
//! SQS moves a message there by itself (`maxReceiveCount`).

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::Client;
use domain::SourceError;
use tracing::{info, warn};

use crate::classify::source_error;

/// The queue's facts that settle how messages are held and given up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct QueueFacts {
    /// The queue's `VisibilityTimeout`.
    pub(super) visibility: Duration,
    /// Where given-up messages are sent: the `dead_letter_queue_url`
    /// setting, else the `deadLetterTargetArn` of the queue's RedrivePolicy.
    pub(super) dead_letter_url: Option<String>,
    /// Whether the dead-letter queue is a FIFO queue.
    pub(super) dead_letter_fifo: bool,
    /// The RedrivePolicy's `maxReceiveCount`: a message received that many
    /// times goes to the dead-letter queue on its next receive.
    pub(super) max_receive_count: Option<u32>,
}

/// Reads the queue's attributes and finds its dead-letter queue; warns once
/// when there is none (given-up messages are then deleted).
pub(super) async fn learn(
    client: &Client,
    queue_url: &str,
    configured_dead_letter_url: Option<&str>,
) -> Result<QueueFacts, SourceError> {
    let attrs = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| source_error("GetQueueAttributes", e))?;
    let attrs = attrs.attributes();
    let attr = |name: QueueAttributeName| attrs.and_then(|a| a.get(&name));
    let visibility = attr(QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(30), Duration::from_secs);
    let max_receive_count = attr(QueueAttributeName::RedrivePolicy).and_then(|p| receive_limit(p));
    let dead_letter_url = match configured_dead_letter_url {
        Some(url) => Some(url.to_owned()),
        None => match attr(QueueAttributeName::RedrivePolicy).and_then(|p| target_arn(p)) {
            Some(arn) => Some(url_of_arn(client, &arn).await?),
            None => None,
        },
    };
    match &dead_letter_url {
        Some(url) => {
            info!(queue = queue_url, dead_letter_queue = %url, ?visibility, ?max_receive_count, "command queue")
        }
        None => warn!(
            queue = queue_url,
            "the command queue has no dead-letter queue (no RedrivePolicy, no \
             dead_letter_queue_url): Commands the bridge gives up on (malformed, \
             undeliverable) are deleted and only logged"
        ),
    }
    let dead_letter_fifo = dead_letter_url
        .as_deref()
        .is_some_and(|u| u.ends_with(".fifo"));
    Ok(QueueFacts {
        visibility,
        dead_letter_url,
        dead_letter_fifo,
        max_receive_count,
    })
}

/// The `deadLetterTargetArn` of a RedrivePolicy document.
fn target_arn(policy: &str) -> Option<String> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    policy
        .get("deadLetterTargetArn")?
        .as_str()
        .map(str::to_owned)
}

/// The `maxReceiveCount` of a RedrivePolicy document (a number, or a
/// string holding one: SQS accepts and returns both).
fn receive_limit(policy: &str) -> Option<u32> {
    let policy: serde_json::Value = serde_json::from_str(policy).ok()?;
    match policy.get("maxReceiveCount")? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|&n| n > 0)
}

/// The URL of the queue `arn:aws:sqs:REGION:ACCOUNT:NAME`.
async fn url_of_arn(client: &Client, arn: &str) -> Result<String, SourceError> {
    let mut parts = arn.rsplitn(3, ':');
    let (Some(name), Some(account)) = (parts.next(), parts.next()) else {
        return Err(SourceError::Misconfigured(format!(
            "RedrivePolicy: deadLetterTargetArn {arn:?} is not a queue ARN"
        )));
    };
    let out = client
        .get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(|e| source_error("GetQueueUrl (dead-letter queue)", e))?;
    out.queue_url()
        .map(str::to_owned)
        .ok_or_else(|| SourceError::Unavailable("GetQueueUrl answered no URL".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_arn_is_read_from_a_redrive_policy() {
        let policy = r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:dlq","maxReceiveCount":"5"}"#;
        assert_eq!(
            target_arn(policy).as_deref(),
            Some("arn:aws:sqs:us-east-1:123456789012:dlq")
        );
        assert_eq!(target_arn("{}"), None);
        assert_eq!(target_arn("not json"), None);
    }

    #[test]
    fn the_receive_limit_is_read_as_a_number_or_a_string() {
        assert_eq!(receive_limit(r#"{"maxReceiveCount":"5"}"#), Some(5));
        assert_eq!(receive_limit(r#"{"maxReceiveCount":4}"#), Some(4));
        assert_eq!(receive_limit(r#"{"maxReceiveCount":"x"}"#), None);
        assert_eq!(receive_limit(r#"{"maxReceiveCount":99999999999}"#), None);
        assert_eq!(receive_limit(r#"{"maxReceiveCount":0}"#), None);
        assert_eq!(receive_limit("{}"), None);
    }
}
