//! `SqsCommandSource` against moto, through each client of its hot calls:
//! every test runs twice, `::sdk` (the AWS SDK) and `::lean`
//! (`SqsHttpClient`), and both must behave the same.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use adapters_aws::{SqsCommandSource, SqsSourceSettings};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use domain::{CommandSource, DeadLetter, GiveUpReason, InboundMessage, Receipt, SourceError};
use testkit::{moto, unique_name, Aws};

use crate::support::{closed_port, source_with, take_raw, with_client, Client, SendBatchLog, WAIT};

both_clients!(
    receive_returns_body_id_receipt_sent_time_and_receive_count,
    receive_takes_at_most_ten_messages_at_a_time,
    first_receive_does_not_wait_later_ones_long_poll,
    acknowledge_deletes_exactly_the_given_messages,
    acknowledge_more_than_ten_receipts_in_one_call,
    acknowledge_with_a_repeated_receipt_succeeds,
    release_without_delay_makes_the_message_receivable_at_once,
    release_with_a_delay_keeps_the_message_invisible_that_long,
    a_given_up_message_goes_to_the_redrive_target_at_once_with_its_reason,
    the_dead_letter_queue_setting_wins_over_the_redrive_policy,
    a_failed_dead_letter_send_leaves_the_message_in_the_source,
    large_letters_go_to_the_dead_letter_queue_in_calls_sqs_accepts,
    a_fifo_dead_letter_keeps_the_group_and_a_derived_deduplication_id,
    without_a_dead_letter_queue_a_given_up_message_is_deleted,
    extending_keeps_a_held_message_invisible_past_its_visibility_timeout,
    receive_from_a_missing_queue_is_misconfigured,
    receive_from_a_closed_port_is_unavailable,
);

/// A source whose long polls are short, so a test never waits 20 s on an
/// empty queue.
fn source(client: Client, aws: &Aws, queue_url: &str) -> SqsCommandSource {
    source_with(
        client,
        &aws.config,
        queue_url,
        SqsSourceSettings {
            wait_time: Duration::from_secs(1),
            ..SqsSourceSettings::default()
        },
    )
}

/// Receives until at least `n` messages came back or [`WAIT`] passed.
async fn receive_n(source: &SqsCommandSource, n: usize) -> Vec<InboundMessage> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(source.receive().await.unwrap());
    }
    got
}

fn receipts(messages: &[InboundMessage]) -> Vec<Receipt> {
    messages.iter().map(|m| m.receipt.clone()).collect()
}

async fn receive_returns_body_id_receipt_sent_time_and_receive_count(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-recv")).await;
    let source = source(client, &aws, &queue.url);
    assert_eq!(source.queue_url(), queue.url);

    let body = r#"{"client_id":"c1","command":"ping","data":{"n":1}}"#;
    let before = SystemTime::now() - Duration::from_secs(1);
    let id = aws.send(&queue.url, body).await;
    let after = SystemTime::now() + Duration::from_secs(1);

    let got = receive_n(&source, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m.message_id, id);
    assert_eq!(m.body, body);
    assert!(!m.receipt.token().is_empty());
    assert_eq!(m.receive_count, 1);
    let sent_at = m.sent_at.expect("SentTimestamp was asked for");
    assert!(
        before <= sent_at && sent_at <= after,
        "sent_at {sent_at:?} not within {before:?}..{after:?}"
    );
    // Received means in flight, not deleted.
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 1));

    // Handed out again: the count goes up and the receipt changes.
    source
        .release(vec![m.receipt.clone()], Duration::ZERO)
        .await
        .unwrap();
    let again = receive_n(&source, 1).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].message_id, id);
    assert_eq!(again[0].receive_count, 2);
    assert_eq!(again[0].sent_at, Some(sent_at));
    assert_ne!(again[0].receipt, m.receipt);
}

async fn receive_takes_at_most_ten_messages_at_a_time(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-ten")).await;
    let mut sent = BTreeMap::new();
    for i in 0..12 {
        let body = format!(r#"{{"client_id":"c1","command":"n{i}"}}"#);
        sent.insert(aws.send(&queue.url, &body).await, body);
    }
    let source = source(client, &aws, &queue.url);

    let first = source.receive().await.unwrap();
    // Moto hands out everything visible up to the maximum (real SQS may
    // return fewer, never more).
    assert_eq!(first.len(), 10, "{first:?}");
    let mut got: Vec<InboundMessage> = first;
    got.extend(receive_n(&source, 2).await);
    assert_eq!(got.len(), 12);
    let received: BTreeMap<String, String> =
        got.into_iter().map(|m| (m.message_id, m.body)).collect();
    assert_eq!(received, sent);
}

async fn first_receive_does_not_wait_later_ones_long_poll(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-warm")).await;
    let source = source_with(
        client,
        &aws.config,
        &queue.url,
        SqsSourceSettings {
            wait_time: Duration::from_secs(20),
            ..SqsSourceSettings::default()
        },
    );
    // The first receive of an empty queue answers at once instead of after 20 s.
    let first = tokio::time::timeout(WAIT, source.receive()).await;
    assert_eq!(first, Ok(Ok(Vec::new())));
    // The next one long-polls: on an empty queue it is still waiting later.
    let second = tokio::time::timeout(Duration::from_millis(1500), source.receive()).await;
    assert!(second.is_err(), "second receive returned {second:?}");
}

async fn acknowledge_deletes_exactly_the_given_messages(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-ack")).await;
    for i in 0..3 {
        aws.send(&queue.url, &format!("m{i}")).await;
    }
    let source = source(client, &aws, &queue.url);
    let mut got = receive_n(&source, 3).await;
    assert_eq!(got.len(), 3);
    got.sort_by(|a, b| a.body.cmp(&b.body));
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 3));

    source.acknowledge(receipts(&got[..2])).await.unwrap();
    // The two are gone; the third is still in flight.
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 1));

    source
        .release(vec![got[2].receipt.clone()], Duration::ZERO)
        .await
        .unwrap();
    let left = aws.receive_all(&queue.url, Duration::from_secs(1)).await;
    let bodies: Vec<&str> = left.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["m2"]);
}

async fn acknowledge_more_than_ten_receipts_in_one_call(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-ack25")).await;
    for i in 0..25 {
        aws.send(&queue.url, &format!("m{i}")).await;
    }
    let source = source(client, &aws, &queue.url);
    let got = receive_n(&source, 25).await;
    assert_eq!(got.len(), 25);
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 25));

    source.acknowledge(receipts(&got)).await.unwrap();
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
}

async fn acknowledge_with_a_repeated_receipt_succeeds(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-ackdup")).await;
    aws.send(&queue.url, "a").await;
    aws.send(&queue.url, "b").await;
    let source = source(client, &aws, &queue.url);
    let got = receive_n(&source, 2).await;
    assert_eq!(got.len(), 2);

    // The downlink may settle one message twice (e.g. a duplicate delivery
    // in one batch); that must not fail the whole call.
    let repeated = vec![
        got[0].receipt.clone(),
        got[0].receipt.clone(),
        got[1].receipt.clone(),
    ];
    source.acknowledge(repeated).await.unwrap();
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
}

async fn release_without_delay_makes_the_message_receivable_at_once(client: Client) {
    let aws = moto().aws().await;
    // Default visibility timeout (30 s): only the release can bring it back soon.
    let queue = aws.create_queue(&unique_name("src-rel0")).await;
    let id = aws.send(&queue.url, "m").await;
    let source = source(client, &aws, &queue.url);
    let got = receive_n(&source, 1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 1));

    // Repeated receipts are harmless here too.
    source
        .release(receipts(&[got[0].clone(), got[0].clone()]), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(aws.queue_counts(&queue.url).await, (1, 0));
    let again = source.receive().await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].message_id, id);
    assert_eq!(again[0].receive_count, 2);
}

async fn release_with_a_delay_keeps_the_message_invisible_that_long(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-rel2")).await;
    let id = aws.send(&queue.url, "m").await;
    let source = source(client, &aws, &queue.url);
    let got = receive_n(&source, 1).await;
    assert_eq!(got.len(), 1);

    let delay = Duration::from_secs(2);
    let released_at = Instant::now();
    source
        .release(vec![got[0].receipt.clone()], delay)
        .await
        .unwrap();
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 1));

    let counts = aws.wait_for_counts(&queue.url, (1, 0), WAIT).await;
    let visible_after = released_at.elapsed();
    assert_eq!(counts, (1, 0), "never became visible again");
    // Moto sets the deadline after our clock started: it cannot be visible earlier.
    assert!(
        visible_after >= delay - Duration::from_millis(100),
        "visible again after {visible_after:?}, delay was {delay:?}"
    );
    let again = receive_n(&source, 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, id);
}

fn letters(messages: Vec<InboundMessage>, reason: GiveUpReason, detail: &str) -> Vec<DeadLetter> {
    messages
        .into_iter()
        .map(|m| DeadLetter::new(m, reason, detail))
        .collect()
}

async fn a_given_up_message_goes_to_the_redrive_target_at_once_with_its_reason(client: Client) {
    let aws = moto().aws().await;
    let (queue, dlq) = aws
        .create_queue_with_dlq(&unique_name("src-dl"), 5, &[])
        .await;
    // Bytes a JSON round trip would change: they must arrive as sent.
    let body = "not a command \u{e9}  {\"x\": 1.50}";
    let id = aws
        .send_with_attributes(&queue.url, body, &[("trace_id", "t-1")])
        .await;
    let source = source(client, &aws, &queue.url);
    let got = receive_n(&source, 1).await;
    assert_eq!(got[0].attributes.len(), 1, "attributes are received");
    let long_detail = "x".repeat(1000);

    source
        .dead_letter(letters(got, GiveUpReason::Malformed, &long_detail))
        .await
        .unwrap();

    // On its first receive, not after maxReceiveCount × visibility timeout.
    assert_eq!(
        aws.queue_counts(&queue.url).await,
        (0, 0),
        "deleted from the source"
    );
    let dead = aws.receive_at_least(&dlq.url, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, body);
    assert_ne!(
        dead[0].message_id, id,
        "a new message in the dead-letter queue"
    );
    let attrs = &dead[0].attributes;
    assert_eq!(
        attrs.get("wsbridge_reason").map(String::as_str),
        Some("malformed")
    );
    assert_eq!(attrs.get("wsbridge_detail").map(String::len), Some(256));
    assert_eq!(attrs.get("trace_id").map(String::as_str), Some("t-1"));
}

/// Ten large malformed Commands given up at once: SendMessageBatch takes
/// 256 KiB at most in one call (moto refuses more than 1 MiB of bodies),
/// so they go out in several calls, each within the limit, and all ten
/// reach the dead-letter queue with their reason, byte for byte.
async fn large_letters_go_to_the_dead_letter_queue_in_calls_sqs_accepts(client: Client) {
    let aws = moto().aws().await;
    let (queue, dlq) = aws
        .create_queue_with_dlq(&unique_name("src-big"), 5, &[])
        .await;
    // 110 KiB each: ten pass even moto's 1 MiB batch limit.
    let bodies: BTreeSet<String> = (0..10)
        .map(|n| {
            format!(
                "{{\"client_id\": \"c{n}\", \u{e9}{}",
                "x".repeat(110 * 1024)
            )
        })
        .collect();
    for body in &bodies {
        aws.send_with_attributes(&queue.url, body, &[("trace_id", "t-1")])
            .await;
    }
    let log = SendBatchLog::default();
    let source = with_client(
        client,
        &aws.config,
        SqsCommandSource::new(
            log.sqs_client(&aws.config),
            &queue.url,
            SqsSourceSettings {
                wait_time: Duration::from_secs(1),
                ..SqsSourceSettings::default()
            },
        ),
    );
    let got = receive_n(&source, 10).await;
    assert_eq!(got.len(), 10);

    source
        .dead_letter(letters(got, GiveUpReason::Malformed, "expected value"))
        .await
        .unwrap();

    let calls = log.payload_sizes();
    assert!(
        calls.len() >= 5,
        "ten 110 KiB letters need 5 calls: {calls:?}"
    );
    assert!(
        calls.iter().all(|bytes| *bytes <= 262_144),
        "a call over 256 KiB: {calls:?}"
    );
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0), "source empty");
    let dead = aws.receive_at_least(&dlq.url, 10, WAIT).await;
    assert_eq!(dead.len(), 10);
    for message in &dead {
        assert_eq!(
            message
                .attributes
                .get("wsbridge_reason")
                .map(String::as_str),
            Some("malformed")
        );
        assert_eq!(
            message.attributes.get("trace_id").map(String::as_str),
            Some("t-1")
        );
    }
    let dead_bodies: BTreeSet<String> = dead.into_iter().map(|m| m.body).collect();
    assert_eq!(dead_bodies, bodies);
}

async fn the_dead_letter_queue_setting_wins_over_the_redrive_policy(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-dl-set")).await;
    let chosen = aws.create_queue(&unique_name("chosen-dlq")).await;
    aws.send(&queue.url, "{}").await;
    let source = source_with(
        client,
        &aws.config,
        &queue.url,
        SqsSourceSettings {
            wait_time: Duration::from_secs(1),
            dead_letter_queue_url: Some(chosen.url.clone()),
            ..SqsSourceSettings::default()
        },
    );
    let got = receive_n(&source, 1).await;
    source
        .dead_letter(letters(got, GiveUpReason::Undeliverable, "nobody home"))
        .await
        .unwrap();
    let dead = aws.receive_at_least(&chosen.url, 1, WAIT).await;
    assert_eq!(dead[0].attributes["wsbridge_reason"], "undeliverable");
    assert_eq!(dead[0].attributes["wsbridge_detail"], "nobody home");
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
}

async fn a_failed_dead_letter_send_leaves_the_message_in_the_source(client: Client) {
    let aws = moto().aws().await;
    let queue = aws
        .create_queue_with(
            &unique_name("src-dl-fail"),
            &[(QueueAttributeName::VisibilityTimeout, "1".to_owned())],
        )
        .await;
    let gone = aws.create_queue(&unique_name("gone-dlq")).await;
    aws.delete_queue(&gone.url).await;
    aws.send(&queue.url, "bad").await;
    let source = source_with(
        client,
        &aws.config,
        &queue.url,
        SqsSourceSettings {
            wait_time: Duration::from_secs(1),
            dead_letter_queue_url: Some(gone.url.clone()),
            ..SqsSourceSettings::default()
        },
    );
    let got = receive_n(&source, 1).await;

    let result = source
        .dead_letter(letters(got, GiveUpReason::Malformed, "bad"))
        .await;

    assert!(result.is_err(), "{result:?}");
    assert_eq!(
        aws.wait_for_counts(&queue.url, (1, 0), WAIT).await,
        (1, 0),
        "not deleted: back after its visibility timeout"
    );
}

async fn a_fifo_dead_letter_keeps_the_group_and_a_derived_deduplication_id(client: Client) {
    let aws = moto().aws().await;
    let (queue, dlq) = aws
        .create_queue_with_dlq(&format!("{}.fifo", unique_name("src-dl")), 5, &[])
        .await;
    aws.send(&queue.url, "bad fifo").await;
    let source = source(client, &aws, &queue.url);
    let got = receive_n(&source, 1).await;
    assert_eq!(got[0].group_id.as_deref(), Some("testkit"));

    // Sent twice (as a retry after a lost answer would): stored once.
    let twice = [got.clone(), got].concat();
    source
        .dead_letter(letters(twice, GiveUpReason::Malformed, "bad"))
        .await
        .unwrap();

    let dead = take_raw(&aws.sqs, &dlq.url, 2, Duration::from_secs(3)).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].body(), Some("bad fifo"));
    let group = dead[0]
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId));
    assert_eq!(group.map(String::as_str), Some("testkit"));
}

async fn without_a_dead_letter_queue_a_given_up_message_is_deleted(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("src-rej")).await;
    aws.send(&queue.url, "bad").await;
    aws.send(&queue.url, "kept").await;
    let source = source(client, &aws, &queue.url);
    let got = receive_n(&source, 2).await;
    assert_eq!(got.len(), 2);
    let (bad, kept): (Vec<_>, Vec<_>) = got.into_iter().partition(|m| m.body == "bad");

    source
        .dead_letter(letters(bad, GiveUpReason::Malformed, "bad"))
        .await
        .unwrap();
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 1));
    source
        .release(receipts(&kept), Duration::ZERO)
        .await
        .unwrap();
    let left = aws.receive_all(&queue.url, Duration::from_secs(1)).await;
    let bodies: BTreeSet<&str> = left.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, BTreeSet::from(["kept"]));
}

async fn extending_keeps_a_held_message_invisible_past_its_visibility_timeout(client: Client) {
    let aws = moto().aws().await;
    let queue = aws
        .create_queue_with(
            &unique_name("src-extend"),
            &[(QueueAttributeName::VisibilityTimeout, "2".to_owned())],
        )
        .await;
    aws.send(&queue.url, "held").await;
    let source = source(client, &aws, &queue.url);
    let got = receive_n(&source, 1).await;
    assert_eq!(
        source.visibility_timeout().await,
        Some(Duration::from_secs(2))
    );

    // Five seconds, extended each second: never visible meanwhile.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        source
            .extend(receipts(&got), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(aws.queue_counts(&queue.url).await, (0, 1));
    }
    // Once no longer extended, it comes back.
    assert_eq!(aws.wait_for_counts(&queue.url, (1, 0), WAIT).await, (1, 0));
}

async fn receive_from_a_missing_queue_is_misconfigured(client: Client) {
    let aws = moto().aws().await;
    let existing = aws.create_queue(&unique_name("src-there")).await;
    let missing_url = existing
        .url
        .replace(&existing.name, &unique_name("src-missing"));
    let source = source(client, &aws, &missing_url);

    let result = tokio::time::timeout(WAIT, source.receive()).await.unwrap();
    match result {
        Err(SourceError::Misconfigured(reason)) => {
            // Moto answers HTTP 400 with x-amzn-query-error
            // `AWS.SimpleQueueService.NonExistentQueue` (`__type` QueueDoesNotExist).
            assert!(reason.contains("ReceiveMessage"), "{reason}");
            assert!(reason.contains("NonExistentQueue"), "{reason}");
        }
        other => panic!("expected Misconfigured, got {other:?}"),
    }
}

async fn receive_from_a_closed_port_is_unavailable(client: Client) {
    let config = moto().sdk_config().await;
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let config = config.to_builder().endpoint_url(&endpoint).build();
    let source = source_with(
        client,
        &config,
        &format!("{endpoint}/123456789012/nowhere"),
        SqsSourceSettings::default(),
    );

    // The client retries the refused connection a few times before giving up.
    let result = tokio::time::timeout(Duration::from_secs(30), source.receive())
        .await
        .expect("receive did not give up within 30 s");
    assert!(
        matches!(result, Err(SourceError::Unavailable(_))),
        "{result:?}"
    );
}
