//! `AmqpReceiptSink` against RabbitMQ: receipts on the receipts exchange
//! with routing key = outcome and headers `outcome`/`client_id`, `flush`
//! as the point where everything recorded is confirmed, retries across a
//! lost connection, and what is counted into the domain's `Stats`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use adapters_amqp::{AmqpReceiptSettings, AmqpReceiptSink};
use domain::{ClientId, DeliveryReceipt, Outcome, ReceiptSink, Stats};
use lapin::types::{AMQPValue, FieldTable};

use crate::support::{closed_url, eventually, fast_reconnect, url, Proxy, Scratch, WAIT};

fn settings(exchange: &str) -> AmqpReceiptSettings {
    AmqpReceiptSettings {
        exchange: exchange.to_owned(),
        reconnect: fast_reconnect(),
        retry_pause: Duration::from_millis(20),
        connection_name: format!("{exchange}.receipts"),
        ..AmqpReceiptSettings::default()
    }
}

fn receipt(outcome: Outcome, client_id: Option<&str>, command_id: Option<&str>) -> DeliveryReceipt {
    DeliveryReceipt {
        outcome,
        client_id: client_id.map(|id| ClientId::parse(id).unwrap()),
        message_id: format!("m-{}", outcome.as_str()),
        sns_message_id: None,
        command_id: command_id.map(str::to_owned),
        connections: (outcome == Outcome::Delivered).then_some(2),
        at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    }
}

fn header(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(value)) => Some(value.to_string()),
        None => None,
        other => panic!("header {name}: {other:?}"),
    }
}

/// (published, failed, dropped) receipts.
fn counted(stats: &Stats) -> (u64, u64, u64) {
    let c = stats.control.snapshot();
    (c.receipts_published, c.receipts_failed, c.receipts_dropped)
}

#[tokio::test]
async fn receipts_go_to_the_exchange_by_outcome_with_headers_and_flush_waits_for_their_confirms() {
    let scratch = Scratch::new("receipts-publish").await;
    let exchange = scratch.name("receipts");
    scratch.own_exchange(&exchange);
    // The bootstrap declares it (as `wsbridge dev` does).
    let topology = scratch.topology().with_receipts_exchange(&exchange);
    adapters_amqp::bootstrap::ensure(&url(), &topology)
        .await
        .unwrap();
    let everything = scratch.name("all");
    let malformed_only = scratch.name("malformed");
    scratch.bound_queue(&everything, &exchange, "#").await;
    scratch
        .bound_queue(&malformed_only, &exchange, "malformed")
        .await;
    let stats = Arc::new(Stats::default());
    let sink = AmqpReceiptSink::spawn(url(), settings(&exchange), stats.clone());
    assert_eq!(sink.exchange(), exchange);

    let sent = [
        receipt(Outcome::Delivered, Some("alice"), Some("cmd-1")),
        receipt(Outcome::Acknowledged, Some("alice"), Some("cmd-1")),
        receipt(Outcome::Malformed, None, None),
    ];
    for r in &sent {
        sink.record(r.clone());
    }
    sink.flush().await;
    assert_eq!(counted(&stats), (3, 0, 0));

    // Flushed means confirmed, so routed and stored: no waiting from here.
    let mut got = Vec::new();
    while let Some(message) = scratch.get(&everything).await {
        got.push(message.delivery);
    }
    assert_eq!(got.len(), 3, "{got:?}");
    // Batches are published concurrently: compare by outcome.
    got.sort_by_key(|d| d.routing_key.as_str().to_owned());
    let mut expected = sent.to_vec();
    expected.sort_by_key(|r| r.outcome.as_str());
    for (delivery, receipt) in got.iter().zip(&expected) {
        let outcome = receipt.outcome.as_str();
        assert_eq!(delivery.exchange.as_str(), exchange);
        assert_eq!(delivery.routing_key.as_str(), outcome);
        assert_eq!(
            String::from_utf8_lossy(&delivery.data),
            receipt.body(),
            "{outcome}"
        );
        let properties = &delivery.properties;
        let headers = properties.headers().clone().unwrap();
        assert_eq!(header(&headers, "outcome").as_deref(), Some(outcome));
        assert_eq!(
            header(&headers, "client_id"),
            receipt.client_id.as_ref().map(|c| c.as_str().to_owned()),
            "{outcome}: client_id only when the Command named one"
        );
        assert_eq!(*properties.delivery_mode(), Some(2));
        assert_eq!(
            properties.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
    }

    // A binding on the routing key selects outcomes.
    let malformed = scratch
        .get(&malformed_only)
        .await
        .expect("the malformed receipt");
    assert_eq!(malformed.delivery.routing_key.as_str(), "malformed");
    assert!(scratch.get(&malformed_only).await.is_none());

    sink.close().await;
    assert!(!sink.is_connected());
}

#[tokio::test]
async fn receipts_are_retried_across_a_lost_connection() {
    let scratch = Scratch::new("receipts-retry").await;
    let exchange = scratch.name("receipts");
    scratch.own_exchange(&exchange);
    let topology = scratch.topology().with_receipts_exchange(&exchange);
    adapters_amqp::bootstrap::ensure(&url(), &topology)
        .await
        .unwrap();
    let queue = scratch.name("all");
    scratch.bound_queue(&queue, &exchange, "#").await;
    let proxy = Proxy::start();
    let stats = Arc::new(Stats::default());
    let sink = AmqpReceiptSink::spawn(
        proxy.url(),
        AmqpReceiptSettings {
            // Enough attempts to outlast the reconnection.
            attempts: 20,
            ..settings(&exchange)
        },
        stats.clone(),
    );
    assert!(sink.wait_connected(WAIT).await);

    proxy.cut();
    assert!(eventually(|| async { !sink.is_connected() }).await);
    // Recorded while there is no connection: its first attempt fails at
    // once ("not connected"), well within the pause before the link comes
    // back; only a retry can publish it.
    sink.record(receipt(Outcome::Delivered, Some("bob"), None));
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.restore();
    sink.flush().await;
    assert_eq!(counted(&stats), (1, 0, 0));
    let got = scratch.get(&queue).await.expect("the retried receipt");
    assert_eq!(got.delivery.routing_key.as_str(), "delivered");
    sink.close().await;
}

#[tokio::test]
async fn receipts_that_cannot_be_published_are_given_up_and_counted_failed() {
    let stats = Arc::new(Stats::default());
    let sink = AmqpReceiptSink::spawn(
        closed_url(),
        AmqpReceiptSettings {
            attempts: 2,
            ..settings("nowhere")
        },
        stats.clone(),
    );
    for _ in 0..3 {
        sink.record(receipt(Outcome::Undeliverable, Some("carol"), Some("7")));
    }
    // Returns once every receipt is answered, given up included.
    sink.flush().await;
    assert_eq!(counted(&stats), (0, 3, 0));
    sink.close().await;
}
