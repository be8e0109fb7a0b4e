//! Downlink: receive → decode → de-duplicate → deliver → acknowledge, release
//! or reject (docs/delivery.md), with the command source and the client registry mocked.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use domain::ports::{MockClientRegistry, MockCommandSource};
use domain::stats::DownlinkSnapshot;
use domain::{
    BatchOutcome, ConfirmError, DeadLetter, DeliveryId, Downlink, DownlinkSettings, GiveUpReason,
    Handoff, InboundMessage, Receipt, SourceError, Stats, Undeliverable,
};
use serde_json::json;
use tokio::time::advance;

const RETRY_DELAY: Duration = Duration::from_secs(7);
const ACK_TIMEOUT: Duration = Duration::from_millis(200);
const RETRY_WINDOW: Duration = Duration::from_secs(60);
const DEDUP_TTL: Duration = Duration::from_secs(300);
/// The mocked source's visibility timeout.
const VISIBILITY: Duration = Duration::from_secs(1);
/// The smallest step the tests take on tokio's paused clock.
const MILLI: Duration = Duration::from_millis(1);
const RETRY: Undeliverable = Undeliverable::Retry {
    delay: RETRY_DELAY,
    window: RETRY_WINDOW,
};

type Scripted = Result<Vec<InboundMessage>, SourceError>;
type Log<T> = Arc<Mutex<Vec<T>>>;

/// Everything the mocks were asked to do, in call order.
#[derive(Default, Clone)]
struct Calls {
    /// `(client id, frame text)` per `deliver` call.
    delivered: Log<(String, String)>,
    /// The delivery id of each `deliver` call.
    delivery_ids: Log<DeliveryId>,
    acknowledged: Log<Vec<Receipt>>,
    released: Log<(Vec<Receipt>, Duration)>,
    dead_lettered: Log<Vec<Receipt>>,
    /// Every message given up, with its reason and detail.
    letters: Log<DeadLetter>,
    extended: Log<(Vec<Receipt>, Duration)>,
}

impl Calls {
    fn delivered(&self) -> Vec<(String, String)> {
        self.delivered.lock().unwrap().clone()
    }
    fn delivery_ids(&self) -> Vec<DeliveryId> {
        self.delivery_ids.lock().unwrap().clone()
    }
    fn acknowledged(&self) -> Vec<Vec<Receipt>> {
        self.acknowledged.lock().unwrap().clone()
    }
    fn released(&self) -> Vec<(Vec<Receipt>, Duration)> {
        self.released.lock().unwrap().clone()
    }
    fn rejected(&self) -> Vec<Vec<Receipt>> {
        self.dead_lettered.lock().unwrap().clone()
    }
    fn letters(&self) -> Vec<DeadLetter> {
        self.letters.lock().unwrap().clone()
    }
    fn extended(&self) -> Vec<(Vec<Receipt>, Duration)> {
        self.extended.lock().unwrap().clone()
    }
}

/// A downlink over recording mocks. The source hands out the scripted
/// batches in order (and must be asked for exactly that many); the registry
/// says each client has as many connections as `connect` last set (0 if never).
struct Harness {
    downlink: Downlink,
    stats: Arc<Stats>,
    calls: Calls,
    connections: Arc<Mutex<HashMap<String, Handoff>>>,
    /// Runs inside each `deliver`, after the frame is queued (as a client
    /// that answers at once would).
    during_deliver: DeliverHook,
}

type DeliverHook = Arc<Mutex<Option<Box<dyn Fn(DeliveryId) + Send>>>>;

impl Harness {
    fn new(policy: Undeliverable, batches: Vec<Scripted>) -> Self {
        Self::build(settings(policy), batches, Ok(()))
    }

    /// Each client may hold at most `limit` unacknowledged deliveries.
    fn with_unacked_limit(limit: usize, batches: Vec<Scripted>) -> Self {
        let settings = DownlinkSettings {
            max_unacked_per_client: limit,
            ..settings(RETRY)
        };
        Self::build(settings, batches, Ok(()))
    }

    /// Every acknowledge, release and reject call fails with `error`.
    fn failing_settle(policy: Undeliverable, batches: Vec<Scripted>, error: SourceError) -> Self {
        Self::build(settings(policy), batches, Err(error))
    }

    fn build(
        settings: DownlinkSettings,
        batches: Vec<Scripted>,
        settle: Result<(), SourceError>,
    ) -> Self {
        Self::counting_receives(settings, batches, settle, None)
    }

    /// Like [`Harness::build`], over a source that dead-letters a message
    /// received `receive_limit` times by itself (SQS `maxReceiveCount`).
    fn counting_receives(
        settings: DownlinkSettings,
        batches: Vec<Scripted>,
        settle: Result<(), SourceError>,
        receive_limit: Option<u32>,
    ) -> Self {
        let during_deliver: DeliverHook = Arc::default();
        let calls = Calls::default();
        let connections = Arc::new(Mutex::new(HashMap::<String, Handoff>::new()));

        let mut source = MockCommandSource::new();
        let expected_receives = batches.len();
        let queue = Mutex::new(VecDeque::from(batches));
        source
            .expect_receive()
            .times(expected_receives)
            .returning(move || queue.lock().unwrap().pop_front().unwrap());
        let (log, result) = (calls.acknowledged.clone(), settle.clone());
        source.expect_acknowledge().returning(move |receipts| {
            log.lock().unwrap().push(receipts);
            result.clone()
        });
        let (log, result) = (calls.released.clone(), settle.clone());
        source.expect_release().returning(move |receipts, delay| {
            log.lock().unwrap().push((receipts, delay));
            result.clone()
        });
        let (log, letters, result) = (
            calls.dead_lettered.clone(),
            calls.letters.clone(),
            settle.clone(),
        );
        source
            .expect_dead_letter()
            .returning(move |given_up: Vec<DeadLetter>| {
                log.lock()
                    .unwrap()
                    .push(given_up.iter().map(|l| l.message.receipt.clone()).collect());
                letters.lock().unwrap().extend(given_up);
                result.clone()
            });
        source
            .expect_visibility_timeout()
            .returning(|| Some(VISIBILITY));
        source
            .expect_max_receive_count()
            .returning(move || receive_limit);
        let (log, result) = (calls.extended.clone(), settle);
        source
            .expect_extend()
            .returning(move |receipts, visibility| {
                log.lock().unwrap().push((receipts, visibility));
                result.clone()
            });

        let mut registry = MockClientRegistry::new();
        let (log, connected) = (calls.delivered.clone(), connections.clone());
        let delivery_ids = calls.delivery_ids.clone();
        let hook = during_deliver.clone();
        registry
            .expect_deliver()
            .returning(move |client_id, frame, delivery| {
                log.lock()
                    .unwrap()
                    .push((client_id.as_str().to_owned(), frame.to_string()));
                delivery_ids.lock().unwrap().push(delivery);
                let handoff = connected
                    .lock()
                    .unwrap()
                    .get(client_id.as_str())
                    .copied()
                    .unwrap_or_default();
                if let Some(hook) = hook.lock().unwrap().as_ref() {
                    hook(delivery);
                }
                handoff
            });

        let stats = Arc::new(Stats::default());
        let downlink = Downlink::new(
            Arc::new(source),
            Arc::new(registry),
            settings,
            stats.clone(),
        );
        Self {
            downlink,
            stats,
            calls,
            connections,
            during_deliver,
        }
    }

    /// From now on `client_id` has `count` connections.
    fn connect(&self, client_id: &str, count: usize) -> &Self {
        self.connect_with(client_id, count, 0)
    }

    /// From now on `client_id` has `immediate` plain connections and
    /// `awaiting_ack` acknowledging ones.
    fn connect_with(&self, client_id: &str, immediate: usize, awaiting_ack: usize) -> &Self {
        self.connections.lock().unwrap().insert(
            client_id.to_owned(),
            Handoff {
                immediate,
                awaiting_ack,
            },
        );
        self
    }

    async fn poll(&self) -> BatchOutcome {
        self.downlink.poll_once().await.unwrap()
    }

    fn counters(&self) -> DownlinkSnapshot {
        self.stats.downlink.snapshot()
    }
}

fn settings(undeliverable: Undeliverable) -> DownlinkSettings {
    DownlinkSettings {
        undeliverable,
        dedup_capacity: 1_000,
        dedup_ttl: DEDUP_TTL,
        ack_timeout: ACK_TIMEOUT,
        max_unacked_per_client: 100,
        after_release: domain::RetryRule {
            delay: RETRY_DELAY,
            window: RETRY_WINDOW,
        },
    }
}

fn receipt(token: &str) -> Receipt {
    Receipt::new(token)
}

fn receipts(tokens: &[&str]) -> Vec<Receipt> {
    tokens.iter().copied().map(receipt).collect()
}

/// An SQS message sent just now, received for the first time; its receipt
/// token is `rcpt-<sqs_id>`.
fn message(sqs_id: &str, body: impl Into<String>) -> InboundMessage {
    sent_at(sqs_id, body, Some(SystemTime::now()))
}

fn sent_at(sqs_id: &str, body: impl Into<String>, at: Option<SystemTime>) -> InboundMessage {
    InboundMessage {
        message_id: sqs_id.to_owned(),
        body: body.into(),
        receipt: receipt(&format!("rcpt-{sqs_id}")),
        sent_at: at,
        receive_count: 1,
        ..InboundMessage::default()
    }
}

/// An SNS notification envelope (raw message delivery off) around `inner`.
fn envelope(sns_id: &str, inner: &str) -> String {
    json!({
        "Type": "Notification",
        "MessageId": sns_id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:commands",
        "Subject": "ignored",
        "Message": inner,
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
        "MessageAttributes": {"shard": {"Type": "String", "Value": "3"}}
    })
    .to_string()
}

fn bare(client_id: &str, command: &str) -> String {
    json!({"client_id": client_id, "command": command}).to_string()
}

fn pair(client_id: &str, frame: &str) -> (String, String) {
    (client_id.to_owned(), frame.to_owned())
}

#[tokio::test]
async fn envelope_command_reaches_its_client_byte_for_byte_and_is_acknowledged() {
    // Odd spacing, key order, escapes and unknown fields: the client must get
    // exactly what the backend published, not a re-serialization, and never
    // the envelope.
    let inner = r#"{ "command":"test",  "data": {"n": 1.50, "s": "\u00e9\n"},
        "client_id": "client123", "trace_id": "t-9", "extra": [1, 2, null] }"#;
    let h = Harness::new(
        RETRY,
        vec![Ok(vec![message("sqs-1", envelope("sns-1", inner))])],
    );
    h.connect("client123", 1);

    let outcome = h.poll().await;

    assert_eq!(h.calls.delivered(), vec![pair("client123", inner)]);
    assert_eq!(h.calls.acknowledged(), vec![receipts(&["rcpt-sqs-1"])]);
    assert!(h.calls.released().is_empty());
    assert!(h.calls.rejected().is_empty());
    assert_eq!(
        outcome,
        BatchOutcome {
            acknowledged: receipts(&["rcpt-sqs-1"]),
            ..BatchOutcome::default()
        }
    );
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 1,
            forwarded: 1,
            frames_queued: 1,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn bare_command_is_delivered_as_is_and_acknowledged() {
    let body = r#"{"client_id":"c1","command":"go","data":null,"Type":"custom","zzz":{}}"#;
    let h = Harness::new(RETRY, vec![Ok(vec![message("sqs-1", body)])]);
    h.connect("c1", 1);

    h.poll().await;

    assert_eq!(h.calls.delivered(), vec![pair("c1", body)]);
    assert_eq!(h.calls.acknowledged(), vec![receipts(&["rcpt-sqs-1"])]);
    assert!(h.calls.released().is_empty() && h.calls.rejected().is_empty());
    assert_eq!(h.counters().forwarded, 1);
}

#[tokio::test]
async fn command_taken_by_two_connections_is_acknowledged_once_and_counts_two_frames() {
    let body = bare("shared", "refresh");
    let h = Harness::new(RETRY, vec![Ok(vec![message("sqs-1", body.clone())])]);
    h.connect("shared", 2);

    h.poll().await;

    // One deliver call: the registry fans out to the connections itself.
    assert_eq!(h.calls.delivered(), vec![pair("shared", &body)]);
    assert_eq!(h.calls.acknowledged(), vec![receipts(&["rcpt-sqs-1"])]);
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 1,
            forwarded: 1,
            frames_queued: 2,
            ..DownlinkSnapshot::default()
        }
    );
}

/// Bodies that are not Commands, one per way of failing.
fn malformed_bodies() -> Vec<(&'static str, String)> {
    vec![
        ("not-json", "this is not json".to_owned()),
        ("truncated", r#"{"client_id":"c1","command":"x""#.to_owned()),
        ("array", r#"[{"client_id":"c1","command":"x"}]"#.to_owned()),
        ("string", r#""c1""#.to_owned()),
        ("empty", String::new()),
        (
            "sub-confirm",
            json!({"Type": "SubscriptionConfirmation", "MessageId": "x", "Message": "confirm"})
                .to_string(),
        ),
        (
            "no-message",
            r#"{"Type":"Notification","MessageId":"x"}"#.to_owned(),
        ),
        (
            "message-object",
            json!({"Type": "Notification", "Message": {"client_id": "c1", "command": "x"}})
                .to_string(),
        ),
        ("inner-not-json", envelope("sns-bad-1", "{nope")),
        ("inner-array", envelope("sns-bad-2", "[]")),
        ("no-client-id", bare_without_client_id()),
        (
            "client-id-number",
            r#"{"client_id":7,"command":"x"}"#.to_owned(),
        ),
        ("client-id-empty", envelope("sns-bad-3", &bare("", "x"))),
        ("client-id-control", bare("a\u{7}b", "x")),
        ("client-id-too-long", bare(&"x".repeat(257), "x")),
        ("no-command", r#"{"client_id":"c1"}"#.to_owned()),
        (
            "command-number",
            r#"{"client_id":"c1","command":1}"#.to_owned(),
        ),
    ]
}

fn bare_without_client_id() -> String {
    json!({"command": "x", "data": 1}).to_string()
}

#[tokio::test]
async fn malformed_bodies_never_reach_the_registry_and_are_rejected() {
    let bodies = malformed_bodies();
    let batch: Vec<_> = bodies
        .iter()
        .map(|(id, body)| message(id, body.clone()))
        .collect();
    let expected: Vec<Receipt> = batch.iter().map(|m| m.receipt.clone()).collect();

    let rejected = Arc::new(Mutex::new(Vec::<Vec<Receipt>>::new()));
    let mut source = MockCommandSource::new();
    source
        .expect_receive()
        .times(1)
        .return_once(move || Ok(batch));
    source.expect_max_receive_count().returning(|| None);
    source.expect_acknowledge().times(0);
    source.expect_release().times(0);
    let log = rejected.clone();
    source
        .expect_dead_letter()
        .times(1)
        .returning(move |letters: Vec<DeadLetter>| {
            assert!(letters.iter().all(|l| l.reason == GiveUpReason::Malformed));
            assert!(letters.iter().all(|l| !l.detail.is_empty()));
            log.lock()
                .unwrap()
                .push(letters.into_iter().map(|l| l.message.receipt).collect());
            Ok(())
        });
    let mut registry = MockClientRegistry::new();
    registry.expect_deliver().times(0);
    registry.expect_connection_count().times(0);
    let stats = Arc::new(Stats::default());
    let downlink = Downlink::new(
        Arc::new(source),
        Arc::new(registry),
        settings(RETRY),
        stats.clone(),
    );

    let outcome = downlink.poll_once().await.unwrap();

    assert_eq!(*rejected.lock().unwrap(), vec![expected.clone()]);
    assert_eq!(
        outcome,
        BatchOutcome {
            dead_lettered: expected,
            ..BatchOutcome::default()
        }
    );
    let n = bodies.len() as u64;
    assert_eq!(
        stats.downlink.snapshot(),
        DownlinkSnapshot {
            received: n,
            malformed: n,
            dead_lettered: n,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn valid_commands_among_malformed_ones_are_still_delivered_in_order() {
    let first_a = bare("alice", "one");
    let inner_b = r#"{"client_id":"bob","command":"two"}"#;
    let second_a = r#"{"client_id":"alice","command":"three","data":[3]}"#;
    let third_a = bare("alice", "four");
    let batch = vec![
        message("bad-1", "garbage"),
        message("ok-1", first_a.clone()),
        message("bad-2", r#"{"client_id":"alice"}"#),
        message("ok-2", envelope("sns-2", inner_b)),
        message("ok-3", envelope("sns-3", second_a)),
        message("bad-3", envelope("sns-4", "not json")),
        message("ok-4", third_a.clone()),
    ];
    let h = Harness::new(Undeliverable::Drop, vec![Ok(batch)]);
    h.connect("alice", 1).connect("bob", 1);

    let outcome = h.poll().await;

    assert_eq!(
        h.calls.delivered(),
        vec![
            pair("alice", &first_a),
            pair("bob", inner_b),
            pair("alice", second_a),
            pair("alice", &third_a),
        ]
    );
    assert_eq!(
        h.calls.acknowledged(),
        vec![receipts(&[
            "rcpt-ok-1",
            "rcpt-ok-2",
            "rcpt-ok-3",
            "rcpt-ok-4"
        ])]
    );
    assert_eq!(
        h.calls.rejected(),
        vec![receipts(&["rcpt-bad-1", "rcpt-bad-2", "rcpt-bad-3"])]
    );
    assert!(h.calls.released().is_empty());
    assert_eq!(
        outcome.dead_lettered,
        receipts(&["rcpt-bad-1", "rcpt-bad-2", "rcpt-bad-3"])
    );
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 7,
            forwarded: 4,
            frames_queued: 4,
            malformed: 3,
            dead_lettered: 3,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn repeated_sns_message_id_in_a_later_batch_is_acknowledged_not_delivered() {
    // The same SNS notification reaches the queue twice (at-least-once
    // delivery): different SQS message ids and receipts, same SNS MessageId.
    let inner = bare("alice", "once");
    let h = Harness::new(
        RETRY,
        vec![
            Ok(vec![message("sqs-1", envelope("sns-1", &inner))]),
            Ok(vec![
                message("sqs-2", envelope("sns-1", &inner)),
                message("sqs-3", envelope("sns-2", &inner)),
            ]),
        ],
    );
    h.connect("alice", 1);

    h.poll().await;
    let second = h.poll().await;

    assert_eq!(
        h.calls.delivered(),
        vec![pair("alice", &inner), pair("alice", &inner)],
        "sns-1 once, then sns-2"
    );
    assert_eq!(
        h.calls.acknowledged(),
        vec![
            receipts(&["rcpt-sqs-1"]),
            receipts(&["rcpt-sqs-2", "rcpt-sqs-3"])
        ]
    );
    assert_eq!(second.acknowledged, receipts(&["rcpt-sqs-2", "rcpt-sqs-3"]));
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 3,
            forwarded: 2,
            frames_queued: 2,
            duplicate: 1,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn redelivered_bare_command_is_recognised_by_its_sqs_message_id() {
    let body = bare("alice", "once");
    let mut again = message("sqs-1", body.clone());
    again.receipt = receipt("rcpt-sqs-1-second-receive");
    again.receive_count = 2;
    let h = Harness::new(
        RETRY,
        vec![Ok(vec![message("sqs-1", body.clone())]), Ok(vec![again])],
    );
    h.connect("alice", 1);

    h.poll().await;
    h.poll().await;

    assert_eq!(h.calls.delivered(), vec![pair("alice", &body)]);
    assert_eq!(
        h.calls.acknowledged(),
        vec![
            receipts(&["rcpt-sqs-1"]),
            receipts(&["rcpt-sqs-1-second-receive"])
        ]
    );
    assert_eq!(h.counters().duplicate, 1);
}

#[tokio::test]
async fn a_command_that_was_released_is_delivered_when_it_comes_back() {
    let inner = bare("late", "hello");
    let h = Harness::new(
        RETRY,
        vec![
            Ok(vec![message("sqs-1", envelope("sns-1", &inner))]),
            Ok(vec![message("sqs-2", envelope("sns-1", &inner))]),
        ],
    );

    let first = h.poll().await;
    assert_eq!(first.released, receipts(&["rcpt-sqs-1"]));
    h.connect("late", 1);
    let second = h.poll().await;

    assert_eq!(
        h.calls.delivered(),
        vec![pair("late", &inner), pair("late", &inner)],
        "one attempt that nobody took, then the real delivery"
    );
    assert_eq!(
        h.calls.released(),
        vec![(receipts(&["rcpt-sqs-1"]), RETRY_DELAY)]
    );
    assert_eq!(h.calls.acknowledged(), vec![receipts(&["rcpt-sqs-2"])]);
    assert_eq!(second.acknowledged, receipts(&["rcpt-sqs-2"]));
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 2,
            released: 1,
            forwarded: 1,
            frames_queued: 1,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn absent_client_with_retry_is_released_with_the_configured_delay() {
    let now = SystemTime::now();
    let batch = vec![
        sent_at(
            "absent-1",
            bare("ghost", "a"),
            Some(now - Duration::from_secs(5)),
        ),
        message("present", bare("here", "b")),
        // An unknown send time counts as "just sent".
        sent_at("absent-2", envelope("sns-2", &bare("ghost", "c")), None),
        sent_at(
            "absent-3",
            bare("other-ghost", "d"),
            Some(now - Duration::from_secs(59)),
        ),
    ];
    let h = Harness::new(RETRY, vec![Ok(batch)]);
    h.connect("here", 1);

    let outcome = h.poll().await;

    let released = receipts(&["rcpt-absent-1", "rcpt-absent-2", "rcpt-absent-3"]);
    assert_eq!(h.calls.released(), vec![(released.clone(), RETRY_DELAY)]);
    assert_eq!(
        h.calls.acknowledged(),
        vec![receipts(&["rcpt-present"])],
        "released messages are not acknowledged"
    );
    assert!(h.calls.rejected().is_empty());
    assert_eq!(outcome.released, released);
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 4,
            forwarded: 1,
            frames_queued: 1,
            released: 3,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn once_draining_an_absent_clients_command_is_released_at_once() {
    let h = Harness::new(
        RETRY,
        vec![
            Ok(vec![message("before", bare("ghost", "a"))]),
            Ok(vec![
                message("after", bare("ghost", "b")),
                message("present", bare("here", "c")),
            ]),
        ],
    );
    h.connect("here", 1);

    h.poll().await;
    // Shutting down: another instance may hold the client, so it must not
    // wait out the retry delay. Handed-off Commands are settled as before.
    h.downlink.drain();
    h.poll().await;

    assert_eq!(
        h.calls.released(),
        vec![
            (receipts(&["rcpt-before"]), RETRY_DELAY),
            (receipts(&["rcpt-after"]), Duration::ZERO),
        ]
    );
    assert_eq!(h.calls.acknowledged(), vec![receipts(&["rcpt-present"])]);
}

#[tokio::test]
async fn absent_client_past_the_retry_window_is_dead_lettered_as_undeliverable() {
    let old = SystemTime::now() - RETRY_WINDOW - Duration::from_secs(60);
    let body = bare("gone", "stale");
    let h = Harness::new(
        RETRY,
        vec![Ok(vec![sent_at("old", body.clone(), Some(old))])],
    );

    let outcome = h.poll().await;

    assert_eq!(
        h.calls.delivered(),
        vec![pair("gone", &body)],
        "one attempt"
    );
    assert!(h.calls.acknowledged().is_empty());
    assert!(h.calls.released().is_empty());
    assert_eq!(h.calls.rejected(), vec![receipts(&["rcpt-old"])]);
    let letters = h.calls.letters();
    assert_eq!(letters[0].reason, GiveUpReason::Undeliverable);
    assert_eq!(letters[0].message.body, body, "the body goes as it came");
    assert!(
        letters[0].detail.contains("retry window"),
        "{}",
        letters[0].detail
    );
    assert_eq!(outcome.dead_lettered, receipts(&["rcpt-old"]));
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 1,
            undeliverable: 1,
            dead_lettered: 1,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn drop_policy_acknowledges_a_command_for_an_absent_client_at_once() {
    // Even one sent just now: with `drop` there is no second attempt.
    let h = Harness::new(
        Undeliverable::Drop,
        vec![Ok(vec![
            message("absent", bare("ghost", "x")),
            message("present", bare("here", "y")),
        ])],
    );
    h.connect("here", 1);

    h.poll().await;

    assert_eq!(
        h.calls.acknowledged(),
        vec![receipts(&["rcpt-absent", "rcpt-present"])]
    );
    assert!(h.calls.released().is_empty());
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 2,
            forwarded: 1,
            frames_queued: 1,
            undeliverable: 1,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn a_receive_error_is_returned_and_the_next_receive_goes_on() {
    // Counting receive errors and readiness are the source adapter's.
    let h = Harness::new(
        RETRY,
        vec![
            Ok(vec![]),
            Err(SourceError::Unavailable("connection reset".into())),
            Err(SourceError::Misconfigured("queue does not exist".into())),
            Ok(vec![]),
        ],
    );

    h.poll().await;
    let error = h.downlink.poll_once().await.unwrap_err();
    assert_eq!(error, SourceError::Unavailable("connection reset".into()));
    let error = h.downlink.poll_once().await.unwrap_err();
    assert_eq!(
        error,
        SourceError::Misconfigured("queue does not exist".into())
    );
    h.poll().await;

    assert_eq!(h.counters(), DownlinkSnapshot::default());
    assert!(h.calls.acknowledged().is_empty());
    assert!(h.calls.delivered().is_empty());
}

#[tokio::test]
async fn failing_settle_calls_leave_the_batch_decided_and_a_redelivery_is_not_forwarded_twice() {
    // Counting settle errors is the source adapter's.
    let inner = bare("alice", "x");
    let h = Harness::failing_settle(
        RETRY,
        vec![
            Ok(vec![
                message("sqs-1", envelope("sns-1", &inner)),
                message("absent", bare("ghost", "y")),
                message("bad", "{"),
            ]),
            // The acknowledge failed, so the source hands sns-1 out again.
            Ok(vec![message("sqs-1-again", envelope("sns-1", &inner))]),
        ],
        SourceError::Unavailable("throttled".into()),
    );
    h.connect("alice", 1);

    let first = h.poll().await;
    let second = h.poll().await;

    assert_eq!(
        first,
        BatchOutcome {
            acknowledged: receipts(&["rcpt-sqs-1"]),
            released: receipts(&["rcpt-absent"]),
            dead_lettered: receipts(&["rcpt-bad"]),
            ..BatchOutcome::default()
        }
    );
    assert_eq!(
        h.calls.acknowledged(),
        vec![receipts(&["rcpt-sqs-1"]), receipts(&["rcpt-sqs-1-again"])]
    );
    assert_eq!(
        h.calls.released(),
        vec![(receipts(&["rcpt-absent"]), RETRY_DELAY)]
    );
    assert_eq!(h.calls.rejected(), vec![receipts(&["rcpt-bad"])]);
    assert_eq!(second.acknowledged, receipts(&["rcpt-sqs-1-again"]));
    assert_eq!(
        h.calls
            .delivered()
            .iter()
            .filter(|(client, _)| client == "alice")
            .count(),
        1,
        "the redelivered command is a duplicate"
    );
    assert_eq!(
        h.counters(),
        DownlinkSnapshot {
            received: 4,
            forwarded: 1,
            frames_queued: 1,
            released: 1,
            malformed: 1,
            dead_lettered: 1,
            duplicate: 1,
            ..DownlinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn an_empty_batch_makes_no_settle_calls() {
    let mut source = MockCommandSource::new();
    source
        .expect_receive()
        .times(2)
        .returning(|| Ok(Vec::new()));
    source.expect_acknowledge().times(0);
    source.expect_release().times(0);
    source.expect_dead_letter().times(0);
    let mut registry = MockClientRegistry::new();
    registry.expect_deliver().times(0);
    let stats = Arc::new(Stats::default());
    let downlink = Downlink::new(
        Arc::new(source),
        Arc::new(registry),
        settings(RETRY),
        stats.clone(),
    );

    assert_eq!(downlink.poll_once().await.unwrap(), BatchOutcome::default());
    assert_eq!(downlink.process(Vec::new()).await, BatchOutcome::default());
    assert_eq!(downlink.poll_once().await.unwrap(), BatchOutcome::default());

    assert_eq!(stats.downlink.snapshot(), DownlinkSnapshot::default());
}

// --- Acknowledged delivery (`ack=true` connections) ---

#[tokio::test]
async fn a_delivery_awaiting_ack_is_held_then_deleted_when_the_client_acknowledges() {
    let h = Harness::new(RETRY, vec![Ok(vec![message("sqs-1", bare("alice", "go"))])]);
    h.connect_with("alice", 0, 1);

    let outcome = h.poll().await;
    assert_eq!(
        outcome,
        BatchOutcome {
            held: receipts(&["rcpt-sqs-1"]),
            ..BatchOutcome::default()
        }
    );
    assert!(h.calls.acknowledged().is_empty(), "deleted before the ack");
    let acks = h.downlink.acks();
    assert_eq!(acks.len(), 1);

    let id = h.calls.delivery_ids()[0].to_string();
    // Another client cannot acknowledge alice's delivery.
    let bob = domain::ClientId::parse("bob").unwrap();
    assert_eq!(
        acks.confirm(&bob, &id),
        Err(ConfirmError::Unknown(id.clone()))
    );
    assert!(h.calls.acknowledged().is_empty());

    let alice = domain::ClientId::parse("alice").unwrap();
    acks.confirm(&alice, &id).unwrap();
    assert!(
        h.calls.acknowledged().is_empty(),
        "deleted in the background"
    );
    assert_eq!(acks.confirmed_len(), 1);
    assert_eq!(acks.settle_confirmed().await, 1);
    assert_eq!(h.calls.acknowledged(), vec![receipts(&["rcpt-sqs-1"])]);
    assert!(acks.is_empty());
    // A second acknowledgement of the same delivery is refused.
    assert_eq!(
        acks.confirm(&alice, &id),
        Err(ConfirmError::Unknown(id.clone()))
    );
    let counters = h.counters();
    assert_eq!(counters.forwarded, 1);
    assert_eq!(counters.acknowledged_by_client, 1);
    assert_eq!(counters.ack_released, 0);
}

#[tokio::test(start_paused = true)]
async fn an_overdue_delivery_is_delivered_again_from_the_hold_while_its_client_is_here() {
    let h = Harness::new(RETRY, vec![Ok(vec![message("sqs-1", bare("alice", "go"))])]);
    h.connect_with("alice", 0, 1);
    h.poll().await;
    let acks = h.downlink.acks();

    assert_eq!(acks.release_expired().await, 0, "before the timeout");
    advance(ACK_TIMEOUT - MILLI).await;
    assert_eq!(acks.release_expired().await, 0, "just before the timeout");
    advance(MILLI).await;
    assert_eq!(acks.release_expired().await, 1);

    // Not through the queue (another replica, without alice, could take
    // it): from the hold, with a new delivery id, still invisible.
    assert!(h.calls.released().is_empty());
    assert_eq!(h.calls.delivered().len(), 2);
    let ids = h.calls.delivery_ids();
    assert_ne!(ids[0], ids[1], "each hand-off has its own delivery id");
    let alice = client("alice");
    assert_eq!(
        acks.confirm(&alice, &ids[0].to_string()),
        Err(ConfirmError::Unknown(ids[0].to_string())),
        "the overdue id is no longer taken"
    );
    acks.confirm(&alice, &ids[1].to_string()).unwrap();
    acks.settle_confirmed().await;
    assert_eq!(h.calls.acknowledged(), vec![receipts(&["rcpt-sqs-1"])]);
    let counters = h.counters();
    assert_eq!((counters.ack_redelivered, counters.ack_released), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn an_overdue_delivery_whose_client_left_is_released_and_delivered_when_it_comes_back() {
    let h = Harness::new(
        RETRY,
        vec![
            Ok(vec![message("sqs-1", bare("alice", "go"))]),
            Ok(vec![message("sqs-1", bare("alice", "go"))]),
        ],
    );
    h.connect_with("alice", 0, 1);
    h.poll().await;
    let acks = h.downlink.acks();
    h.connect_with("alice", 0, 0);

    advance(ACK_TIMEOUT).await;
    assert_eq!(acks.release_expired().await, 1);
    assert_eq!(
        h.calls.released(),
        vec![(receipts(&["rcpt-sqs-1"]), Duration::ZERO)]
    );

    // The same message comes back: delivered again, not taken for a duplicate.
    h.connect_with("alice", 0, 1);
    let outcome = h.poll().await;
    assert_eq!(outcome.held, receipts(&["rcpt-sqs-1"]));
    let counters = h.counters();
    assert_eq!(counters.duplicate, 0);
    assert_eq!((counters.ack_redelivered, counters.ack_released), (0, 1));
    assert_eq!(acks.len(), 1);
}

#[tokio::test]
async fn release_all_gives_back_every_waiting_delivery_at_once() {
    let h = Harness::new(
        RETRY,
        vec![Ok(vec![
            message("sqs-1", bare("alice", "a")),
            message("sqs-2", bare("alice", "b")),
        ])],
    );
    h.connect_with("alice", 1, 1);
    h.poll().await;
    let acks = h.downlink.acks();
    assert_eq!(acks.len(), 2);

    assert_eq!(acks.release_all().await, 2);
    let released = h.calls.released();
    assert_eq!(released.len(), 1);
    let (mut got, delay) = released[0].clone();
    got.sort_by(|a, b| a.token().cmp(b.token()));
    assert_eq!(got, receipts(&["rcpt-sqs-1", "rcpt-sqs-2"]));
    assert_eq!(delay, Duration::ZERO);
    assert!(acks.is_empty());
    assert!(h.calls.acknowledged().is_empty());
}

#[test]
fn delivery_ids_round_trip_through_their_text() {
    let id = DeliveryId::parse("12").unwrap();
    assert_eq!(id.to_string(), "12");
    assert_eq!(DeliveryId::parse("-1"), None);
}

#[test]
fn handoff_counts_both_kinds() {
    let handoff = Handoff {
        immediate: 2,
        awaiting_ack: 3,
    };
    assert_eq!(handoff.taken(), 5);
}

fn client(id: &str) -> domain::ClientId {
    domain::ClientId::parse(id).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_held_delivery_keeps_its_message_invisible_until_the_ack_timeout() {
    // Visibility 1 s, ack timeout 2.5 s: extended each time half of the
    // visibility is spent, delivered again only when the ack timeout ends.
    let h = Harness::build(
        DownlinkSettings {
            ack_timeout: Duration::from_millis(2_500),
            ..settings(RETRY)
        },
        vec![Ok(vec![message("sqs-1", bare("alice", "go"))])],
        Ok(()),
    );
    h.connect_with("alice", 0, 1);
    h.poll().await;
    let acks = h.downlink.acks();

    let mut redelivered = 0;
    // The ticks (every 100 ms) at which the message was extended and
    // delivered again.
    let (mut extended_at, mut redelivered_at) = (Vec::new(), Vec::new());
    for n in 1..=30 {
        advance(Duration::from_millis(100)).await;
        let tick = acks.tick().await;
        redelivered += tick.redelivered;
        extended_at.extend((tick.extended > 0).then_some(n));
        redelivered_at.extend((tick.redelivered > 0).then_some(n));
    }
    let extended = h.calls.extended();
    assert!(
        extended.len() >= 4,
        "extended every ~0.5 s of a 1 s visibility: {extended:?}"
    );
    assert_eq!(extended_at, [5, 10, 15, 20, 25, 30], "every 0.5 s exactly");
    assert_eq!(redelivered_at, [25], "at the ack timeout exactly");
    assert!(extended
        .iter()
        .all(|(r, vt)| *r == receipts(&["rcpt-sqs-1"]) && *vt == VISIBILITY));
    assert_eq!(redelivered, 1, "delivered again by the ack timeout only");
    assert!(h.calls.released().is_empty(), "never given back meanwhile");
    assert_eq!(h.counters().visibility_extended, extended.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn a_held_delivery_is_kept_invisible_up_to_the_12_hour_cap_from_its_receive() {
    // SQS refuses a visibility past 12 h from the receive: the last
    // extension stops short of it, whatever the ack timeout.
    const CAP: Duration = Duration::from_secs(12 * 60 * 60);
    let h = Harness::build(
        DownlinkSettings {
            ack_timeout: CAP + Duration::from_secs(3600),
            ..settings(RETRY)
        },
        vec![Ok(vec![message("sqs-1", bare("alice", "go"))])],
        Ok(()),
    );
    h.connect_with("alice", 0, 1);
    h.poll().await;
    let acks = h.downlink.acks();

    advance(CAP - Duration::from_millis(1_500)).await;
    assert_eq!(
        acks.tick().await.extended,
        1,
        "1.5 s left: a full visibility"
    );
    advance(Duration::from_millis(600)).await;
    assert_eq!(acks.tick().await.extended, 0, "0.9 s left: none");
    advance(Duration::from_secs(60)).await;
    assert_eq!(acks.tick().await, domain::Tick::default());
    assert_eq!(
        h.calls.extended(),
        vec![(receipts(&["rcpt-sqs-1"]), VISIBILITY)]
    );
    assert_eq!(
        acks.len(),
        1,
        "still held: only the ack timeout gives it back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_copy_is_a_duplicate_within_the_dedup_ttl_and_delivered_again_after_it() {
    let inner = bare("alice", "once");
    let h = Harness::new(
        RETRY,
        vec![
            Ok(vec![message("sqs-1", envelope("sns-1", &inner))]),
            Ok(vec![message("sqs-2", envelope("sns-1", &inner))]),
            Ok(vec![message("sqs-3", envelope("sns-1", &inner))]),
        ],
    );
    h.connect("alice", 1);

    h.poll().await;
    advance(DEDUP_TTL - MILLI).await;
    let second = h.poll().await;
    advance(MILLI).await;
    let third = h.poll().await;

    assert_eq!(
        h.calls.delivered(),
        vec![pair("alice", &inner), pair("alice", &inner)],
        "the first copy, then the one past the TTL"
    );
    assert_eq!(second.acknowledged, receipts(&["rcpt-sqs-2"]));
    assert_eq!(third.acknowledged, receipts(&["rcpt-sqs-3"]));
    assert_eq!(h.counters().duplicate, 1);
    assert_eq!(h.counters().forwarded, 2);
    assert_eq!(h.downlink.dedup_window(), DEDUP_TTL);
}

#[tokio::test(start_paused = true)]
async fn a_command_released_unacknowledged_waits_its_window_from_the_release_then_is_given_up() {
    // Whatever the policy: `drop` too keeps a Command its client was
    // handed and never acknowledged.
    for policy in [RETRY, Undeliverable::Drop] {
        let again = |count| received("sqs-1", bare("alice", "go"), count, Duration::ZERO);
        let h = Harness::new(
            policy,
            vec![
                Ok(vec![message("sqs-1", bare("alice", "go"))]),
                Ok(vec![again(2)]),
                Ok(vec![again(3)]),
            ],
        );
        h.connect_with("alice", 0, 1);
        h.poll().await;
        h.connect_with("alice", 0, 0);
        assert_eq!(h.downlink.acks().release_client(&client("alice")).await, 1);

        advance(RETRY_WINDOW - MILLI).await;
        let outcome = h.poll().await;
        assert_eq!(outcome.released, receipts(&["rcpt-sqs-1"]), "{policy:?}");
        advance(MILLI).await;
        let outcome = h.poll().await;
        assert_eq!(
            outcome.dead_lettered,
            receipts(&["rcpt-sqs-1"]),
            "{policy:?}"
        );

        let letters = h.calls.letters();
        assert_eq!(letters.len(), 1, "{policy:?}");
        assert_eq!(letters[0].reason, GiveUpReason::Undeliverable);
        assert_eq!(
            letters[0].detail,
            "client alice was not connected within the retry window of 60 s"
        );
        assert_eq!(
            h.calls.released(),
            vec![
                (receipts(&["rcpt-sqs-1"]), Duration::ZERO),
                (receipts(&["rcpt-sqs-1"]), RETRY_DELAY),
            ],
            "{policy:?}"
        );
    }
}

#[tokio::test]
async fn the_retry_window_counts_from_the_send_to_the_wall_clock_now_given() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let h = Harness::new(RETRY, Vec::new());
    let batch = vec![
        sent_at(
            "inside",
            bare("ghost", "a"),
            Some(now - RETRY_WINDOW + MILLI),
        ),
        sent_at("at-the-end", bare("ghost", "b"), Some(now - RETRY_WINDOW)),
        // The sender's clock is ahead: just sent.
        sent_at("ahead", bare("ghost", "c"), Some(now + RETRY_WINDOW)),
    ];

    let outcome = h.downlink.process_at(batch, now).await;

    assert_eq!(outcome.released, receipts(&["rcpt-inside", "rcpt-ahead"]));
    assert_eq!(outcome.dead_lettered, receipts(&["rcpt-at-the-end"]));
}

#[tokio::test]
async fn a_redelivered_copy_of_a_held_message_is_adopted_not_deleted() {
    let body = envelope("sns-1", &bare("alice", "go"));
    let mut copy = message("sqs-1", body.clone());
    copy.receipt = receipt("rcpt-sqs-1-second");
    let h = Harness::new(
        RETRY,
        vec![
            Ok(vec![message("sqs-1", body.clone())]),
            // The same SQS message handed out again while held.
            Ok(vec![copy]),
            // Another SQS message with the same SNS id: a true duplicate.
            Ok(vec![message("sqs-2", body)]),
        ],
    );
    h.connect_with("alice", 0, 1);
    h.poll().await;
    let second = h.poll().await;
    assert_eq!(second.held, receipts(&["rcpt-sqs-1-second"]));
    assert!(
        h.calls.acknowledged().is_empty(),
        "the copy was not deleted"
    );
    assert_eq!(h.calls.delivered().len(), 1, "nor delivered twice");

    let third = h.poll().await;
    assert_eq!(third.acknowledged, receipts(&["rcpt-sqs-2"]));

    // The acknowledgement deletes the message by its newest receipt.
    let id = h.calls.delivery_ids()[0].to_string();
    h.downlink.acks().confirm(&client("alice"), &id).unwrap();
    h.downlink.acks().settle_confirmed().await;
    assert_eq!(
        h.calls.acknowledged(),
        vec![receipts(&["rcpt-sqs-2"]), receipts(&["rcpt-sqs-1-second"])]
    );
}

#[tokio::test]
async fn an_ack_that_arrives_before_deliver_returns_is_not_lost() {
    let h = Harness::new(RETRY, vec![Ok(vec![message("sqs-1", bare("alice", "go"))])]);
    h.connect_with("alice", 0, 1);
    let acks = h.downlink.acks();
    *h.during_deliver.lock().unwrap() = Some(Box::new(move |delivery| {
        acks.confirm(&client("alice"), &delivery.to_string())
            .expect("the delivery is known before its frame is queued");
    }));

    h.poll().await;

    let acks = h.downlink.acks();
    assert!(acks.is_empty(), "nothing left waiting");
    acks.settle_confirmed().await;
    assert_eq!(h.calls.acknowledged(), vec![receipts(&["rcpt-sqs-1"])]);
    assert!(acks.release_all().await == 0 && h.calls.released().is_empty());
}

#[tokio::test]
async fn a_client_that_leaves_gets_its_held_deliveries_released_at_once() {
    let h = Harness::new(
        RETRY,
        vec![Ok(vec![
            message("sqs-1", bare("alice", "a")),
            message("sqs-2", bare("bob", "b")),
        ])],
    );
    h.connect_with("alice", 0, 1).connect_with("bob", 0, 1);
    h.poll().await;
    let acks = h.downlink.acks();

    assert_eq!(acks.release_client(&client("alice")).await, 1);
    assert_eq!(
        h.calls.released(),
        vec![(receipts(&["rcpt-sqs-1"]), Duration::ZERO)]
    );
    assert_eq!(acks.len(), 1, "bob's delivery still waits");
}

#[tokio::test]
async fn a_client_at_its_unacknowledged_limit_waits_and_others_flow() {
    let h = Harness::with_unacked_limit(
        2,
        vec![Ok(vec![
            message("a-1", bare("alice", "1")),
            message("a-2", bare("alice", "2")),
            message("a-3", bare("alice", "3")),
            message("b-1", bare("bob", "1")),
        ])],
    );
    h.connect_with("alice", 0, 1).connect("bob", 1);

    let outcome = h.poll().await;

    assert_eq!(outcome.held, receipts(&["rcpt-a-1", "rcpt-a-2"]));
    assert_eq!(outcome.deferred, receipts(&["rcpt-a-3"]));
    assert_eq!(outcome.acknowledged, receipts(&["rcpt-b-1"]));
    assert_eq!(
        h.calls.released(),
        vec![(receipts(&["rcpt-a-3"]), RETRY_DELAY)]
    );
    assert_eq!(h.counters().deferred, 1);
}

// --- Released without an acknowledgement, parked, and the receive limit ---

/// A message received `count` times, sent `ago` before now.
fn received(sqs_id: &str, body: impl Into<String>, count: u32, ago: Duration) -> InboundMessage {
    InboundMessage {
        receive_count: count,
        ..sent_at(sqs_id, body, Some(SystemTime::now() - ago))
    }
}

#[tokio::test]
async fn with_drop_a_command_released_unacknowledged_waits_for_its_client() {
    let h = Harness::new(
        Undeliverable::Drop,
        vec![
            Ok(vec![message("sqs-1", bare("alice", "go"))]),
            Ok(vec![received(
                "sqs-1",
                bare("alice", "go"),
                2,
                Duration::ZERO,
            )]),
            Ok(vec![received(
                "sqs-1",
                bare("alice", "go"),
                3,
                Duration::ZERO,
            )]),
        ],
    );
    h.connect_with("alice", 0, 1);
    h.poll().await;
    let acks = h.downlink.acks();
    h.connect_with("alice", 0, 0);
    assert_eq!(acks.release_client(&client("alice")).await, 1);

    // Back while alice is away: released for a later attempt, not dropped.
    let outcome = h.poll().await;
    assert_eq!(outcome.released, receipts(&["rcpt-sqs-1"]));
    assert!(outcome.acknowledged.is_empty(), "{outcome:?}");
    assert_eq!(
        h.calls.released().last().unwrap(),
        &(receipts(&["rcpt-sqs-1"]), RETRY_DELAY)
    );

    // Alice is back: she gets it again.
    h.connect_with("alice", 0, 1);
    let outcome = h.poll().await;
    assert_eq!(outcome.held, receipts(&["rcpt-sqs-1"]));
    assert_eq!(h.counters().forwarded, 2);
    assert_eq!(h.counters().undeliverable, 0);
}

#[tokio::test]
async fn the_retry_window_of_a_released_command_counts_from_its_release() {
    let window = Duration::from_secs(3);
    let rule = Undeliverable::Retry {
        delay: RETRY_DELAY,
        window,
    };
    let h = Harness::build(
        DownlinkSettings {
            after_release: domain::RetryRule {
                delay: RETRY_DELAY,
                window,
            },
            ..settings(rule)
        },
        vec![
            Ok(vec![received(
                "sqs-1",
                bare("alice", "go"),
                1,
                Duration::from_secs(5),
            )]),
            Ok(vec![received(
                "sqs-1",
                bare("alice", "go"),
                2,
                Duration::from_secs(5),
            )]),
        ],
        Ok(()),
    );
    h.connect_with("alice", 0, 1);
    h.poll().await;
    h.connect_with("alice", 0, 0);
    h.downlink.acks().release_client(&client("alice")).await;

    // Sent 5 s ago, window 3 s, released just now: still waits.
    let outcome = h.poll().await;
    assert_eq!(outcome.released, receipts(&["rcpt-sqs-1"]));
    assert!(h.calls.letters().is_empty(), "{:?}", h.calls.letters());
}

#[tokio::test]
async fn a_command_that_was_never_held_still_counts_its_window_from_its_send() {
    let h = Harness::new(
        RETRY,
        vec![Ok(vec![received(
            "sqs-1",
            bare("alice", "go"),
            1,
            RETRY_WINDOW + Duration::from_secs(1),
        )])],
    );
    let outcome = h.poll().await;
    assert_eq!(outcome.dead_lettered, receipts(&["rcpt-sqs-1"]));
}

/// Limit 1 per client on a source that dead-letters at `receive_limit`.
fn counting(receive_limit: u32, batches: Vec<Scripted>) -> Harness {
    let settings = DownlinkSettings {
        max_unacked_per_client: 1,
        ..settings(RETRY)
    };
    Harness::counting_receives(settings, batches, Ok(()), Some(receive_limit))
}

#[tokio::test]
async fn commands_for_a_client_at_its_limit_are_parked_not_released_and_go_out_in_order() {
    let h = counting(
        4,
        vec![
            Ok(vec![
                message("a-1", bare("alice", "1")),
                message("a-2", bare("alice", "2")),
            ]),
            Ok(vec![message("a-3", bare("alice", "3"))]),
        ],
    );
    h.connect_with("alice", 0, 1);
    let outcome = h.poll().await;
    assert_eq!(outcome.held, receipts(&["rcpt-a-1"]));
    assert_eq!(outcome.parked, receipts(&["rcpt-a-2"]));
    // A newer Command waits behind the parked one.
    let outcome = h.poll().await;
    assert_eq!(outcome.parked, receipts(&["rcpt-a-3"]));
    assert!(h.calls.released().is_empty(), "{:?}", h.calls.released());

    let acks = h.downlink.acks();
    assert_eq!(acks.parked_len(), 2);
    // Nothing frees a slot yet: tending hands nothing out.
    h.downlink.tend().await;
    assert_eq!(h.calls.delivered().len(), 1);

    for expected in ["2", "3"] {
        let id = *h.calls.delivery_ids().last().unwrap();
        acks.confirm(&client("alice"), &id.to_string()).unwrap();
        h.downlink.tend().await;
        let (_, frame) = h.calls.delivered().last().unwrap().clone();
        assert_eq!(frame, bare("alice", expected));
    }
    assert_eq!(acks.parked_len(), 0);
    assert!(h.calls.released().is_empty());
    assert_eq!(h.counters().deferred, 2);
}

#[tokio::test(start_paused = true)]
async fn parked_commands_are_kept_invisible_and_released_when_their_client_leaves() {
    let h = counting(
        4,
        vec![Ok(vec![
            message("a-1", bare("alice", "1")),
            message("a-2", bare("alice", "2")),
        ])],
    );
    h.connect_with("alice", 0, 1);
    h.poll().await;
    h.downlink.tend().await;
    assert!(
        h.calls.extended().is_empty(),
        "not before half the visibility"
    );
    advance(VISIBILITY / 2).await;
    h.downlink.tend().await;
    let extended: Vec<Receipt> = h
        .calls
        .extended()
        .into_iter()
        .flat_map(|(r, _)| r)
        .collect();
    assert!(extended.contains(&receipt("rcpt-a-2")), "{extended:?}");

    h.connect_with("alice", 0, 0);
    h.downlink.acks().release_client(&client("alice")).await;
    let released: Vec<Receipt> = h
        .calls
        .released()
        .into_iter()
        .flat_map(|(r, _)| r)
        .collect();
    assert!(released.contains(&receipt("rcpt-a-2")), "{released:?}");
    assert_eq!(h.downlink.acks().parked_len(), 0);
}

#[tokio::test]
async fn at_the_receive_limit_a_release_becomes_a_give_up_with_its_reason() {
    let h = counting(
        4,
        vec![Ok(vec![
            received("m-3", bare("bob", "x"), 3, Duration::ZERO),
            received("m-4", bare("bob", "y"), 4, Duration::ZERO),
        ])],
    );
    let outcome = h.poll().await;
    assert_eq!(outcome.released, receipts(&["rcpt-m-3"]));
    assert_eq!(outcome.dead_lettered, receipts(&["rcpt-m-4"]));
    let letters = h.calls.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, GiveUpReason::Undeliverable);
    assert!(
        letters[0].detail.contains("maxReceiveCount is 4"),
        "{}",
        letters[0].detail
    );
}

#[tokio::test]
async fn a_held_delivery_at_the_receive_limit_is_given_up_not_released_when_its_client_leaves() {
    let h = counting(
        4,
        vec![Ok(vec![received(
            "m-4",
            bare("alice", "x"),
            4,
            Duration::ZERO,
        )])],
    );
    h.connect_with("alice", 0, 1);
    h.poll().await;
    h.connect_with("alice", 0, 0);
    h.downlink.acks().release_client(&client("alice")).await;
    assert!(h.calls.released().is_empty(), "{:?}", h.calls.released());
    let letters = h.calls.letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].message.body, bare("alice", "x"));
    assert!(
        letters[0].detail.contains("did not acknowledge"),
        "{}",
        letters[0].detail
    );
}

// --- Handed back to the fleet by a replica that shut down ---

/// An SNS envelope around `inner` whose attributes say a replica that shut
/// down handed it back (raw delivery off: the attributes are in the body).
fn handed_back_envelope(sns_id: &str, inner: &str) -> String {
    json!({
        "Type": "Notification",
        "MessageId": sns_id,
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:commands",
        "Message": inner,
        "Timestamp": "2026-01-01T00:00:00.000Z",
        "MessageAttributes": {
            "client_id": {"Type": "String", "Value": "alice"},
            domain::RELEASED_ATTRIBUTE: {"Type": "String", "Value": "replica-a"},
        }
    })
    .to_string()
}

/// A bare Command with the marker as an SQS message attribute (raw delivery).
fn handed_back_raw(sqs_id: &str, inner: &str, ago: Duration) -> InboundMessage {
    let mut message = received(sqs_id, inner, 1, ago);
    message.attributes.push(domain::MessageAttribute {
        name: domain::RELEASED_ATTRIBUTE.to_owned(),
        data_type: "String".to_owned(),
        value: domain::AttributeValue::Text("replica-a".to_owned()),
    });
    message
}

#[tokio::test]
async fn with_drop_a_handed_back_command_waits_for_its_client_in_an_envelope_or_raw() {
    let inner = bare("alice", "go");
    let h = Harness::new(
        Undeliverable::Drop,
        vec![
            Ok(vec![
                message("sqs-1", handed_back_envelope("sns-1", &inner)),
                handed_back_raw("sqs-2", &bare("alice", "raw"), Duration::ZERO),
                // Unmarked: dropped, as `drop` says.
                message("sqs-3", envelope("sns-3", &inner)),
            ]),
            Ok(vec![message(
                "sqs-1",
                handed_back_envelope("sns-1", &inner),
            )]),
        ],
    );
    let outcome = h.poll().await;
    assert_eq!(outcome.released, receipts(&["rcpt-sqs-1", "rcpt-sqs-2"]));
    assert_eq!(outcome.acknowledged, receipts(&["rcpt-sqs-3"]));
    assert_eq!(
        h.calls.released(),
        vec![(receipts(&["rcpt-sqs-1", "rcpt-sqs-2"]), RETRY_DELAY)]
    );
    assert_eq!(h.counters().undeliverable, 1);

    // Alice connects here: she gets it.
    h.connect_with("alice", 0, 1);
    let outcome = h.poll().await;
    assert_eq!(outcome.held, receipts(&["rcpt-sqs-1"]));
    assert_eq!(h.calls.delivered().last(), Some(&pair("alice", &inner)));
    assert_eq!(h.counters().forwarded, 1);
}

#[tokio::test]
async fn with_drop_a_handed_back_command_past_its_window_is_dropped_not_dead_lettered() {
    // Every replica without the client has a copy: past the window (counted
    // from the send) each drops its own.
    let h = Harness::new(
        Undeliverable::Drop,
        vec![Ok(vec![
            handed_back_raw("sqs-1", &bare("alice", "old"), RETRY_WINDOW),
            handed_back_raw("sqs-2", &bare("alice", "new"), Duration::ZERO),
        ])],
    );
    let outcome = h.poll().await;
    assert_eq!(outcome.acknowledged, receipts(&["rcpt-sqs-1"]));
    assert_eq!(outcome.released, receipts(&["rcpt-sqs-2"]));
    assert!(h.calls.letters().is_empty(), "{:?}", h.calls.letters());
    assert_eq!(h.counters().undeliverable, 1);
}

#[tokio::test]
async fn take_all_hands_out_held_and_parked_commands_and_settle_taken_deletes_or_releases() {
    // One unacknowledged delivery per client, on a source that counts
    // receives (so alice's second Command is parked).
    let h = counting(
        4,
        vec![Ok(vec![
            message("a-1", bare("alice", "1")),
            message("a-2", bare("alice", "2")),
            message("b-1", bare("bob", "1")),
        ])],
    );
    h.connect_with("alice", 0, 1).connect_with("bob", 0, 1);
    h.poll().await;
    let acks = h.downlink.acks();
    assert_eq!((acks.len(), acks.parked_len()), (2, 1));

    let taken = acks.take_all();
    assert!(acks.is_empty());
    let mut seen: Vec<(String, String, String, bool)> = taken
        .iter()
        .map(|t| {
            (
                t.client_id.as_str().to_owned(),
                t.frame.to_string(),
                t.receipt.token().to_owned(),
                t.was_delivered(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("alice".into(), bare("alice", "1"), "rcpt-a-1".into(), true),
            ("alice".into(), bare("alice", "2"), "rcpt-a-2".into(), false),
            ("bob".into(), bare("bob", "1"), "rcpt-b-1".into(), true),
        ]
    );

    // Alice's were published again; bob's publish failed: released as before.
    let (handed_back, kept): (Vec<_>, Vec<_>) = taken
        .into_iter()
        .partition(|t| t.client_id.as_str() == "alice");
    assert_eq!(acks.settle_taken(handed_back, kept).await, 2);
    let mut deleted: Vec<Receipt> = h.calls.acknowledged().concat();
    deleted.sort_by(|a, b| a.token().cmp(b.token()));
    assert_eq!(deleted, receipts(&["rcpt-a-1", "rcpt-a-2"]));
    assert_eq!(
        h.calls.released(),
        vec![(receipts(&["rcpt-b-1"]), Duration::ZERO)]
    );
    assert_eq!(acks.parked_len(), 0);
}
