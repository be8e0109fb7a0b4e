//! Losing the broker and getting it back: connections cut on the network
//! (through [`Proxy`]) and closed by the broker (`rabbitmqctl`).

use std::time::{Duration, Instant};

use adapters_amqp::{AmqpCommandSource, AmqpEventSink, AmqpSinkSettings};
use domain::{CommandSource, EventSink, PublishError, SourceError};

use crate::support::{
    close_from_broker, command_properties, event, eventually, fast_reconnect, letters, receipts,
    receive_n, source_settings, unacknowledged, url, Proxy, Scratch, WAIT,
};

const T0: u64 = 1_700_000_000;

fn body(n: usize) -> String {
    format!(r#"{{"client_id":"c1","command":"n{n}"}}"#)
}

/// Receives until `receive` fails, within [`WAIT`].
async fn until_unavailable(source: &AmqpCommandSource) -> Option<SourceError> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Err(error) = source.receive().await {
            return Some(error);
        }
    }
    None
}

/// What a sink answered to each attempt, under the attempt's routing key.
type Attempts = Vec<(String, Result<(), PublishError>)>;

/// Publishes, each attempt under a fresh routing key recorded in
/// `attempts`, until the sink's answer is ok (or not), within [`WAIT`];
/// returns the last answer.
async fn publish_until(
    sink: &AmqpEventSink,
    attempts: &mut Attempts,
    ok: bool,
) -> Result<(), PublishError> {
    let deadline = Instant::now() + WAIT;
    loop {
        let key = format!("e{}", attempts.len());
        let result = sink.publish(event("alice", &key, "{}")).await;
        attempts.push((key, result.clone()));
        if result.is_ok() == ok || Instant::now() >= deadline {
            return result;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_source_comes_back_after_a_network_cut_and_loses_nothing() {
    let scratch = Scratch::new("rc-source-cut").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    for n in 1..=2 {
        scratch
            .publish(queue, &body(n), command_properties(&format!("m-{n}"), T0))
            .await;
    }
    let proxy = Proxy::start();
    let source = AmqpCommandSource::spawn(proxy.url(), source_settings(queue));
    let got = receive_n(&source, 2).await;
    assert_eq!(got.len(), 2);
    // m-1 handed off and acknowledged; m-2 still in hand when the link breaks.
    source.acknowledge(receipts(&got[..1])).await.unwrap();
    // The broker has the ack before the cut (or m-1 would rightly come back).
    assert!(eventually(|| async { unacknowledged(queue) == Some(1) }).await);

    proxy.cut();
    let error = until_unavailable(&source).await;
    assert!(
        matches!(error, Some(SourceError::Unavailable(_))),
        "{error:?}"
    );
    assert!(!source.is_connected());
    // The broker took m-2 back; its old receipt names nothing any more.
    assert!(scratch.depth_reaches(queue, 1).await);
    assert!(matches!(
        source.acknowledge(receipts(&got[1..])).await,
        Err(SourceError::Partial { failed, .. }) if failed == receipts(&got[1..])
    ));
    // Still down while the broker refuses us, and Commands keep arriving.
    assert!(matches!(
        source.receive().await,
        Err(SourceError::Unavailable(_))
    ));
    scratch
        .publish(queue, &body(3), command_properties("m-3", T0))
        .await;

    proxy.restore();
    assert!(source.wait_connected(WAIT).await);
    let again = receive_n(&source, 2).await;
    let ids: Vec<&str> = again.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, ["m-2", "m-3"]);
    assert_eq!(again[0].receive_count, 2, "redelivered");
    assert_eq!(again[1].receive_count, 1);
    // Delivery tags restart on the new channel: the old receipt of m-2
    // carries the tag m-3 has now, and must not settle it.
    let tag = |r: &domain::Receipt| r.token().rsplit(':').next().unwrap().to_owned();
    assert_eq!(tag(&got[1].receipt), tag(&again[1].receipt));
    assert!(matches!(
        source.dead_letter(letters(&got[1..])).await,
        Err(SourceError::Partial { failed, .. }) if failed == receipts(&got[1..])
    ));
    source.acknowledge(receipts(&again)).await.unwrap();
    // Nothing else: m-1, acknowledged before the cut, never comes back.
    assert_eq!(source.receive().await, Ok(Vec::new()));
    source.close().await;
    assert_eq!(scratch.depth(queue).await, Some(0));
}

#[tokio::test]
async fn the_sink_comes_back_after_a_network_cut() {
    let scratch = Scratch::new("rc-sink-cut").await;
    let topology = scratch.bootstrap().await;
    let all = scratch.name("all");
    scratch
        .bound_queue(&all, &topology.events_exchange, "#")
        .await;
    let proxy = Proxy::start();
    let sink = AmqpEventSink::spawn(
        proxy.url(),
        AmqpSinkSettings {
            exchange: topology.events_exchange.clone(),
            reconnect: fast_reconnect(),
            ..AmqpSinkSettings::default()
        },
    );
    let mut attempts = Attempts::new();
    assert_eq!(publish_until(&sink, &mut attempts, true).await, Ok(()));

    proxy.cut();
    let down = publish_until(&sink, &mut attempts, false).await;
    assert!(
        matches!(down, Err(PublishError::Unavailable(_))),
        "{down:?}"
    );
    assert!(!sink.is_connected());

    proxy.restore();
    assert_eq!(publish_until(&sink, &mut attempts, true).await, Ok(()));

    let mut arrived = Vec::new();
    while let Some(message) = scratch.get(&all).await {
        arrived.push(message.delivery.routing_key.as_str().to_owned());
    }
    // Every confirmed event is there; nothing arrived that was not sent.
    // (A failed attempt may have arrived too: its confirm was lost in the cut.)
    for (key, result) in &attempts {
        if result.is_ok() {
            assert!(
                arrived.contains(key),
                "{key} confirmed but lost: {arrived:?}"
            );
        }
    }
    for key in &arrived {
        assert!(attempts.iter().any(|(k, _)| k == key), "{key} never sent");
    }
    sink.close().await;
}

#[tokio::test]
async fn source_and_sink_come_back_when_the_broker_closes_their_connections() {
    let scratch = Scratch::new("rc-broker-close").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    let source_name = scratch.name("source");
    let sink_name = scratch.name("sink");
    let source = AmqpCommandSource::spawn(
        url(),
        adapters_amqp::AmqpSourceSettings {
            connection_name: source_name.clone(),
            ..source_settings(queue)
        },
    );
    let sink = AmqpEventSink::spawn(
        url(),
        AmqpSinkSettings {
            exchange: topology.events_exchange.clone(),
            reconnect: fast_reconnect(),
            connection_name: sink_name.clone(),
            ..AmqpSinkSettings::default()
        },
    );
    assert!(source.wait_connected(WAIT).await);
    assert!(sink.wait_connected(WAIT).await);
    scratch
        .publish(queue, &body(1), command_properties("m-1", T0))
        .await;
    let held = receive_n(&source, 1).await;
    assert_eq!(held.len(), 1);

    assert_eq!(close_from_broker(&source_name), 1);
    assert_eq!(close_from_broker(&sink_name), 1);

    // Back on new connections; the unacknowledged Command is delivered again.
    let again = receive_n(&source, 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, "m-1");
    assert_eq!(again[0].receive_count, 2);
    assert_ne!(again[0].receipt, held[0].receipt);
    source.acknowledge(receipts(&again)).await.unwrap();
    assert_eq!(
        publish_until(&sink, &mut Attempts::new(), true).await,
        Ok(())
    );

    source.close().await;
    sink.close().await;
    assert_eq!(scratch.depth(queue).await, Some(0));
}
