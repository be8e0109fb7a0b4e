//! `AmqpEventSink` against RabbitMQ.

use std::time::{Duration, Instant};

use adapters_amqp::{AmqpEventSink, AmqpSinkSettings};
use domain::{EventSink, PublishError};
use lapin::options::ExchangeDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;

use crate::support::{closed_url, event, fast_reconnect, url, Scratch, WAIT};

fn sink_settings(exchange: &str) -> AmqpSinkSettings {
    AmqpSinkSettings {
        exchange: exchange.to_owned(),
        reconnect: fast_reconnect(),
        connection_name: format!("{exchange}.sink"),
        ..AmqpSinkSettings::default()
    }
}

fn header(headers: &FieldTable, name: &str) -> String {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(value)) => value.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test]
async fn publish_returns_once_confirmed_and_a_bound_queue_gets_body_headers_and_key() {
    let scratch = Scratch::new("sink-publish").await;
    let topology = scratch.bootstrap().await;
    let everything = scratch.name("all");
    let chat_only = scratch.name("chat");
    scratch
        .bound_queue(&everything, &topology.events_exchange, "#")
        .await;
    scratch
        .bound_queue(&chat_only, &topology.events_exchange, "chat.*")
        .await;
    let sink = AmqpEventSink::spawn(url(), sink_settings(&topology.events_exchange));
    assert_eq!(sink.exchange(), topology.events_exchange);

    // Any body passes byte for byte, non-ASCII included.
    let body = r#"{"action":"chat.send","client_id":"alice","data":{"text":"héllo"}}"#;
    sink.publish(event("alice", "chat.send", body))
        .await
        .unwrap();
    sink.publish(event("bob", "presence", r#"{"action":"presence"}"#))
        .await
        .unwrap();

    // Confirmed means routed and stored: both are there without waiting.
    let got = scratch.get(&everything).await.expect("first event");
    let delivery = got.delivery;
    assert_eq!(delivery.data, body.as_bytes());
    assert_eq!(delivery.exchange.as_str(), topology.events_exchange);
    assert_eq!(delivery.routing_key.as_str(), "chat.send");
    let properties = &delivery.properties;
    let headers = properties.headers().clone().unwrap();
    assert_eq!(header(&headers, "client_id"), "alice");
    assert_eq!(header(&headers, "action"), "chat.send");
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    assert!(properties
        .message_id()
        .as_ref()
        .is_some_and(|id| !id.as_str().is_empty()));
    assert!(properties.timestamp().is_some());
    let second = scratch.get(&everything).await.expect("second event");
    assert_eq!(second.delivery.routing_key.as_str(), "presence");
    let headers = second.delivery.properties.headers().clone().unwrap();
    assert_eq!(header(&headers, "client_id"), "bob");

    // A topic binding filters on the action.
    let chat = scratch.get(&chat_only).await.expect("chat event");
    assert_eq!(chat.delivery.routing_key.as_str(), "chat.send");
    assert!(scratch.get(&chat_only).await.is_none());
    sink.close().await;
}

#[tokio::test]
async fn an_exchange_without_a_queue_still_confirms() {
    let scratch = Scratch::new("sink-unbound").await;
    let topology = scratch.bootstrap().await;
    let sink = AmqpEventSink::spawn(url(), sink_settings(&topology.events_exchange));
    assert_eq!(
        sink.publish(event("alice", "nobody.listens", "{}")).await,
        Ok(())
    );
    sink.close().await;
}

#[tokio::test]
async fn a_missing_exchange_is_unavailable_until_it_exists() {
    let scratch = Scratch::new("sink-missing").await;
    let exchange = scratch.name("events");
    let sink = AmqpEventSink::spawn(url(), sink_settings(&exchange));
    assert!(sink.wait_connected(WAIT).await);

    let failed = sink.publish(event("alice", "a", "{}")).await;
    assert!(
        matches!(&failed, Err(PublishError::Unavailable(text)) if text.contains("NOT_FOUND")),
        "{failed:?}"
    );

    scratch.own_exchange(&exchange);
    scratch
        .channel()
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = scratch.name("all");
    scratch.bound_queue(&queue, &exchange, "#").await;
    // The broker closed the channel; the sink opens another.
    let deadline = Instant::now() + WAIT;
    let mut result = sink.publish(event("alice", "a", "{}")).await;
    while result.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        result = sink.publish(event("alice", "a", "{}")).await;
    }
    assert_eq!(result, Ok(()));
    assert!(scratch.get(&queue).await.is_some());
    sink.close().await;
}

#[tokio::test]
async fn events_that_cannot_be_published_as_they_are_are_rejected() {
    let scratch = Scratch::new("sink-reject").await;
    let topology = scratch.bootstrap().await;
    let settings = AmqpSinkSettings {
        max_message_bytes: 1024,
        ..sink_settings(&topology.events_exchange)
    };
    let sink = AmqpEventSink::spawn(url(), settings);
    assert!(matches!(
        sink.publish(event("alice", "big", "x".repeat(1025))).await,
        Err(PublishError::Rejected(_))
    ));
    // A routing key holds at most 255 bytes.
    assert!(matches!(
        sink.publish(event("alice", &"a".repeat(256), "{}")).await,
        Err(PublishError::Rejected(_))
    ));
    assert_eq!(
        sink.publish(event("alice", &"a".repeat(255), "x".repeat(1024)))
            .await,
        Ok(())
    );
    sink.close().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable() {
    let sink = AmqpEventSink::spawn(closed_url(), sink_settings("anything"));
    let started = Instant::now();
    let failed = sink.publish(event("alice", "a", "{}")).await;
    assert!(
        matches!(failed, Err(PublishError::Unavailable(_))),
        "{failed:?}"
    );
    assert!(started.elapsed() < WAIT);
    assert!(!sink.is_connected());
    sink.close().await;
    assert!(matches!(
        sink.publish(event("alice", "a", "{}")).await,
        Err(PublishError::Unavailable(text)) if text.contains("closed")
    ));
}
