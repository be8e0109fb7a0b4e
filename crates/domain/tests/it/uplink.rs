//! Uplink: validate a client's frame → stamp `client_id` → publish → reply
//! (docs/protocol.md, docs/delivery.md), with the event sink mocked.

use std::sync::{Arc, Mutex};

use domain::client_message::{INVALID_MESSAGE, PUBLISH_FAILED, PUBLISH_REJECTED};
use domain::ports::MockEventSink;
use domain::stats::UplinkSnapshot;
use domain::{ClientId, OutboundEvent, PublishError, Reply, Stats, Uplink};
use serde_json::{json, Value};

/// An uplink whose sink records every event and answers with `answer`.
struct Harness {
    uplink: Uplink,
    stats: Arc<Stats>,
    published: Arc<Mutex<Vec<OutboundEvent>>>,
}

impl Harness {
    fn new(answer: Result<(), PublishError>) -> Self {
        let published = Arc::new(Mutex::new(Vec::new()));
        let mut sink = MockEventSink::new();
        let log = published.clone();
        sink.expect_publish().returning(move |event| {
            log.lock().unwrap().push(event);
            answer.clone()
        });
        let stats = Arc::new(Stats::default());
        Self {
            uplink: Uplink::new(Arc::new(sink), stats.clone()),
            stats,
            published,
        }
    }

    async fn send(&self, sender: &str, text: &str) -> Option<Reply> {
        self.uplink.handle_text(&client(sender), text).await
    }

    fn published(&self) -> Vec<OutboundEvent> {
        self.published.lock().unwrap().clone()
    }

    fn counters(&self) -> UplinkSnapshot {
        self.stats.uplink.snapshot()
    }
}

fn client(id: &str) -> ClientId {
    ClientId::parse(id).unwrap()
}

fn body_of(event: &OutboundEvent) -> Value {
    serde_json::from_str(&event.body).unwrap()
}

#[tokio::test]
async fn valid_frame_with_id_is_published_with_the_server_client_id_and_acked() {
    let h = Harness::new(Ok(()));
    let frame = r#"{"action":"move","id":"m-1","client_id":"mallory","data":{"x":1,"y":[2,3]},"extra":true}"#;

    let reply = h.send("alice", frame).await;

    assert_eq!(reply, Some(Reply::Ack("m-1".into())));
    let published = h.published();
    assert_eq!(published.len(), 1);
    let event = &published[0];
    assert_eq!(event.client_id, client("alice"), "attribute client_id");
    assert_eq!(event.action, "move", "attribute action");
    assert_eq!(
        body_of(event),
        json!({
            "action": "move",
            "id": "m-1",
            "client_id": "alice",
            "data": {"x": 1, "y": [2, 3]},
            "extra": true
        }),
        "the forged client_id is overwritten, everything else is kept"
    );
    assert_eq!(
        h.counters(),
        UplinkSnapshot {
            published: 1,
            ..UplinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn valid_frame_without_id_is_published_and_gets_no_reply() {
    let h = Harness::new(Ok(()));

    let plain = h.send("c-1", r#"{"action":"ping"}"#).await;
    let null_id = h
        .send("c-1", r#"{"action":"pong","id":null,"data":"d"}"#)
        .await;

    assert_eq!(plain, None);
    assert_eq!(null_id, None);
    let published = h.published();
    let bodies: Vec<Value> = published.iter().map(body_of).collect();
    assert_eq!(
        bodies,
        vec![
            json!({"action": "ping", "client_id": "c-1"}),
            json!({"action": "pong", "id": null, "data": "d", "client_id": "c-1"}),
        ]
    );
    let attributes: Vec<(&str, &str)> = published
        .iter()
        .map(|e| (e.client_id.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(attributes, vec![("c-1", "ping"), ("c-1", "pong")]);
    assert_eq!(h.counters().published, 2);
}

#[tokio::test]
async fn invalid_frames_get_invalid_message_and_never_reach_the_sink() {
    let frames = [
        "",
        "not json",
        r#"{"action":"go""#,
        "[1,2]",
        r#""action""#,
        "42",
        "null",
        "{}",
        r#"{"action":""}"#,
        r#"{"action":5}"#,
        r#"{"action":null,"id":"x"}"#,
        r#"{"data":{"action":"nested"}}"#,
        r#"{"action":"go","id":7}"#,
    ];
    let mut sink = MockEventSink::new();
    sink.expect_publish().times(0);
    let stats = Arc::new(Stats::default());
    let uplink = Uplink::new(Arc::new(sink), stats.clone());

    for frame in frames {
        let reply = uplink.handle_text(&client("alice"), frame).await;
        match reply {
            Some(Reply::Error { code, message, id }) => {
                assert_eq!(code, INVALID_MESSAGE, "frame {frame:?}");
                assert!(!message.is_empty(), "frame {frame:?}");
                assert_eq!(id, None, "frame {frame:?}");
            }
            other => panic!("frame {frame:?}: expected an invalid_message error, got {other:?}"),
        }
    }

    assert_eq!(
        stats.uplink.snapshot(),
        UplinkSnapshot {
            invalid: frames.len() as u64,
            ..UplinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn unavailable_sink_is_reported_as_publish_failed_with_the_id() {
    let h = Harness::new(Err(PublishError::Unavailable("SNS timed out".into())));

    let reply = h.send("alice", r#"{"action":"buy","id":"42"}"#).await;

    let Some(Reply::Error { code, message, id }) = reply else {
        panic!("expected an error reply, got {reply:?}");
    };
    assert_eq!(code, PUBLISH_FAILED);
    assert_eq!(id.as_deref(), Some("42"));
    // Operators' detail stays in the logs; the client gets a stable text.
    assert!(!message.contains("SNS timed out"), "{message}");
    assert!(message.contains("not published"), "{message}");
    // The attempt carried the stamped event.
    let published = h.published();
    assert_eq!(published.len(), 1);
    assert_eq!(
        body_of(&published[0]),
        json!({"action": "buy", "id": "42", "client_id": "alice"})
    );
    assert_eq!(
        h.counters(),
        UplinkSnapshot {
            failed: 1,
            ..UplinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn rejected_event_is_reported_as_publish_rejected() {
    let h = Harness::new(Err(PublishError::Rejected("message too large".into())));

    let with_id = h.send("alice", r#"{"action":"upload","id":"u-1"}"#).await;
    let without_id = h.send("alice", r#"{"action":"upload"}"#).await;

    let Some(Reply::Error { code, message, id }) = with_id else {
        panic!("expected an error reply, got {with_id:?}");
    };
    assert_eq!(code, PUBLISH_REJECTED);
    assert_eq!(id.as_deref(), Some("u-1"));
    assert!(!message.contains("message too large"), "{message}");
    assert!(message.contains("refused"), "{message}");
    // Without an id the client is still told: a failure is never silent.
    assert!(
        matches!(
            without_id,
            Some(Reply::Error {
                code: PUBLISH_REJECTED,
                id: None,
                ..
            })
        ),
        "{without_id:?}"
    );
    assert_eq!(
        h.counters(),
        UplinkSnapshot {
            failed: 2,
            ..UplinkSnapshot::default()
        }
    );
}

#[tokio::test]
async fn counters_move_by_exactly_one_per_frame() {
    // The sink accepts the first event, is unavailable for the second, and
    // rejects the third.
    let answers = Mutex::new(vec![
        Err(PublishError::Rejected("bad".into())),
        Err(PublishError::Unavailable("down".into())),
        Ok(()),
    ]);
    let mut sink = MockEventSink::new();
    sink.expect_publish()
        .times(3)
        .returning(move |_| answers.lock().unwrap().pop().unwrap());
    let stats = Arc::new(Stats::default());
    let uplink = Uplink::new(Arc::new(sink), stats.clone());
    let alice = client("alice");

    let mut seen = Vec::new();
    for frame in [
        r#"{"action":"a","id":"1"}"#,
        "nope",
        r#"{"action":"b","id":"2"}"#,
        r#"{"action":"c"}"#,
        "{}",
    ] {
        uplink.handle_text(&alice, frame).await;
        seen.push(stats.uplink.snapshot());
    }

    let snap = |published, failed, invalid| UplinkSnapshot {
        published,
        failed,
        invalid,
        rate_limited: 0,
    };
    assert_eq!(
        seen,
        vec![
            snap(1, 0, 0),
            snap(1, 0, 1),
            snap(1, 1, 1),
            snap(1, 2, 1),
            snap(1, 2, 2),
        ]
    );
}
