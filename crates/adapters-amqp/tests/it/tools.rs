//! `tools::send_command` and `tools::Monitor` against RabbitMQ.

use std::time::{Duration, SystemTime};

use adapters_amqp::tools::{self, Target};
use adapters_amqp::{AmqpCommandSource, AmqpEventSink, AmqpSinkSettings};
use domain::{decode_sqs_body, CommandSource, EventSink};

use crate::support::{event, receipts, receive_n, source_settings, url, Scratch};

#[tokio::test]
async fn send_command_reaches_the_source_through_the_queue_or_the_exchange() {
    let scratch = Scratch::new("tools-send").await;
    let topology = scratch.bootstrap().await;
    let bare = r#"{"client_id":"c1","command":"direct"}"#;
    let via_queue =
        tools::send_command(&url(), &Target::Queue(topology.command_queue.clone()), bare)
            .await
            .unwrap();
    let envelope = serde_json::json!({
        "Type": "Notification",
        "MessageId": "sns-1",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:commands",
        "Message": r#"{"client_id":"c2","command":"enveloped"}"#,
    })
    .to_string();
    let via_exchange = tools::send_command(
        &url(),
        &Target::Exchange {
            name: topology.commands_exchange.clone().unwrap(),
            routing_key: "c2".to_owned(),
        },
        &envelope,
    )
    .await
    .unwrap();
    assert_ne!(via_queue, via_exchange);

    let source = AmqpCommandSource::spawn(url(), source_settings(&topology.command_queue));
    let got = receive_n(&source, 2).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].message_id, via_queue);
    assert_eq!(got[0].body, bare);
    assert_eq!(got[1].message_id, via_exchange);
    // The domain reads both forms.
    assert_eq!(
        decode_sqs_body(&got[0].body).unwrap().client_id.as_str(),
        "c1"
    );
    let decoded = decode_sqs_body(&got[1].body).unwrap();
    assert_eq!(decoded.client_id.as_str(), "c2");
    assert_eq!(decoded.sns_message_id.as_deref(), Some("sns-1"));
    for message in &got {
        let sent_at = message.sent_at.expect("timestamp set by the tool");
        assert!(SystemTime::now().duration_since(sent_at).unwrap() < Duration::from_secs(60));
    }
    source.acknowledge(receipts(&got)).await.unwrap();
    source.close().await;
}

#[tokio::test]
async fn send_command_to_nowhere_fails() {
    let scratch = Scratch::new("tools-nowhere").await;
    let error = tools::send_command(&url(), &Target::Queue(scratch.name("absent")), "{}")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("unroutable"), "{error}");
    let error = tools::send_command(
        &url(),
        &Target::Exchange {
            name: scratch.name("absent"),
            routing_key: String::new(),
        },
        "{}",
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("NOT_FOUND"), "{error}");
}

#[tokio::test]
async fn monitor_sees_what_the_sink_publishes_and_cleans_up() {
    let scratch = Scratch::new("tools-monitor").await;
    let topology = scratch.bootstrap().await;
    let mut monitor = tools::Monitor::start(&url(), &topology.events_exchange, "#")
        .await
        .unwrap();
    let temporary = monitor.queue().to_owned();
    // Exclusive: other connections cannot use it.
    let locked = scratch.passive_declare(&temporary).await;
    assert!(
        locked
            .as_ref()
            .is_err_and(|e| e.contains("RESOURCE_LOCKED")),
        "{locked:?}"
    );
    assert!(monitor
        .next_events(Duration::from_millis(100))
        .await
        .unwrap()
        .is_empty());

    let sink = AmqpEventSink::spawn(
        url(),
        AmqpSinkSettings {
            exchange: topology.events_exchange.clone(),
            ..AmqpSinkSettings::default()
        },
    );
    sink.publish(event(
        "alice",
        "chat.send",
        r#"{"action":"chat.send","n":1}"#,
    ))
    .await
    .unwrap();
    sink.publish(event("bob", "presence", r#"{"action":"presence","n":2}"#))
        .await
        .unwrap();

    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.extend(
            monitor
                .next_events(Duration::from_millis(500))
                .await
                .unwrap(),
        );
        if seen.len() >= 2 {
            break;
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].message, r#"{"action":"chat.send","n":1}"#);
    assert_eq!(seen[0].routing_key, "chat.send");
    assert_eq!(seen[0].attributes["client_id"], "alice");
    assert_eq!(seen[0].attributes["action"], "chat.send");
    assert!(!seen[0].message_id.is_empty());
    assert_eq!(seen[1].attributes["client_id"], "bob");
    assert_eq!(seen[1].routing_key, "presence");

    monitor.stop().await.unwrap();
    // Gone with the monitor's connection.
    assert!(
        crate::support::eventually(|| async {
            scratch
                .passive_declare(&temporary)
                .await
                .is_err_and(|e| e.contains("NOT_FOUND"))
        })
        .await
    );
    sink.close().await;
}

#[tokio::test]
async fn a_monitor_on_a_missing_exchange_fails() {
    let scratch = Scratch::new("tools-monitor-missing").await;
    let error = tools::Monitor::start(&url(), &scratch.name("absent"), "#")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("NOT_FOUND"), "{error}");
}
