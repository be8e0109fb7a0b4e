//! SQS and SNS helpers for tests. Every helper panics with the AWS error in full
//! when a call fails: a failed setup step is a failed test.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

/// Longest long poll SQS allows.
const MAX_WAIT_SECS: u64 = 20;

/// SQS and SNS clients built from one configuration, with helpers to set up
/// topics and queues and to look at what arrived. Build it inside the test
/// (clients belong to the runtime they were created on): `testkit::moto().aws().await`.
#[derive(Debug, Clone)]
pub struct Aws {
    /// The configuration both clients were built from (pass it to code under test).
    pub config: SdkConfig,
    /// SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// SNS client.
    pub sns: aws_sdk_sns::Client,
}

/// A queue created by a test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestQueue {
    /// Queue name.
    pub name: String,
    /// Queue URL (what SQS calls take).
    pub url: String,
    /// Queue ARN (what SNS subscriptions and redrive policies take).
    pub arn: String,
}

/// A message taken off a queue by [`Aws::receive_all`] or [`Aws::receive_at_least`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// SQS message id.
    pub message_id: String,
    /// The body, byte for byte.
    pub body: String,
    /// SQS message attributes (String and Number values; with raw delivery
    /// these are the SNS message attributes).
    pub attributes: BTreeMap<String, String>,
    /// How many times SQS has handed this message out (`ApproximateReceiveCount`).
    pub receive_count: u32,
}

impl Received {
    /// The body parsed as JSON. Panics if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of {} is not JSON ({e}): {}",
                self.message_id, self.body
            )
        })
    }

    /// True when the body is an SNS notification envelope (raw delivery off).
    pub fn is_sns_envelope(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .is_some_and(|v| v.get("Type").and_then(|t| t.as_str()) == Some("Notification"))
    }

    /// The `Message` of an SNS envelope, or the body itself when it is not one.
    pub fn payload(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .filter(|v| v.get("Type").and_then(|t| t.as_str()) == Some("Notification"))
            .and_then(|v| v.get("Message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| self.body.clone())
    }

    /// The message attributes as published to SNS: from inside the envelope
    /// (`MessageAttributes.<name>.Value`) when the body is one, else the SQS
    /// message attributes (raw delivery).
    pub fn published_attributes(&self) -> BTreeMap<String, String> {
        let envelope = serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .filter(|v| v.get("Type").and_then(|t| t.as_str()) == Some("Notification"));
        let Some(envelope) = envelope else {
            return self.attributes.clone();
        };
        envelope
            .get("MessageAttributes")
            .and_then(|a| a.as_object())
            .map(|attrs| {
                attrs
                    .iter()
                    .filter_map(|(k, v)| {
                        let value = v.get("Value")?.as_str()?;
                        Some((k.clone(), value.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn fail<E: std::error::Error>(what: &str, error: E) -> ! {
    panic!("testkit: {what} failed: {}", DisplayErrorContext(error))
}

fn missing<T: Debug>(what: &str, output: T) -> ! {
    panic!("testkit: {what} answered without the expected field: {output:?}")
}

/// A queue policy that lets any SNS topic send to the queue. Moto does not
/// enforce policies; real AWS would, and tests should set up what production needs.
fn sns_send_policy(queue_arn: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AllowSnsDelivery",
            "Effect": "Allow",
            "Principal": { "Service": "sns.amazonaws.com" },
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
        }]
    })
    .to_string()
}

impl Aws {
    /// Clients for `config`.
    pub fn new(config: SdkConfig) -> Self {
        Self {
            sqs: aws_sdk_sqs::Client::new(&config),
            sns: aws_sdk_sns::Client::new(&config),
            config,
        }
    }

    /// Create an SNS topic (idempotent) and return its ARN. A name ending in
    /// `.fifo` makes a FIFO topic with content-based de-duplication.
    pub async fn create_topic(&self, name: &str) -> String {
        let mut request = self.sns.create_topic().name(name);
        if name.ends_with(".fifo") {
            request = request
                .attributes("FifoTopic", "true")
                .attributes("ContentBasedDeduplication", "true");
        }
        let out = request
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("CreateTopic {name}"), e));
        match out.topic_arn() {
            Some(arn) => arn.to_owned(),
            None => missing("CreateTopic", out),
        }
    }

    /// Create a standard queue (or a FIFO queue with content-based
    /// de-duplication when the name ends in `.fifo`) whose policy lets SNS deliver to it.
    pub async fn create_queue(&self, name: &str) -> TestQueue {
        self.create_queue_with(name, &[]).await
    }

    /// Like [`Aws::create_queue`], with extra queue attributes
    /// (e.g. `(QueueAttributeName::VisibilityTimeout, "1".into())`).
    pub async fn create_queue_with(
        &self,
        name: &str,
        attributes: &[(QueueAttributeName, String)],
    ) -> TestQueue {
        let mut request = self.sqs.create_queue().queue_name(name);
        if name.ends_with(".fifo") {
            request = request
                .attributes(QueueAttributeName::FifoQueue, "true")
                .attributes(QueueAttributeName::ContentBasedDeduplication, "true");
        }
        for (key, value) in attributes {
            request = request.attributes(key.clone(), value.clone());
        }
        let out = request
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("CreateQueue {name}"), e));
        let url = match out.queue_url() {
            Some(url) => url.to_owned(),
            None => missing("CreateQueue", out),
        };
        let arn = self.queue_arn(&url).await;
        self.sqs
            .set_queue_attributes()
            .queue_url(&url)
            .attributes(QueueAttributeName::Policy, sns_send_policy(&arn))
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("SetQueueAttributes Policy on {name}"), e));
        TestQueue {
            name: name.to_owned(),
            url,
            arn,
        }
    }

    /// Create a queue and its dead-letter queue (`<name>-dlq`, or
    /// `<name>-dlq.fifo`), with a redrive policy moving a message there after
    /// `max_receive_count` receives. Returns `(queue, dead_letter_queue)`.
    pub async fn create_queue_with_dlq(
        &self,
        name: &str,
        max_receive_count: u32,
        attributes: &[(QueueAttributeName, String)],
    ) -> (TestQueue, TestQueue) {
        let dlq_name = match name.strip_suffix(".fifo") {
            Some(base) => format!("{base}-dlq.fifo"),
            None => format!("{name}-dlq"),
        };
        let dlq = self.create_queue(&dlq_name).await;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq.arn,
            "maxReceiveCount": max_receive_count.to_string(),
        })
        .to_string();
        let mut all = attributes.to_vec();
        all.push((QueueAttributeName::RedrivePolicy, redrive));
        let queue = self.create_queue_with(name, &all).await;
        (queue, dlq)
    }

    /// The ARN of the queue at `queue_url`.
    pub async fn queue_arn(&self, queue_url: &str) -> String {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("GetQueueAttributes QueueArn of {queue_url}"), e));
        match out
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        {
            Some(arn) => arn.clone(),
            None => missing("GetQueueAttributes QueueArn", out),
        }
    }

    /// Subscribe `queue` to `topic_arn`; `raw` turns on raw message delivery
    /// (body = the published message, attributes as SQS message attributes)
    /// instead of the SNS envelope. Returns the subscription ARN.
    pub async fn subscribe_queue(&self, topic_arn: &str, queue: &TestQueue, raw: bool) -> String {
        self.subscribe(topic_arn, queue, raw, None).await
    }

    /// Like [`Aws::subscribe_queue`], with a filter policy (JSON, on message attributes).
    pub async fn subscribe_queue_filtered(
        &self,
        topic_arn: &str,
        queue: &TestQueue,
        raw: bool,
        filter_policy: &str,
    ) -> String {
        self.subscribe(topic_arn, queue, raw, Some(filter_policy))
            .await
    }

    async fn subscribe(
        &self,
        topic_arn: &str,
        queue: &TestQueue,
        raw: bool,
        filter_policy: Option<&str>,
    ) -> String {
        let mut request = self
            .sns
            .subscribe()
            .topic_arn(topic_arn)
            .protocol("sqs")
            .endpoint(&queue.arn)
            .return_subscription_arn(true)
            .attributes("RawMessageDelivery", if raw { "true" } else { "false" });
        if let Some(policy) = filter_policy {
            request = request.attributes("FilterPolicy", policy);
        }
        let out = request
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("Subscribe {} to {topic_arn}", queue.arn), e));
        match out.subscription_arn() {
            Some(arn) => arn.to_owned(),
            None => missing("Subscribe", out),
        }
    }

    /// Remove a subscription (do this before deleting its queue: moto then
    /// fails every Publish to the topic).
    pub async fn unsubscribe(&self, subscription_arn: &str) {
        self.sns
            .unsubscribe()
            .subscription_arn(subscription_arn)
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("Unsubscribe {subscription_arn}"), e));
    }

    /// Publish `message` to a topic with String message attributes; returns the message id.
    pub async fn publish(
        &self,
        topic_arn: &str,
        message: &str,
        attributes: &[(&str, &str)],
    ) -> String {
        let mut request = self.sns.publish().topic_arn(topic_arn).message(message);
        for (name, value) in attributes {
            let value = aws_sdk_sns::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*value)
                .build()
                .unwrap_or_else(|e| fail("building an SNS message attribute", e));
            request = request.message_attributes(*name, value);
        }
        if topic_arn.ends_with(".fifo") {
            request = request.message_group_id("testkit");
        }
        let out = request
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("Publish to {topic_arn}"), e));
        match out.message_id() {
            Some(id) => id.to_owned(),
            None => missing("Publish", out),
        }
    }

    /// Send `body` straight to a queue; returns the message id. On a FIFO
    /// queue the message group is `testkit`.
    pub async fn send(&self, queue_url: &str, body: &str) -> String {
        self.send_with_attributes(queue_url, body, &[]).await
    }

    /// Send `body` to a queue with String message attributes; returns the message id.
    pub async fn send_with_attributes(
        &self,
        queue_url: &str,
        body: &str,
        attributes: &[(&str, &str)],
    ) -> String {
        let mut request = self
            .sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body);
        for (name, value) in attributes {
            let value = aws_sdk_sqs::types::MessageAttributeValue::builder()
                .data_type("String")
                .string_value(*value)
                .build()
                .unwrap_or_else(|e| fail("building an SQS message attribute", e));
            request = request.message_attributes(*name, value);
        }
        if queue_url.ends_with(".fifo") {
            request = request.message_group_id("testkit");
        }
        let out = request
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("SendMessage to {queue_url}"), e));
        match out.message_id() {
            Some(id) => id.to_owned(),
            None => missing("SendMessage", out),
        }
    }

    /// Take (receive and delete) every message that arrives on the queue during
    /// `wait`; always takes the whole `wait`. For "exactly these arrived" and
    /// "nothing arrived" assertions. Messages come back in the order received.
    pub async fn receive_all(&self, queue_url: &str, wait: Duration) -> Vec<Received> {
        self.take(queue_url, usize::MAX, wait).await
    }

    /// Take (receive and delete) messages until at least `n` have arrived or
    /// `timeout` has passed; returns what it has either way (assert on the length).
    pub async fn receive_at_least(
        &self,
        queue_url: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Received> {
        self.take(queue_url, n, timeout).await
    }

    async fn take(&self, queue_url: &str, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let wait = left.as_secs().min(MAX_WAIT_SECS);
            let batch = self.receive_once(queue_url, wait as i32).await;
            if batch.is_empty() {
                if wait == 0 {
                    tokio::time::sleep(left.min(Duration::from_millis(100))).await;
                }
                continue;
            }
            got.extend(batch);
        }
        got
    }

    /// One ReceiveMessage (up to 10 messages, all attributes) followed by a
    /// DeleteMessageBatch of what came back.
    async fn receive_once(&self, queue_url: &str, wait_secs: i32) -> Vec<Received> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("ReceiveMessage on {queue_url}"), e));
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return Vec::new();
        }
        let mut entries = Vec::with_capacity(messages.len());
        let mut received = Vec::with_capacity(messages.len());
        for (i, m) in messages.into_iter().enumerate() {
            if let Some(handle) = m.receipt_handle() {
                let entry = DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(handle)
                    .build()
                    .unwrap_or_else(|e| fail("building a DeleteMessageBatch entry", e));
                entries.push(entry);
            }
            let attributes = m
                .message_attributes()
                .map(|attrs| {
                    attrs
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.string_value()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            received.push(Received {
                message_id: m.message_id().unwrap_or_default().to_owned(),
                body: m.body().unwrap_or_default().to_owned(),
                attributes,
                receive_count,
            });
        }
        if !entries.is_empty() {
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap_or_else(|e| fail(&format!("DeleteMessageBatch on {queue_url}"), e));
            if !out.failed().is_empty() {
                panic!(
                    "testkit: DeleteMessageBatch on {queue_url} failed for {:?}",
                    out.failed()
                );
            }
        }
        received
    }

    /// `(visible, in_flight)`: ApproximateNumberOfMessages and
    /// ApproximateNumberOfMessagesNotVisible of the queue (moto's are exact).
    pub async fn queue_counts(&self, queue_url: &str) -> (u64, u64) {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("GetQueueAttributes counts of {queue_url}"), e));
        let count = |name: &QueueAttributeName| -> u64 {
            out.attributes()
                .and_then(|a| a.get(name))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| missing(&format!("GetQueueAttributes {name}"), &out))
        };
        (
            count(&QueueAttributeName::ApproximateNumberOfMessages),
            count(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    }

    /// Poll [`Aws::queue_counts`] every 50 ms until it equals `expected` or
    /// `timeout` passes; returns the last counts (assert on them).
    pub async fn wait_for_counts(
        &self,
        queue_url: &str,
        expected: (u64, u64),
        timeout: Duration,
    ) -> (u64, u64) {
        let deadline = Instant::now() + timeout;
        loop {
            let counts = self.queue_counts(queue_url).await;
            if counts == expected || Instant::now() >= deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Delete a queue.
    pub async fn delete_queue(&self, queue_url: &str) {
        self.sqs
            .delete_queue()
            .queue_url(queue_url)
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("DeleteQueue {queue_url}"), e));
    }

    /// Delete a topic.
    pub async fn delete_topic(&self, topic_arn: &str) {
        self.sns
            .delete_topic()
            .topic_arn(topic_arn)
            .send()
            .await
            .unwrap_or_else(|e| fail(&format!("DeleteTopic {topic_arn}"), e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(body: &str) -> Received {
        Received {
            message_id: "m1".into(),
            body: body.into(),
            attributes: BTreeMap::from([("sqs_attr".to_owned(), "x".to_owned())]),
            receive_count: 1,
        }
    }

    #[test]
    fn envelope_payload_and_attributes() {
        let envelope = serde_json::json!({
            "Type": "Notification",
            "MessageId": "abc",
            "Message": "{\"command\":\"go\"}",
            "MessageAttributes": {"client_id": {"Type": "String", "Value": "c1"}},
        })
        .to_string();
        let r = received(&envelope);
        assert!(r.is_sns_envelope());
        assert_eq!(r.payload(), "{\"command\":\"go\"}");
        assert_eq!(
            r.published_attributes(),
            BTreeMap::from([("client_id".to_owned(), "c1".to_owned())])
        );
    }

    #[test]
    fn raw_payload_and_attributes() {
        let r = received("{\"command\":\"go\"}");
        assert!(!r.is_sns_envelope());
        assert_eq!(r.payload(), r.body);
        assert_eq!(r.published_attributes(), r.attributes);
        assert_eq!(r.json()["command"], "go");
        let not_json = received("plain text");
        assert!(!not_json.is_sns_envelope());
        assert_eq!(not_json.payload(), "plain text");
    }

    #[test]
    fn policy_names_the_queue() {
        let policy: serde_json::Value =
            serde_json::from_str(&sns_send_policy("arn:aws:sqs:us-east-1:1:q")).unwrap_or_default();
        assert_eq!(
            policy["Statement"][0]["Resource"],
            "arn:aws:sqs:us-east-1:1:q"
        );
        assert_eq!(
            policy["Statement"][0]["Principal"]["Service"],
            "sns.amazonaws.com"
        );
    }
}
