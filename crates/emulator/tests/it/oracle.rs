//! The operations no other test of this crate drives (the bridge's suite
//! covers the rest, on moto and on the emulator), each checked the same way
//! against moto — the reference — and against the emulator: where they
//! differ, the emulator is wrong.

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use testkit::Aws;

use crate::{emulator, PATIENCE};

/// One pass of the checks on the SNS/SQS `aws` reaches; `on` names it in
/// failures.
async fn check(on: &str, aws: &Aws) {
    let name = testkit::unique_name("oracle");

    // GetQueueUrl, and the error for a queue that does not exist.
    let queue = aws.create_queue(&name).await;
    let url = aws
        .sqs
        .get_queue_url()
        .queue_name(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: GetQueueUrl: {e:?}"));
    assert_eq!(url.queue_url(), Some(queue.url.as_str()), "{on}");
    let missing = aws
        .sqs
        .get_queue_url()
        .queue_name(format!("{name}-missing"))
        .send()
        .await
        .expect_err("no such queue");
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_queue_does_not_exist()),
        "{on}: {missing:?}"
    );

    // TagQueue, UntagQueue, ListQueueTags.
    aws.sqs
        .tag_queue()
        .queue_url(&queue.url)
        .tags("a", "1")
        .tags("b", "2")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: TagQueue: {e:?}"));
    aws.sqs
        .untag_queue()
        .queue_url(&queue.url)
        .tag_keys("a")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: UntagQueue: {e:?}"));
    let tags = aws
        .sqs
        .list_queue_tags()
        .queue_url(&queue.url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: ListQueueTags: {e:?}"));
    let tags: Vec<(&String, &String)> = tags.tags().into_iter().flatten().collect();
    assert_eq!(tags, [(&"b".to_owned(), &"2".to_owned())], "{on}");

    // PurgeQueue.
    for body in ["x", "y", "z"] {
        aws.send(&queue.url, body).await;
    }
    aws.sqs
        .purge_queue()
        .queue_url(&queue.url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: PurgeQueue: {e:?}"));
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0), "{on}");

    // ChangeMessageVisibility: released at once, received again.
    let sent = aws.send(&queue.url, "again").await;
    let first = aws
        .sqs
        .receive_message()
        .queue_url(&queue.url)
        .visibility_timeout(30)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: ReceiveMessage: {e:?}"));
    let first = &first.messages()[0];
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 1), "{on}");
    aws.sqs
        .change_message_visibility()
        .queue_url(&queue.url)
        .receipt_handle(first.receipt_handle().unwrap_or_default())
        .visibility_timeout(0)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: ChangeMessageVisibility: {e:?}"));
    let again = aws
        .sqs
        .receive_message()
        .queue_url(&queue.url)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: ReceiveMessage: {e:?}"));
    let again = &again.messages()[0];
    assert_eq!(again.message_id(), Some(sent.as_str()), "{on}");
    assert_eq!(
        again
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .map(String::as_str),
        Some("2"),
        "{on}"
    );

    // Set/GetTopicAttributes.
    let topic = aws.create_topic(&name).await;
    aws.sns
        .set_topic_attributes()
        .topic_arn(&topic)
        .attribute_name("DisplayName")
        .attribute_value("Oracle")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: SetTopicAttributes: {e:?}"));
    let attributes = aws
        .sns
        .get_topic_attributes()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: GetTopicAttributes: {e:?}"));
    let attributes = attributes.attributes().cloned().unwrap_or_default();
    assert_eq!(attributes["DisplayName"], "Oracle", "{on}: {attributes:?}");
    assert_eq!(attributes["TopicArn"], topic, "{on}: {attributes:?}");

    // ListSubscriptions, Set/GetSubscriptionAttributes.
    let subscription = aws.subscribe_queue(&topic, &queue, false).await;
    let mut listed = None;
    let mut pages = aws.sns.list_subscriptions().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("{on}: ListSubscriptions: {e:?}"));
        if let Some(found) = page
            .subscriptions()
            .iter()
            .find(|s| s.subscription_arn() == Some(subscription.as_str()))
        {
            listed = Some(found.clone());
            break;
        }
    }
    let listed = listed.unwrap_or_else(|| panic!("{on}: {subscription} not listed"));
    assert_eq!(listed.topic_arn(), Some(topic.as_str()), "{on}");
    assert_eq!(listed.protocol(), Some("sqs"), "{on}");
    assert_eq!(listed.endpoint(), Some(queue.arn.as_str()), "{on}");
    aws.sns
        .set_subscription_attributes()
        .subscription_arn(&subscription)
        .attribute_name("RawMessageDelivery")
        .attribute_value("true")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: SetSubscriptionAttributes: {e:?}"));
    let attributes = aws
        .sns
        .get_subscription_attributes()
        .subscription_arn(&subscription)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{on}: GetSubscriptionAttributes: {e:?}"));
    let attributes = attributes.attributes().cloned().unwrap_or_default();
    assert_eq!(
        attributes["RawMessageDelivery"], "true",
        "{on}: {attributes:?}"
    );
    assert_eq!(attributes["TopicArn"], topic, "{on}: {attributes:?}");
    assert_eq!(attributes["Endpoint"], queue.arn, "{on}: {attributes:?}");
    // Raw delivery now: the bare message arrives.
    aws.publish(&topic, "raw now", &[]).await;
    let got = aws.receive_at_least(&queue.url, 1, PATIENCE).await;
    assert_eq!(got[0].body, "raw now", "{on}");

    // DeleteTopic: gone from ListTopics, its attributes NotFound.
    aws.unsubscribe(&subscription).await;
    aws.delete_topic(&topic).await;
    let missing = aws
        .sns
        .get_topic_attributes()
        .topic_arn(&topic)
        .send()
        .await
        .expect_err("the topic is deleted");
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_not_found_exception()),
        "{on}: {missing:?}"
    );
    let mut pages = aws.sns.list_topics().into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("{on}: ListTopics: {e:?}"));
        assert!(
            page.topics()
                .iter()
                .all(|t| t.topic_arn() != Some(topic.as_str())),
            "{on}: {topic} still listed"
        );
    }

    // DeleteQueue: GetQueueAttributes then fails.
    aws.delete_queue(&queue.url).await;
    let gone = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect_err("the queue is deleted");
    assert!(
        gone.as_service_error()
            .is_some_and(|e| e.is_queue_does_not_exist()),
        "{on}: {gone:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_operations_answer_as_moto_does() {
    check("moto", &testkit::moto().aws().await).await;
    let (emulator, aws) = emulator().await;
    check("the emulator", &aws).await;
    emulator.stop().await;
}
