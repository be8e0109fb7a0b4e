//! `AmqpMetrics` as the adapters fill it against RabbitMQ: what a receive,
//! an ack and a publish record, and readiness across a broken connection.

use adapters_amqp::{AmqpCommandSource, AmqpEventSink, AmqpMetrics, AmqpSinkSettings};
use domain::{CommandSource, EventSink};
use prometheus_client::registry::Registry;

use crate::support::{
    command_properties, event, eventually, fast_reconnect, receipts, receive_n, source_settings,
    url, Proxy, Scratch, WAIT,
};

const T0: u64 = 1_700_000_000;

/// The metrics in the OpenMetrics text format, as a scrape would see them.
fn render(metrics: &AmqpMetrics) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(metrics.clone()));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

/// The value of the sample `name` (with its labels), if rendered.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn calls(text: &str, operation: &str) -> f64 {
    let name = format!(
        "wsbridge_backend_call_duration_seconds_count{{service=\"amqp\",operation=\"{operation}\"}}"
    );
    sample(text, &name).unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

#[tokio::test]
async fn a_receive_an_ack_and_a_publish_show_up_in_the_metrics() {
    let scratch = Scratch::new("metrics-ack").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    for n in 1..=2 {
        scratch
            .publish(queue, "{}", command_properties(&format!("m-{n}"), T0))
            .await;
    }
    let metrics = AmqpMetrics::new();
    let source =
        AmqpCommandSource::spawn_with_metrics(url(), source_settings(queue), metrics.clone());
    let sink = AmqpEventSink::spawn_with_metrics(
        url(),
        AmqpSinkSettings {
            exchange: topology.events_exchange.clone(),
            reconnect: fast_reconnect(),
            ..AmqpSinkSettings::default()
        },
        metrics.clone(),
    );
    assert_eq!(
        metrics.not_ready_reason().as_deref(),
        Some("starting: no receive yet")
    );

    let got = receive_n(&source, 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(metrics.not_ready_reason(), None);
    source.acknowledge(receipts(&got)).await.unwrap();
    sink.publish(event("alice", "a", "{}")).await.unwrap();
    assert!(sink.wait_connected(WAIT).await);

    let text = render(&metrics);
    assert_eq!(
        sample(&text, "wsbridge_amqp_acked_messages_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "wsbridge_amqp_settle_errors_total"),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "wsbridge_amqp_connected"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(calls(&text, "basic.ack"), 2.0);
    assert_eq!(calls(&text, "basic.publish"), 1.0);
    assert!(calls(&text, "consume.wait") >= 1.0);
    assert!(calls(&text, "connection.open") >= 2.0, "{text}");
    assert!(calls(&text, "channel.open") >= 2.0, "{text}");

    // Settling again fails: counted, not acked twice.
    assert!(source.acknowledge(receipts(&got)).await.is_err());
    let text = render(&metrics);
    assert_eq!(
        sample(&text, "wsbridge_amqp_settle_errors_total"),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "wsbridge_amqp_acked_messages_total"),
        Some(2.0)
    );

    sink.close().await;
    source.close().await;
    assert_eq!(
        sample(&render(&metrics), "wsbridge_amqp_connected"),
        Some(0.0)
    );
}

#[tokio::test]
async fn readiness_says_why_while_the_connection_is_broken_and_recovers_after_reconnect() {
    let scratch = Scratch::new("metrics-ready").await;
    let topology = scratch.bootstrap().await;
    let queue = &topology.command_queue;
    let proxy = Proxy::start();
    let metrics = AmqpMetrics::new();
    let source =
        AmqpCommandSource::spawn_with_metrics(proxy.url(), source_settings(queue), metrics.clone());
    assert!(source.wait_connected(WAIT).await);
    assert_eq!(source.receive().await, Ok(Vec::new()));
    assert_eq!(metrics.not_ready_reason(), None);

    proxy.cut();
    assert!(eventually(|| async { metrics.not_ready_reason().is_some() }).await);
    let why = metrics.not_ready_reason().unwrap();
    assert!(why.starts_with("RabbitMQ: "), "{why}");
    assert!(source.receive().await.is_err());
    let text = render(&metrics);
    assert!(
        sample(&text, "wsbridge_amqp_receive_errors_total").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "wsbridge_amqp_connected"), Some(0.0));

    proxy.restore();
    assert!(source.wait_connected(WAIT).await);
    // Connected again, and the next receive that succeeds makes it ready.
    assert!(
        eventually(|| async {
            let _ = source.receive().await;
            metrics.not_ready_reason().is_none()
        })
        .await,
        "{:?}",
        metrics.not_ready_reason()
    );
    let text = render(&metrics);
    assert!(
        sample(&text, "wsbridge_amqp_reconnects_total").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(sample(&text, "wsbridge_amqp_connected"), Some(1.0));
    source.close().await;
}
