//! Setting up and tearing down: topics, queues (with a policy that lets SNS
//! deliver, optionally a dead-letter queue), subscriptions.

use aws_sdk_sqs::types::QueueAttributeName;

use super::{fail, missing, Aws, TestQueue};

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
