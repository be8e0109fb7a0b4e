//! Messages: publishing to a topic, sending to a queue, receiving what
//! arrived (deleting it), and waiting for a queue's counts.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

use super::{fail, missing, Aws, Received};

/// Longest long poll SQS allows.
const MAX_WAIT_SECS: u64 = 20;

impl Aws {
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
}
