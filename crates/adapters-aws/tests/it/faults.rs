//! The AWS adapters under injected faults.
//!
//! - Through `testkit::FaultProxy` in front of moto: throttling and 5xx
//!   answers, refused connections, a black hole. What the SDK retries itself,
//!   and what the adapters report once it gives up.
//! - With modeled answers (aws-smithy-mocks) where moto cannot produce the
//!   fault: partial `DeleteMessageBatch`, `ChangeMessageVisibilityBatch` and
//!   `PublishBatch` failures. The mock records each call's entries, so the
//!   tests check WHAT was re-sent, not just how often.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters_aws::metrics::AwsSnapshot;
use adapters_aws::sdk::{Clients, PUBLISH_TIMEOUT, SETTLE_ATTEMPT_TIMEOUT, SETTLE_TIMEOUT};
use adapters_aws::{SnsEventSink, SnsSinkSettings, SqsCommandSource, SqsSourceSettings};
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::{Credentials, Region};
use aws_sdk_sqs::operation::change_message_visibility_batch::{
    ChangeMessageVisibilityBatchInput, ChangeMessageVisibilityBatchOutput,
};
use aws_sdk_sqs::operation::delete_message_batch::{
    DeleteMessageBatchInput, DeleteMessageBatchOutput,
};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchResultEntry, DeleteMessageBatchResultEntry, QueueAttributeName,
};
use aws_smithy_mocks::{
    create_mock_http_client, mock, MockResponse, MockResponseInterceptor, Rule, RuleMode,
};
use domain::{CommandSource, EventSink, PublishError, Receipt, SourceError};
use testkit::{moto, unique_name, Fault, FaultProxy, Limit, Outcome};

use crate::support::{event, source_with, with_client, Client, WAIT};

// ---------------------------------------------------------------------------
// Through the fault proxy

both_clients!(
    throttling_and_server_errors_are_retried_then_reported_unavailable,
    a_refused_endpoint_is_unavailable_and_the_source_recovers_when_it_is_back,
    a_black_holed_receive_ends_at_the_attempt_timeout_and_recovers_when_healed,
    a_black_holed_delete_gives_up_within_the_settle_budget,
);

/// A source over `queue_url` whose SQS client goes through `proxy`, with
/// short long polls and the given attempt timeout (none: the SDK's default).
async fn proxied_source(
    client: Client,
    proxy: &FaultProxy,
    queue_url: &str,
    attempt_timeout: Option<Duration>,
) -> SqsCommandSource {
    let mut config = proxy.sdk_config().await.into_builder();
    if let Some(timeout) = attempt_timeout {
        config.set_timeout_config(Some(
            TimeoutConfig::builder()
                .operation_attempt_timeout(timeout)
                .build(),
        ));
    }
    source_with(
        client,
        &config.build(),
        queue_url,
        SqsSourceSettings {
            wait_time: Duration::from_secs(1),
            ..SqsSourceSettings::default()
        },
    )
}

/// Receives (through `source`) until one message came or [`WAIT`] passed.
async fn receive_one(source: &SqsCommandSource) -> Vec<domain::InboundMessage> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let got = source.receive().await.unwrap();
        if !got.is_empty() {
            return got;
        }
    }
    Vec::new()
}

async fn throttling_and_server_errors_are_retried_then_reported_unavailable(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("fault-throttle")).await;
    let proxy = FaultProxy::start(moto().endpoint());
    let source = proxied_source(client, &proxy, &queue.url, None).await;
    let id = aws.send(&queue.url, "m").await;

    for fault in [Fault::Throttle, Fault::ServerError] {
        // Two failed attempts: the SDK's third one gets through.
        let since = Instant::now();
        proxy.inject_for("ReceiveMessage", fault.clone(), Limit::Times(2));
        let got = receive_one(&source).await;
        assert_eq!(got.len(), 1, "{fault:?}: {got:?}");
        assert_eq!(got[0].message_id, id);
        assert!(
            proxy.attempts_since(Some("ReceiveMessage"), since) >= 3,
            "{fault:?}: {:?}",
            proxy.seen()
        );
        source
            .release(vec![got[0].receipt.clone()], Duration::ZERO)
            .await
            .unwrap();

        // More failures than the SDK has attempts (3): reported, as transient.
        let since = Instant::now();
        proxy.inject_for("ReceiveMessage", fault.clone(), Limit::Times(3));
        let result = tokio::time::timeout(WAIT, source.receive())
            .await
            .expect("receive did not give up in time");
        match result {
            Err(SourceError::Unavailable(reason)) => {
                assert!(reason.contains("ReceiveMessage"), "{reason}");
                let code = if fault == Fault::Throttle {
                    "Throttling"
                } else {
                    "InternalError"
                };
                assert!(reason.contains(code), "{reason}");
            }
            other => panic!("{fault:?}: expected Unavailable, got {other:?}"),
        }
        let attempts = proxy.attempts_since(Some("ReceiveMessage"), since);
        assert_eq!(attempts, 3, "{fault:?}: {:?}", proxy.seen());
    }

    // Nothing was lost: the message is still there, once.
    let got = receive_one(&source).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].message_id, id);
    source
        .acknowledge(vec![got[0].receipt.clone()])
        .await
        .unwrap();
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
}

async fn a_refused_endpoint_is_unavailable_and_the_source_recovers_when_it_is_back(client: Client) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("fault-refuse")).await;
    let proxy = FaultProxy::start(moto().endpoint());
    let source = proxied_source(client, &proxy, &queue.url, None).await;
    // A first receive keeps a connection in the SDK's pool.
    assert_eq!(source.receive().await, Ok(Vec::new()));

    proxy.set(Fault::Refuse);
    let id = aws.send(&queue.url, "sent-while-down").await;
    let result = tokio::time::timeout(WAIT, source.receive())
        .await
        .expect("receive did not give up in time");
    assert!(
        matches!(result, Err(SourceError::Unavailable(_))),
        "{result:?}"
    );
    let stats = proxy.stats();
    assert!(stats.refused >= 2, "the SDK retried: {stats:?}");
    assert!(stats.refused <= 3, "the SDK's three attempts: {stats:?}");

    proxy.heal();
    let got = receive_one(&source).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].message_id, id);
    source
        .acknowledge(vec![got[0].receipt.clone()])
        .await
        .unwrap();
}

async fn a_black_holed_receive_ends_at_the_attempt_timeout_and_recovers_when_healed(
    client: Client,
) {
    let aws = moto().aws().await;
    let queue = aws.create_queue(&unique_name("fault-hole")).await;
    let proxy = FaultProxy::start(moto().endpoint());
    // Above the 1 s long poll plus moto's answer, as in production (25 s
    // over 20 s): a healthy receive never times out.
    let attempt = Duration::from_secs(2);
    let source = proxied_source(client, &proxy, &queue.url, Some(attempt)).await;
    assert_eq!(source.receive().await, Ok(Vec::new()));
    assert_eq!(source.receive().await, Ok(Vec::new()));

    proxy.set(Fault::BlackHole);
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(30), source.receive())
        .await
        .expect("a black-holed receive hung past every timeout");
    let took = started.elapsed();
    assert!(
        matches!(result, Err(SourceError::Unavailable(_))),
        "{result:?}"
    );
    // Every attempt was swallowed and timed out on its own.
    let holes = proxy
        .seen()
        .iter()
        .filter(|s| s.outcome == Outcome::BlackHoled)
        .count();
    assert_eq!(holes, 3, "{:?}", proxy.seen());
    assert!(took >= attempt * 3, "gave up after {took:?}");

    proxy.heal();
    let id = aws.send(&queue.url, "after-the-hole").await;
    let got = receive_one(&source).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].message_id, id);
}

async fn a_black_holed_delete_gives_up_within_the_settle_budget(client: Client) {
    let aws = moto().aws().await;
    let queue = aws
        .create_queue_with(
            &unique_name("fault-hole-delete"),
            &[(QueueAttributeName::VisibilityTimeout, "2".into())],
        )
        .await;
    let proxy = FaultProxy::start(moto().endpoint());
    // The production clients: the settle client the source derives from
    // the SQS client carries SETTLE_ATTEMPT_TIMEOUT / SETTLE_TIMEOUT.
    let clients = Clients::from_config(&proxy.sdk_config().await);
    let retries = 1;
    let source = with_client(
        client,
        &clients.config,
        SqsCommandSource::new(
            clients.sqs,
            &queue.url,
            SqsSourceSettings {
                wait_time: Duration::from_secs(1),
                settle_retries: retries,
                ..SqsSourceSettings::default()
            },
        ),
    );
    let id = aws.send(&queue.url, "held-by-the-hole").await;
    let got = receive_one(&source).await;
    assert_eq!(got.len(), 1, "{got:?}");

    proxy.inject_for(
        "DeleteMessageBatch",
        Fault::BlackHole,
        Limit::For(Duration::from_secs(120)),
    );
    // Each delete call ends at SETTLE_TIMEOUT, and is made 1 + retries times.
    let budget = SETTLE_TIMEOUT * (retries + 1);
    let started = Instant::now();
    let result = tokio::time::timeout(budget * 3, source.acknowledge(vec![got[0].receipt.clone()]))
        .await
        .expect("a black-holed delete hung far past its budget");
    let took = started.elapsed();
    assert!(
        matches!(&result, Err(SourceError::Partial { failed, .. }) if failed.len() == 1),
        "{result:?}"
    );
    assert!(took >= SETTLE_TIMEOUT, "gave up after {took:?}");
    assert!(
        took <= budget + Duration::from_secs(2),
        "gave up after {took:?}"
    );
    let holes = proxy
        .seen()
        .iter()
        .filter(|s| s.operation == "DeleteMessageBatch" && s.outcome == Outcome::BlackHoled)
        .count();
    // Each call's attempts end at SETTLE_ATTEMPT_TIMEOUT, until SETTLE_TIMEOUT.
    let per_call = (SETTLE_TIMEOUT.as_secs() / SETTLE_ATTEMPT_TIMEOUT.as_secs() + 1) as usize;
    assert!(
        (2..=per_call * (retries as usize + 1)).contains(&holes),
        "{holes} attempts: {:?}",
        proxy.seen()
    );
    let counted = source.metrics().snapshot();
    assert_eq!((counted.settle_errors, counted.delete_failed), (1, 1));

    // Not lost: back after its visibility timeout, and deleted once healed.
    proxy.heal();
    let again = receive_one(&source).await;
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].message_id, id);
    source
        .acknowledge(vec![again[0].receipt.clone()])
        .await
        .unwrap();
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
    eprintln!(
        "measured: black-holed DeleteMessageBatch ({retries} retry): gave up after {took:?} \
         (budget {budget:?}), {holes} attempts timed out"
    );
}

#[tokio::test]
async fn throttled_publishes_are_retried_by_the_sdk_and_a_refused_sns_is_reported_in_time() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("fault-sns")).await;
    let queue = aws.create_queue(&unique_name("fault-sns-q")).await;
    aws.subscribe_queue(&topic, &queue, true).await;
    let proxy = FaultProxy::start(moto().endpoint());
    // The production budgets: 5 s per attempt, 15 s in all.
    let clients = Clients::from_config(&proxy.sdk_config().await);
    let sink = SnsEventSink::spawn(clients.sns, &topic, SnsSinkSettings::default());

    proxy.inject_for("PublishBatch", Fault::Throttle, Limit::Times(2));
    sink.publish(event("c1", "a", "through-the-throttle"))
        .await
        .unwrap();
    let batches = proxy
        .seen()
        .iter()
        .filter(|s| s.operation == "PublishBatch")
        .count();
    assert_eq!(batches, 3, "{:?}", proxy.seen());

    proxy.set(Fault::Refuse);
    let started = Instant::now();
    let result = tokio::time::timeout(
        PUBLISH_TIMEOUT + Duration::from_secs(5),
        sink.publish(event("c1", "a", "while-down")),
    )
    .await
    .expect("publish was not answered within the publish timeout");
    assert!(
        matches!(result, Err(PublishError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() <= PUBLISH_TIMEOUT + Duration::from_secs(1));

    proxy.heal();
    sink.publish(event("c1", "a", "after")).await.unwrap();
    let got = aws.receive_at_least(&queue.url, 2, WAIT).await;
    let bodies: HashSet<String> = got.into_iter().map(|m| m.body).collect();
    assert_eq!(
        bodies,
        HashSet::from(["through-the-throttle".to_owned(), "after".to_owned()])
    );
}

#[tokio::test]
async fn a_black_holed_publish_is_answered_within_the_publish_timeout() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("fault-sns-hole")).await;
    let proxy = FaultProxy::start(moto().endpoint());
    let clients = Clients::from_config(&proxy.sdk_config().await);
    let sink = SnsEventSink::spawn(clients.sns, &topic, SnsSinkSettings::default());
    sink.publish(event("c1", "a", "warm-up")).await.unwrap();

    proxy.set(Fault::BlackHole);
    let started = Instant::now();
    let result = tokio::time::timeout(
        PUBLISH_TIMEOUT + Duration::from_secs(5),
        sink.publish(event("c1", "a", "into-the-hole")),
    )
    .await
    .expect("publish hung past the publish timeout");
    let took = started.elapsed();
    assert!(
        matches!(result, Err(PublishError::Unavailable(_))),
        "{result:?}"
    );
    assert!(took <= PUBLISH_TIMEOUT + Duration::from_secs(1), "{took:?}");
    assert!(proxy.stats().black_holed >= 1, "{:?}", proxy.stats());
}

#[tokio::test]
async fn a_publish_finding_the_queue_full_is_answered_unavailable_in_time() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("fault-sns-full")).await;
    let proxy = FaultProxy::start(moto().endpoint());
    let clients = Clients::from_config(&proxy.sdk_config().await);
    let enqueue_wait = Duration::from_millis(300);
    let settings = SnsSinkSettings {
        linger: Duration::ZERO,
        max_in_flight: 1,
        queue_capacity: 1,
        enqueue_wait,
        ..SnsSinkSettings::default()
    };
    let sink = SnsEventSink::spawn(clients.sns, &topic, settings);
    sink.publish(event("c1", "a", "warm-up")).await.unwrap();

    // SNS hangs: one batch in flight, the next one waiting for it, and the
    // queue full behind them (10 + 10 + 1 events).
    proxy.set(Fault::BlackHole);
    let stuck: Vec<_> = (0..40)
        .map(|n| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.publish(event("c1", "a", format!("stuck{n}"))).await })
        })
        .collect();
    // They take their places first.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let result = tokio::time::timeout(PUBLISH_TIMEOUT, sink.publish(event("c2", "a", "no-room")))
        .await
        .expect("a publish waited for room past its enqueue wait");
    assert!(
        matches!(&result, Err(PublishError::Unavailable(reason)) if reason.contains("saturated")),
        "{result:?}"
    );
    assert!(
        started.elapsed() < PUBLISH_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    proxy.heal();
    for publish in stuck {
        // Answered either way once SNS is back or the publish timeout ends.
        let _ = publish.await.unwrap();
    }
}

// ---------------------------------------------------------------------------
// Modeled answers: partial batch failures

const QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/mocked";
const TOPIC_ARN: &str = "arn:aws:sns:us-east-1:123456789012:mocked";

/// What each mocked batch call carried: `(entry id, receipt handle or message)`.
type Calls = Arc<Mutex<Vec<Vec<(String, String)>>>>;

fn interceptor(rule: &Rule) -> MockResponseInterceptor {
    MockResponseInterceptor::new()
        .rule_mode(RuleMode::MatchAny)
        .with_rule(rule)
}

/// An SQS client answered by `rule` (no network).
fn mocked_sqs(rule: &Rule) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "mock"))
        .http_client(create_mock_http_client())
        .interceptor(interceptor(rule))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// An SNS client answered by `rule` (no network).
fn mocked_sns(rule: &Rule) -> aws_sdk_sns::Client {
    let conf = aws_sdk_sns::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_sns::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sns::config::Credentials::new(
            "test", "test", None, None, "mock",
        ))
        .http_client(create_mock_http_client())
        .interceptor(interceptor(rule))
        .build();
    aws_sdk_sns::Client::from_conf(conf)
}

fn mocked_source(rule: &Rule, settle_retries: u32) -> SqsCommandSource {
    SqsCommandSource::new(
        mocked_sqs(rule),
        QUEUE_URL,
        SqsSourceSettings {
            settle_retries,
            ..SqsSourceSettings::default()
        },
    )
}

/// How the mock answers one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Ok,
    /// Failed through no fault of the request (retryable).
    Transient,
    /// Failed for the sender's fault (never retried).
    SenderFault,
}

fn sqs_failure(id: &str, sender_fault: bool) -> aws_sdk_sqs::types::BatchResultErrorEntry {
    let code = if sender_fault {
        "ReceiptHandleIsInvalid"
    } else {
        "InternalError"
    };
    aws_sdk_sqs::types::BatchResultErrorEntry::builder()
        .id(id)
        .sender_fault(sender_fault)
        .code(code)
        .message("modeled failure")
        .build()
        .unwrap()
}

/// A `DeleteMessageBatch` rule recording each call; `answer(receipt, n)` says
/// how the n-th appearance (from 1) of a receipt handle is answered.
fn delete_rule(
    calls: &Calls,
    answer: impl Fn(&str, usize) -> Entry + Send + Sync + 'static,
) -> Rule {
    let calls = calls.clone();
    let appearances: Mutex<std::collections::HashMap<String, usize>> = Mutex::default();
    mock!(aws_sdk_sqs::Client::delete_message_batch).then_compute_response(
        move |input: &DeleteMessageBatchInput| {
            let entries: Vec<(String, String)> = input
                .entries()
                .iter()
                .map(|e| (e.id().to_owned(), e.receipt_handle().to_owned()))
                .collect();
            calls.lock().unwrap().push(entries.clone());
            let mut successful = Vec::new();
            let mut failed = Vec::new();
            for (id, receipt) in &entries {
                let n = {
                    let mut seen = appearances.lock().unwrap();
                    let n = seen.entry(receipt.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                match answer(receipt, n) {
                    Entry::Ok => successful.push(
                        DeleteMessageBatchResultEntry::builder()
                            .id(id)
                            .build()
                            .unwrap(),
                    ),
                    Entry::Transient => failed.push(sqs_failure(id, false)),
                    Entry::SenderFault => failed.push(sqs_failure(id, true)),
                }
            }
            MockResponse::Output(
                DeleteMessageBatchOutput::builder()
                    .set_successful(Some(successful))
                    .set_failed(Some(failed))
                    .build()
                    .unwrap(),
            )
        },
    )
}

fn receipts(tokens: &[&str]) -> Vec<Receipt> {
    tokens.iter().map(|t| Receipt::new(*t)).collect()
}

fn entries(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(id, r)| ((*id).to_owned(), (*r).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_delete_entry_that_failed_transiently_is_retried_alone() {
    let calls = Calls::default();
    let rule = delete_rule(&calls, |receipt, n| {
        if receipt == "r-b" && n == 1 {
            Entry::Transient
        } else {
            Entry::Ok
        }
    });
    let source = mocked_source(&rule, 3);

    source
        .acknowledge(receipts(&["r-a", "r-b", "r-c"]))
        .await
        .unwrap();

    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            entries(&[("0", "r-a"), ("1", "r-b"), ("2", "r-c")]),
            // Only the failed one again; the others are not re-deleted.
            entries(&[("0", "r-b")]),
        ]
    );
}

#[tokio::test]
async fn a_delete_entry_refused_for_the_senders_fault_is_reported_and_not_retried() {
    let calls = Calls::default();
    let rule = delete_rule(&calls, |receipt, _| {
        if receipt == "r-b" {
            Entry::SenderFault
        } else {
            Entry::Ok
        }
    });
    let source = mocked_source(&rule, 3);

    let result = source.acknowledge(receipts(&["r-a", "r-b", "r-c"])).await;
    match result {
        Err(SourceError::Partial { failed, reason }) => {
            assert_eq!(failed, receipts(&["r-b"]));
            assert!(reason.contains("DeleteMessageBatch"), "{reason}");
            assert!(reason.contains("ReceiptHandleIsInvalid"), "{reason}");
        }
        other => panic!("expected Partial, got {other:?}"),
    }
    assert_eq!(calls.lock().unwrap().len(), 1, "{calls:?}");
    assert_eq!(
        source.metrics().snapshot(),
        AwsSnapshot {
            receive_errors: 0,
            settle_errors: 1,
            deleted: 2,
            delete_failed: 1,
        }
    );
}

#[tokio::test]
async fn a_delete_entry_failing_every_time_is_given_up_after_the_retries() {
    let calls = Calls::default();
    let rule = delete_rule(&calls, |receipt, _| {
        if receipt == "r-b" {
            Entry::Transient
        } else {
            Entry::Ok
        }
    });
    let source = mocked_source(&rule, 2);

    let result = source.acknowledge(receipts(&["r-a", "r-b"])).await;
    assert!(
        matches!(&result, Err(SourceError::Partial { failed, .. }) if *failed == receipts(&["r-b"])),
        "{result:?}"
    );
    let calls = calls.lock().unwrap().clone();
    // The first call, then `settle_retries` retries of the failed entry alone.
    assert_eq!(
        calls,
        vec![
            entries(&[("0", "r-a"), ("1", "r-b")]),
            entries(&[("0", "r-b")]),
            entries(&[("0", "r-b")]),
        ]
    );
}

#[tokio::test]
async fn batch_entry_ids_stay_distinct_when_one_message_appears_twice() {
    let calls = Calls::default();
    let rule = delete_rule(&calls, |_, _| Entry::Ok);
    let source = mocked_source(&rule, 3);

    // The same receipt twice (a batch settling one message twice), and a
    // second receipt of message A (A handed out again after its visibility
    // timeout lapsed): every entry id distinct, no receipt sent twice.
    source
        .acknowledge(receipts(&["a-1", "b-1", "a-2", "a-1"]))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![entries(&[("0", "a-1"), ("1", "b-1"), ("2", "a-2")])]
    );
}

#[tokio::test]
async fn a_failed_entry_of_the_second_chunk_is_retried_alone() {
    let calls = Calls::default();
    let rule = delete_rule(&calls, |receipt, n| {
        if receipt == "r-11" && n == 1 {
            Entry::Transient
        } else {
            Entry::Ok
        }
    });
    let source = mocked_source(&rule, 3);
    let tokens: Vec<String> = (0..12).map(|i| format!("r-{i}")).collect();
    let all: Vec<Receipt> = tokens.iter().map(Receipt::new).collect();

    source.acknowledge(all).await.unwrap();
    let calls = calls.lock().unwrap().clone();
    let receipts_of = |call: &Vec<(String, String)>| -> Vec<String> {
        call.iter().map(|(_, r)| r.clone()).collect()
    };
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(receipts_of(&calls[0]), tokens[..10].to_vec());
    assert_eq!(receipts_of(&calls[1]), tokens[10..].to_vec());
    assert_eq!(calls[2], entries(&[("0", "r-11")]));
    for call in &calls {
        let ids: HashSet<&String> = call.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), call.len(), "entry ids repeat in {call:?}");
    }
}

#[tokio::test]
async fn a_failed_visibility_change_entry_is_retried_alone_with_the_same_delay() {
    // Each call's `(entry id, receipt handle, visibility timeout)`.
    type VisibilityCalls = Arc<Mutex<Vec<Vec<(String, String, i32)>>>>;
    let calls = VisibilityCalls::default();
    let recorded = calls.clone();
    let failed_once = Mutex::new(false);
    let rule = mock!(aws_sdk_sqs::Client::change_message_visibility_batch).then_compute_response(
        move |input: &ChangeMessageVisibilityBatchInput| {
            let entries: Vec<(String, String, i32)> = input
                .entries()
                .iter()
                .map(|e| {
                    (
                        e.id().to_owned(),
                        e.receipt_handle().to_owned(),
                        e.visibility_timeout().unwrap_or(-1),
                    )
                })
                .collect();
            recorded.lock().unwrap().push(entries.clone());
            let mut successful = Vec::new();
            let mut failed = Vec::new();
            for (id, receipt, _) in &entries {
                let mut once = failed_once.lock().unwrap();
                if receipt == "r-x" && !*once {
                    *once = true;
                    failed.push(sqs_failure(id, false));
                } else {
                    successful.push(
                        ChangeMessageVisibilityBatchResultEntry::builder()
                            .id(id)
                            .build()
                            .unwrap(),
                    );
                }
            }
            MockResponse::Output(
                ChangeMessageVisibilityBatchOutput::builder()
                    .set_successful(Some(successful))
                    .set_failed(Some(failed))
                    .build()
                    .unwrap(),
            )
        },
    );
    let source = mocked_source(&rule, 3);

    source
        .release(receipts(&["r-w", "r-x"]), Duration::from_secs(7))
        .await
        .unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(
        calls,
        vec![
            vec![
                ("0".to_owned(), "r-w".to_owned(), 7),
                ("1".to_owned(), "r-x".to_owned(), 7)
            ],
            vec![("0".to_owned(), "r-x".to_owned(), 7)],
        ]
    );
}

/// A `PublishBatch` rule recording each call's `(id, message)`; `answer(message, n)`
/// says how the n-th appearance of a message is answered.
fn publish_rule(
    calls: &Calls,
    answer: impl Fn(&str, usize) -> Entry + Send + Sync + 'static,
) -> Rule {
    use aws_sdk_sns::operation::publish_batch::{PublishBatchInput, PublishBatchOutput};
    use aws_sdk_sns::types::{BatchResultErrorEntry, PublishBatchResultEntry};
    let calls = calls.clone();
    let appearances: Mutex<std::collections::HashMap<String, usize>> = Mutex::default();
    mock!(aws_sdk_sns::Client::publish_batch).then_compute_response(
        move |input: &PublishBatchInput| {
            let entries: Vec<(String, String)> = input
                .publish_batch_request_entries()
                .iter()
                .map(|e| (e.id().to_owned(), e.message().to_owned()))
                .collect();
            calls.lock().unwrap().push(entries.clone());
            let mut successful = Vec::new();
            let mut failed = Vec::new();
            for (id, message) in &entries {
                let n = {
                    let mut seen = appearances.lock().unwrap();
                    let n = seen.entry(message.clone()).or_insert(0);
                    *n += 1;
                    *n
                };
                let failure = |sender_fault: bool, code: &str| {
                    BatchResultErrorEntry::builder()
                        .id(id)
                        .sender_fault(sender_fault)
                        .code(code)
                        .message("modeled failure")
                        .build()
                        .unwrap()
                };
                match answer(message, n) {
                    Entry::Ok => successful.push(
                        PublishBatchResultEntry::builder()
                            .id(id)
                            .message_id(format!("mid-{message}"))
                            .build(),
                    ),
                    Entry::Transient => failed.push(failure(false, "InternalError")),
                    Entry::SenderFault => failed.push(failure(true, "InvalidParameter")),
                }
            }
            MockResponse::Output(
                PublishBatchOutput::builder()
                    .set_successful(Some(successful))
                    .set_failed(Some(failed))
                    .build(),
            )
        },
    )
}

#[tokio::test]
async fn publish_batch_entries_are_retried_when_transient_and_reported_when_not() {
    let calls = Calls::default();
    let rule = publish_rule(&calls, |message, n| match message {
        "transient" if n == 1 => Entry::Transient,
        "refused" => Entry::SenderFault,
        _ => Entry::Ok,
    });
    // A linger long enough for the three to share one batch.
    let settings = SnsSinkSettings {
        linger: Duration::from_millis(300),
        ..SnsSinkSettings::default()
    };
    let sink = SnsEventSink::spawn(mocked_sns(&rule), TOPIC_ARN, settings);

    let (ok, transient, refused) = tokio::join!(
        sink.publish(event("c1", "a", "ok")),
        sink.publish(event("c2", "a", "transient")),
        sink.publish(event("c3", "a", "refused")),
    );
    assert_eq!(ok, Ok(()));
    assert_eq!(transient, Ok(()), "retried and published");
    assert!(
        matches!(&refused, Err(PublishError::Rejected(reason)) if reason.contains("InvalidParameter")),
        "{refused:?}"
    );

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let mut first: Vec<&str> = calls[0].iter().map(|(_, m)| m.as_str()).collect();
    first.sort_unstable();
    assert_eq!(first, ["ok", "refused", "transient"]);
    // Only the transient failure went out again.
    assert_eq!(calls[1], entries(&[("0", "transient")]));
}

#[tokio::test]
async fn a_publish_entry_failing_every_time_ends_unavailable_after_the_retries() {
    let calls = Calls::default();
    let rule = publish_rule(&calls, |message, _| {
        if message == "never" {
            Entry::Transient
        } else {
            Entry::Ok
        }
    });
    let settings = SnsSinkSettings {
        entry_retries: 2,
        ..SnsSinkSettings::default()
    };
    let sink = SnsEventSink::spawn(mocked_sns(&rule), TOPIC_ARN, settings);

    let result = tokio::time::timeout(WAIT, sink.publish(event("c1", "a", "never")))
        .await
        .expect("publish was not answered");
    assert!(
        matches!(&result, Err(PublishError::Unavailable(reason)) if reason.contains("InternalError")),
        "{result:?}"
    );
    // The first call and two retries.
    assert_eq!(calls.lock().unwrap().len(), 3);
    assert_eq!(sink.publish(event("c1", "a", "fine")).await, Ok(()));
}
