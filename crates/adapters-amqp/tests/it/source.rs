//! `AmqpCommandSource` against RabbitMQ.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use adapters_amqp::bootstrap::{self, QueueType};
use adapters_amqp::{AmqpCommandSource, AmqpSourceSettings, ReleaseDelay};
use domain::{
    CommandSource, DeadLetter, GiveUpReason, Receipt, SourceError, DETAIL_ATTRIBUTE,
    REASON_ATTRIBUTE,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::support::{
    closed_url, command_properties, letter_of, letters, receipts, receive_n, source_settings, url,
    Scratch, WAIT,
};

const T0: u64 = 1_700_000_000;

fn body(n: usize) -> String {
    format!(r#"{{"client_id":"c1","command":"n{n}"}}"#)
}

/// Receives until an error comes back (within [`WAIT`]).
async fn loop_until_error(source: &AmqpCommandSource) -> Option<SourceError> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Err(error) = source.receive().await {
            return Some(error);
        }
    }
    None
}

fn generation(receipt: &Receipt) -> &str {
    receipt.token().split(':').nth(1).unwrap()
}

#[tokio::test]
async fn receive_hands_out_what_arrived_and_acknowledge_removes_it() {
    let scratch = Scratch::new("src-recv").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    for n in 0..3 {
        scratch
            .publish(
                queue,
                &body(n),
                command_properties(&format!("m-{n}"), T0 + n as u64),
            )
            .await;
    }
    // No properties at all: an id is made up, the send time is unknown.
    scratch
        .publish(queue, &body(3), BasicProperties::default())
        .await;

    let source = AmqpCommandSource::spawn(url(), source_settings(queue));
    assert_eq!(source.queue(), queue.as_str());
    let got = receive_n(&source, 4).await;
    assert_eq!(got.len(), 4, "{got:?}");
    for (n, message) in got.iter().take(3).enumerate() {
        assert_eq!(message.body, body(n));
        assert_eq!(message.message_id, format!("m-{n}"));
        assert_eq!(
            message.sent_at,
            Some(UNIX_EPOCH + Duration::from_secs(T0 + n as u64))
        );
        assert_eq!(message.receive_count, 1);
    }
    let bare = &got[3];
    assert_eq!(bare.body, body(3));
    assert!(bare.message_id.starts_with("amqp-"), "{}", bare.message_id);
    assert_eq!(bare.sent_at, None);
    let distinct: BTreeSet<&str> = got.iter().map(|m| m.receipt.token()).collect();
    assert_eq!(distinct.len(), 4);
    // Handed out means unacknowledged, not gone: none is ready in the queue.
    assert_eq!(scratch.depth(queue).await, Some(0));

    // Acknowledge three; the broker takes the fourth back when the source closes.
    source.acknowledge(receipts(&got[..3])).await.unwrap();
    source.close().await;
    assert!(!source.is_connected());
    assert!(scratch.depth_reaches(queue, 1).await);
    let left = scratch.get(queue).await.unwrap();
    assert_eq!(left.delivery.data, body(3).as_bytes());
    assert!(left.delivery.redelivered);
    assert_eq!(scratch.depth(&topology.dead_letter_queue).await, Some(0));
}

#[tokio::test]
async fn receive_waits_for_a_first_message_then_takes_what_is_there_up_to_the_batch_size() {
    let scratch = Scratch::new("src-batch").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    let settings = AmqpSourceSettings {
        wait_time: Duration::from_millis(800),
        max_messages: 4,
        ..source_settings(queue)
    };
    let source = AmqpCommandSource::spawn(url(), settings);
    assert!(source.wait_connected(WAIT).await);

    // The first receive of a connection answers at once, so readiness is
    // known without a whole wait; later ones wait for a message.
    let started = Instant::now();
    assert_eq!(source.receive().await, Ok(Vec::new()));
    let started_second = Instant::now();
    assert_eq!(source.receive().await, Ok(Vec::new()));
    assert!(started_second.elapsed() >= Duration::from_millis(750));
    assert!(started_second - started < Duration::from_millis(750));

    // A message arriving during the wait is returned without waiting out the rest.
    let publisher = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        scratch
            .publish(queue, &body(0), command_properties("late", T0))
            .await;
    };
    let (got, ()) = tokio::join!(source.receive(), publisher);
    let got = got.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, "late");

    for n in 1..=6 {
        scratch
            .publish(queue, &body(n), command_properties(&format!("m-{n}"), T0))
            .await;
    }
    // All six are with the source (prefetch 100) before it is asked: none
    // is ready in the queue any more, and the last frames had time to land.
    assert!(scratch.depth_reaches(queue, 0).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let first = source.receive().await.unwrap();
    assert_eq!(first.len(), 4, "{first:?}");
    let rest = receive_n(&source, 2).await;
    let ids: Vec<&str> = first
        .iter()
        .chain(&rest)
        .map(|m| m.message_id.as_str())
        .collect();
    assert_eq!(ids, ["m-1", "m-2", "m-3", "m-4", "m-5", "m-6"]);
    source.acknowledge(receipts(&first)).await.unwrap();
    source.acknowledge(receipts(&rest)).await.unwrap();
    source.acknowledge(receipts(&got)).await.unwrap();
    source.close().await;
    assert_eq!(scratch.depth(queue).await, Some(0));
}

#[tokio::test]
async fn prefetch_windows_bound_what_is_kept_unacknowledged() {
    let scratch = Scratch::new("src-prefetch").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    for n in 0..30 {
        scratch
            .publish(queue, &body(n), command_properties(&format!("m-{n}"), T0))
            .await;
    }
    let settings = AmqpSourceSettings {
        prefetch: 2,
        ..source_settings(queue)
    };
    let source = AmqpCommandSource::spawn(url(), settings);
    // What the bridge keeps unacknowledged (held for clients that do not
    // acknowledge) does not close the window: new windows open, up to ten
    // windows' worth in all...
    let kept = receive_n(&source, 20).await;
    assert_eq!(kept.len(), 20, "{kept:?}");
    assert!(source.metrics().window_renewals() >= 9);
    // ...and no more: the rest waits in the queue.
    let more = source.receive().await.unwrap();
    assert!(more.is_empty(), "{more:?}");
    assert!(scratch.depth_reaches(queue, 10).await);
    // Settled, they make room for the rest, in order.
    source.acknowledge(receipts(&kept)).await.unwrap();
    let rest = receive_n(&source, 10).await;
    let seen: Vec<String> = kept
        .iter()
        .chain(&rest)
        .map(|m| m.message_id.clone())
        .collect();
    let expected: Vec<String> = (0..30).map(|n| format!("m-{n}")).collect();
    assert_eq!(seen, expected);
    source.acknowledge(receipts(&rest)).await.unwrap();
    source.close().await;
}

#[tokio::test]
async fn release_without_delay_hands_the_message_out_again_at_once() {
    let scratch = Scratch::new("src-release0").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    scratch
        .publish(queue, &body(1), command_properties("m-1", T0))
        .await;
    let source = AmqpCommandSource::spawn(url(), source_settings(queue));

    let first = receive_n(&source, 1).await;
    assert_eq!(first.len(), 1);
    source
        .release(receipts(&first), Duration::ZERO)
        .await
        .unwrap();
    let again = receive_n(&source, 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, "m-1");
    assert_eq!(again[0].body, first[0].body);
    assert_eq!(again[0].sent_at, first[0].sent_at);
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].receipt, first[0].receipt);
    source.acknowledge(receipts(&again)).await.unwrap();
    source.close().await;
    assert_eq!(scratch.depth(queue).await, Some(0));
}

#[tokio::test]
async fn release_with_a_delay_parks_the_message_in_the_delay_queue() {
    let scratch = Scratch::new("src-delay").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    let delay_queue = topology.delay_queue();
    scratch
        .publish(queue, &body(1), command_properties("m-1", T0))
        .await;
    // Without a timestamp: the copy carries when it was first received.
    scratch
        .publish(queue, &body(2), BasicProperties::default())
        .await;
    let source = AmqpCommandSource::spawn(url(), source_settings(queue));

    let first = receive_n(&source, 2).await;
    assert_eq!(first.len(), 2);
    let received_by = SystemTime::now();
    let delay = Duration::from_millis(1500);
    let released_at = Instant::now();
    source.release(receipts(&first), delay).await.unwrap();
    // Out of the consumer's window and of the command queue meanwhile
    // (copied in the background: the call does not wait for the broker).
    assert!(scratch.depth_reaches(&delay_queue, 2).await);
    assert_eq!(scratch.depth(queue).await, Some(0));

    let again = receive_n(&source, 2).await;
    assert!(
        released_at.elapsed() >= delay,
        "{:?}",
        released_at.elapsed()
    );
    assert_eq!(again.len(), 2, "{again:?}");
    assert_eq!(again[0].message_id, "m-1");
    assert_eq!(again[0].body, first[0].body);
    assert_eq!(again[0].sent_at, first[0].sent_at);
    assert_eq!(again[0].receive_count, 2);
    // Same made-up id as the first time, and a send time that ends the retry window.
    assert_eq!(again[1].message_id, first[1].message_id);
    assert_eq!(again[1].body, first[1].body);
    assert_eq!(again[1].receive_count, 2);
    let sent_at = again[1].sent_at.expect("first receive time carried over");
    assert!(sent_at <= received_by, "{sent_at:?} after {received_by:?}");
    assert!(received_by.duration_since(sent_at).unwrap() < WAIT);

    // Released again, the count goes on.
    source
        .release(receipts(&again[..1]), Duration::from_millis(10))
        .await
        .unwrap();
    let third = receive_n(&source, 1).await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].message_id, "m-1");
    assert_eq!(third[0].receive_count, 3);

    source.acknowledge(receipts(&third)).await.unwrap();
    source.acknowledge(receipts(&again[1..])).await.unwrap();
    source.close().await;
    assert_eq!(scratch.depth(queue).await, Some(0));
    assert_eq!(scratch.depth(&delay_queue).await, Some(0));
}

#[tokio::test]
async fn release_with_a_delay_in_hold_mode_keeps_the_delivery_then_requeues_it() {
    let scratch = Scratch::new("src-hold").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    scratch
        .publish(queue, &body(1), command_properties("m-1", T0))
        .await;
    let settings = AmqpSourceSettings {
        release_delay: ReleaseDelay::Hold,
        ..source_settings(queue)
    };
    let source = AmqpCommandSource::spawn(url(), settings);

    let first = receive_n(&source, 1).await;
    assert_eq!(first.len(), 1);
    let delay = Duration::from_millis(1200);
    let released_at = Instant::now();
    source.release(receipts(&first), delay).await.unwrap();
    // Held by the source: neither ready in the queue nor parked elsewhere.
    assert_eq!(scratch.depth(queue).await, Some(0));
    assert_eq!(scratch.depth(&topology.delay_queue()).await, Some(0));

    let again = receive_n(&source, 1).await;
    assert!(
        released_at.elapsed() >= delay,
        "{:?}",
        released_at.elapsed()
    );
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, "m-1");
    assert_eq!(again[0].receive_count, 2);
    source.acknowledge(receipts(&again)).await.unwrap();
    source.close().await;
    assert_eq!(scratch.depth(queue).await, Some(0));
}

#[tokio::test]
async fn an_unusable_delay_queue_falls_back_to_holding() {
    let scratch = Scratch::new("src-delay-fallback").await;
    let topology = scratch.topology();
    let queue = &topology.command_queue;
    scratch.declare_queue(queue, FieldTable::default()).await;
    // A delay queue declared otherwise than the source would: it cannot be used.
    scratch
        .declare_queue(&topology.delay_queue(), FieldTable::default())
        .await;
    scratch
        .publish(queue, &body(1), command_properties("m-1", T0))
        .await;
    let source = AmqpCommandSource::spawn(url(), source_settings(queue));

    let first = receive_n(&source, 1).await;
    assert_eq!(first.len(), 1);
    let delay = Duration::from_millis(800);
    let released_at = Instant::now();
    source.release(receipts(&first), delay).await.unwrap();
    let again = receive_n(&source, 1).await;
    assert!(
        released_at.elapsed() >= delay,
        "{:?}",
        released_at.elapsed()
    );
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, "m-1");
    // The consuming channel survived the failed declaration.
    assert_eq!(generation(&again[0].receipt), generation(&first[0].receipt));
    assert_eq!(scratch.depth(&topology.delay_queue()).await, Some(0));
    source.acknowledge(receipts(&again)).await.unwrap();
    source.close().await;
}

/// A header of a message as text, if it is a string.
fn text_header(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        AMQPValue::ShortString(value) => Some(value.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn dead_letter_publishes_a_copy_with_the_reason_to_the_dead_letter_exchange() {
    let scratch = Scratch::new("src-dead-letter").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    let mut headers = FieldTable::default();
    headers.insert("trace".into(), AMQPValue::LongString("t-1".into()));
    let body = "not json \u{0} \u{fffd}";
    scratch
        .publish(
            queue,
            body,
            command_properties("poison", T0).with_headers(headers),
        )
        .await;
    let source = AmqpCommandSource::spawn(url(), source_settings(queue));

    let got = receive_n(&source, 1).await;
    assert_eq!(got.len(), 1);
    let letter = DeadLetter::new(
        got[0].clone(),
        GiveUpReason::Malformed,
        "expected value at line 1 column 1",
    );
    source.dead_letter(vec![letter]).await.unwrap();
    let dead = scratch
        .get_eventually(&topology.dead_letter_queue)
        .await
        .expect("given-up message in the dead-letter queue");
    let properties = &dead.delivery.properties;
    assert_eq!(dead.delivery.data, body.as_bytes());
    assert_eq!(
        properties.message_id().as_ref().map(|id| id.as_str()),
        Some("poison")
    );
    assert_eq!(*properties.timestamp(), Some(T0));
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(text_header(properties, "trace").as_deref(), Some("t-1"));
    assert_eq!(
        text_header(properties, REASON_ATTRIBUTE).as_deref(),
        Some("malformed")
    );
    assert_eq!(
        text_header(properties, DETAIL_ATTRIBUTE).as_deref(),
        Some("expected value at line 1 column 1")
    );
    // A copy, published once the original was taken: not also rejected.
    assert_eq!(text_header(properties, "x-first-death-reason"), None);
    assert!(scratch.get(&topology.dead_letter_queue).await.is_none());
    source.close().await;
    assert_eq!(scratch.depth(queue).await, Some(0));
}

#[tokio::test]
async fn without_a_dead_letter_exchange_to_publish_to_a_given_up_message_is_rejected() {
    let scratch = Scratch::new("src-dl-fallback").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    // None configured, and one the broker does not have: either way the
    // broker dead-letters the rejected message itself, without the reason.
    for (n, exchange) in [None, Some(scratch.name("no-such-exchange"))]
        .into_iter()
        .enumerate()
    {
        let id = format!("poison-{n}");
        scratch
            .publish(queue, "not json", command_properties(&id, T0))
            .await;
        let settings = AmqpSourceSettings {
            dead_letter_exchange: exchange.clone(),
            ..source_settings(queue)
        };
        let source = AmqpCommandSource::spawn(url(), settings);
        let got = receive_n(&source, 1).await;
        assert_eq!(got.len(), 1, "{exchange:?}");
        source.dead_letter(letters(&got)).await.unwrap();
        let dead = scratch
            .get_eventually(&topology.dead_letter_queue)
            .await
            .unwrap_or_else(|| panic!("{exchange:?}: rejected message in the dead-letter queue"));
        let properties = &dead.delivery.properties;
        assert_eq!(dead.delivery.data, b"not json");
        assert_eq!(
            properties.message_id().as_ref().map(|id| id.as_str()),
            Some(id.as_str())
        );
        assert_eq!(
            text_header(properties, "x-first-death-reason").as_deref(),
            Some("rejected"),
            "{exchange:?}"
        );
        assert_eq!(text_header(properties, REASON_ATTRIBUTE), None);
        source.close().await;
        assert_eq!(scratch.depth(queue).await, Some(0));
    }
}

#[tokio::test]
async fn settling_twice_or_with_a_foreign_receipt_is_refused_and_harms_nothing() {
    let scratch = Scratch::new("src-twice").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    scratch
        .publish(queue, &body(1), command_properties("m-1", T0))
        .await;
    let source = AmqpCommandSource::spawn(url(), source_settings(queue));
    let first = receive_n(&source, 1).await;
    assert_eq!(first.len(), 1);
    let receipt = first[0].receipt.clone();

    // The same receipt twice in one call is settled once.
    source
        .acknowledge(vec![receipt.clone(), receipt.clone()])
        .await
        .unwrap();
    // A broker closes the channel on an unknown delivery tag; the source
    // refuses it instead, whatever the settlement.
    let foreign = Receipt::new("not-a-receipt");
    assert!(matches!(
        source.acknowledge(vec![receipt.clone(), foreign.clone()]).await,
        Err(SourceError::Partial { failed, .. }) if failed == vec![receipt.clone(), foreign.clone()]
    ));
    assert!(matches!(
        source.dead_letter(vec![letter_of(&receipt)]).await,
        Err(SourceError::Partial { failed, .. }) if failed == vec![receipt.clone()]
    ));
    assert!(matches!(
        source.release(vec![receipt.clone()], Duration::ZERO).await,
        Err(SourceError::Partial { failed, .. }) if failed == vec![receipt.clone()]
    ));

    // The consuming channel is the same one, and works.
    scratch
        .publish(queue, &body(2), command_properties("m-2", T0))
        .await;
    let next = receive_n(&source, 1).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].message_id, "m-2");
    assert_eq!(next[0].receive_count, 1);
    assert_eq!(generation(&next[0].receipt), generation(&receipt));
    source.acknowledge(receipts(&next)).await.unwrap();
    source.close().await;
    assert_eq!(scratch.depth(queue).await, Some(0));
    assert_eq!(scratch.depth(&topology.dead_letter_queue).await, Some(0));
}

#[tokio::test]
async fn a_quorum_queue_counts_every_redelivery() {
    let scratch = Scratch::new("src-quorum").await;
    let mut topology = scratch.topology();
    topology.queue_type = QueueType::Quorum;
    bootstrap::ensure(&url(), &topology).await.unwrap();
    let queue = &topology.command_queue;
    scratch
        .publish(queue, &body(1), command_properties("m-1", T0))
        .await;
    let source = AmqpCommandSource::spawn(url(), source_settings(queue));

    let mut counts = Vec::new();
    let mut last = Vec::new();
    for _ in 0..3 {
        last = receive_n(&source, 1).await;
        assert_eq!(last.len(), 1);
        counts.push(last[0].receive_count);
        source
            .release(receipts(&last), Duration::ZERO)
            .await
            .unwrap();
    }
    assert_eq!(counts, [1, 2, 3]);
    // Through the delay queue and back, the count goes on.
    let fourth = receive_n(&source, 1).await;
    assert_eq!(fourth[0].receive_count, 4);
    source
        .release(receipts(&fourth), Duration::from_millis(10))
        .await
        .unwrap();
    let fifth = receive_n(&source, 1).await;
    assert_eq!(fifth.len(), 1);
    assert_eq!(fifth[0].receive_count, 5);
    assert_ne!(fifth[0].receipt, last[0].receipt);

    source.dead_letter(letters(&fifth)).await.unwrap();
    assert!(scratch
        .get_eventually(&topology.dead_letter_queue)
        .await
        .is_some());
    source.close().await;
}

#[tokio::test]
async fn a_missing_queue_is_reported_as_misconfigured() {
    let scratch = Scratch::new("src-missing").await;
    let source = AmqpCommandSource::spawn(url(), source_settings(&scratch.name("nowhere")));
    let text = loop_until_error(&source)
        .await
        .map(|e| match e {
            SourceError::Misconfigured(text) => text,
            other => panic!("not misconfigured: {other:?}"),
        })
        .unwrap();
    assert!(text.contains("NOT_FOUND"), "{text}");
    assert!(!source.is_connected());
    source.close().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable() {
    let source = AmqpCommandSource::spawn(closed_url(), source_settings("anything"));
    let error = loop_until_error(&source).await;
    assert!(
        matches!(error, Some(SourceError::Unavailable(_))),
        "{error:?}"
    );
    assert!(!source.wait_connected(Duration::from_millis(300)).await);
    source.close().await;
    // Closed: no more connection attempts, and receive says so.
    assert!(matches!(
        source.receive().await,
        Err(SourceError::Unavailable(text)) if text.contains("closed")
    ));
}
