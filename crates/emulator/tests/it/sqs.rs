//! SQS operations through the real SDK client.

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};

use crate::{emulator, PATIENCE};

#[tokio::test]
async fn batches_long_polls_receipts_and_visibility() {
    let (emulator, aws) = emulator().await;
    let queue = aws.create_queue("commands").await;
    let entries = (0..3)
        .map(|i| {
            SendMessageBatchRequestEntry::builder()
                .id(format!("e{i}"))
                .message_body(format!("body {i}"))
                .build()
                .unwrap()
        })
        .collect();
    let sent = aws
        .sqs
        .send_message_batch()
        .queue_url(&queue.url)
        .set_entries(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.successful().len(), 3);
    // MD5 of "body 0".
    assert_eq!(
        sent.successful()[0].md5_of_message_body(),
        "2c2f1edb5aac06c6c201d1fe8916de7d"
    );

    let got = aws
        .sqs
        .receive_message()
        .queue_url(&queue.url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
        .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
        .send()
        .await
        .unwrap();
    let messages = got.messages();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[0].body(), Some("body 0"));
    let attributes = messages[0].attributes().unwrap();
    assert_eq!(
        attributes[&MessageSystemAttributeName::ApproximateReceiveCount],
        "1"
    );
    assert!(
        attributes[&MessageSystemAttributeName::SentTimestamp]
            .parse::<u64>()
            .unwrap()
            > 1_600_000_000_000
    );

    // Release the first at once, delete the others (one entry with a bogus handle).
    aws.sqs
        .change_message_visibility_batch()
        .queue_url(&queue.url)
        .entries(
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id("r0")
                .receipt_handle(messages[0].receipt_handle().unwrap())
                .visibility_timeout(0)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut deletes: Vec<_> = messages[1..]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("d{i}"))
                .receipt_handle(m.receipt_handle().unwrap())
                .build()
                .unwrap()
        })
        .collect();
    deletes.push(
        DeleteMessageBatchRequestEntry::builder()
            .id("bogus")
            .receipt_handle("not-a-handle")
            .build()
            .unwrap(),
    );
    let deleted = aws
        .sqs
        .delete_message_batch()
        .queue_url(&queue.url)
        .set_entries(Some(deletes))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.successful().len(), 2);
    assert_eq!(deleted.failed().len(), 1);
    assert_eq!(deleted.failed()[0].id(), "bogus");
    assert_eq!(deleted.failed()[0].code(), "ReceiptHandleIsInvalid");
    assert!(deleted.failed()[0].sender_fault());

    // The released one comes back, received a second time.
    let again = aws.receive_at_least(&queue.url, 1, PATIENCE).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].body, "body 0");
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
    emulator.stop().await;
}

#[tokio::test]
async fn sent_message_md5_matches_the_body() {
    let (emulator, aws) = emulator().await;
    let queue = aws.create_queue("md5").await;
    let out = aws
        .sqs
        .send_message()
        .queue_url(&queue.url)
        .message_body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.md5_of_message_body(),
        Some("900150983cd24fb0d6963f7d28e17f72")
    );
    emulator.stop().await;
}

#[tokio::test]
async fn a_long_poll_answers_as_soon_as_a_message_arrives() {
    let (emulator, aws) = emulator().await;
    let queue = aws.create_queue("long-poll").await;
    let poll = {
        let (sqs, url) = (aws.sqs.clone(), queue.url.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let out = sqs
                .receive_message()
                .queue_url(url)
                .wait_time_seconds(20)
                .send()
                .await
                .unwrap();
            (out.messages().len(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    aws.send(&queue.url, "wake").await;
    let (count, waited) = poll.await.unwrap();
    assert_eq!(count, 1);
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");

    // An empty queue answers after the wait, not before.
    let started = Instant::now();
    let out = aws
        .sqs
        .receive_message()
        .queue_url(&queue.url)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    assert!(out.messages().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
    emulator.stop().await;
}

#[tokio::test]
async fn missing_queues_are_reported_as_such() {
    let (emulator, aws) = emulator().await;
    let url = format!("{}/123456789012/nope", emulator.endpoint());
    let error = aws
        .sqs
        .receive_message()
        .queue_url(&url)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(error.is_queue_does_not_exist(), "{error:?}");
    emulator.stop().await;
}

#[tokio::test]
async fn attributes_tags_listing_and_redrive() {
    let (emulator, aws) = emulator().await;
    let (queue, dlq) = aws.create_queue_with_dlq("main", 2, &[]).await;
    let attributes = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&queue.url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attributes = attributes.attributes().unwrap();
    assert_eq!(attributes[&QueueAttributeName::QueueArn], queue.arn);
    assert!(attributes.contains_key(&QueueAttributeName::RedrivePolicy));

    aws.sqs
        .tag_queue()
        .queue_url(&queue.url)
        .tags("owner", "bench")
        .send()
        .await
        .unwrap();
    let tags = adapters_aws::fanout::queue_tags(&aws.sqs, &queue.url)
        .await
        .unwrap();
    assert_eq!(tags["owner"], "bench");
    let listed = aws
        .sqs
        .list_queues()
        .queue_name_prefix("main")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.queue_urls().len(), 2, "{listed:?}");

    // Received twice without a delete (maxReceiveCount 2).
    aws.send(&queue.url, "poison").await;
    for _ in 0..2 {
        let got = aws
            .sqs
            .receive_message()
            .queue_url(&queue.url)
            .visibility_timeout(0)
            .send()
            .await
            .unwrap();
        assert_eq!(got.messages().len(), 1);
    }
    // The third receive moves it instead of returning it (as SQS does).
    let third = aws
        .sqs
        .receive_message()
        .queue_url(&queue.url)
        .send()
        .await
        .unwrap();
    assert!(third.messages().is_empty());
    let moved = aws.receive_at_least(&dlq.url, 1, PATIENCE).await;
    assert_eq!(moved[0].body, "poison");
    emulator.stop().await;
}

#[tokio::test]
async fn fifo_queues_keep_group_order_and_drop_duplicates() {
    let (emulator, aws) = emulator().await;
    let url = aws
        .sqs
        .create_queue()
        .queue_name("orders.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    for body in ["first", "second", "first"] {
        aws.sqs
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .message_group_id("g")
            .send()
            .await
            .unwrap();
    }
    let got = aws
        .sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
        .send()
        .await
        .unwrap();
    let bodies: Vec<_> = got.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, ["first", "second"]);
    assert_eq!(
        got.messages()[0].attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId],
        "g"
    );
    emulator.stop().await;
}

/// SQS counts a batch's bodies and message attributes against its 256 KiB:
/// two entries whose bodies alone fit are refused with their attributes.
#[tokio::test]
async fn a_batch_over_256_kib_with_its_attributes_is_refused_whole() {
    let (_emulator, aws) = emulator().await;
    let queue = aws.create_queue("batch-size").await;
    let entry = |id: &str, value: &str| {
        SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body("b".repeat(130_000))
            .message_attributes(
                "wsbridge_detail",
                aws_sdk_sqs::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(value)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let send = |entries: Vec<SendMessageBatchRequestEntry>| {
        aws.sqs
            .send_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
    };

    // 260 000 bytes of bodies, 264 400 with the attributes.
    let long = "d".repeat(2_179);
    let error = send(vec![entry("a", &long), entry("b", &long)])
        .await
        .unwrap_err();
    let error = error.into_service_error();
    assert_eq!(
        error.meta().code(),
        Some("AWS.SimpleQueueService.BatchRequestTooLong"),
        "{error:?}"
    );
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0), "nothing sent");

    // Within the limit with them: both sent.
    let sent = send(vec![entry("a", "short"), entry("b", "short")])
        .await
        .unwrap();
    assert_eq!(sent.successful().len(), 2);
}
