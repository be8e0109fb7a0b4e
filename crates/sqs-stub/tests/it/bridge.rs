//! The real bridge (the `app` crate's `Application`) running against the
//! stub: a Command published through the stub reaches a WebSocket client,
//! and a ClientMessage is published to the events topic.

use std::time::Duration;

use adapters_aws::bootstrap::{self, Plan};
use adapters_aws::sdk::Clients;
use app::config::{Config, Settings};
use app::startup::Application;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::{stub, PATIENCE};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reach_clients_and_client_messages_are_published() {
    let (stub, aws) = stub().await;
    let infra = bootstrap::ensure(
        &aws.sqs,
        &aws.sns,
        &Plan {
            events_topic: "events".into(),
            commands_topic: "commands".into(),
            command_queue: "commands".into(),
            max_receive_count: 5,
        },
    )
    .await
    .unwrap();
    let observer = aws.create_queue("events-observer").await;
    aws.subscribe_queue(&infra.events_topic_arn, &observer, false)
        .await;

    let settings = Settings {
        port: 0,
        workers: 1,
        command_queue_url: Some(infra.command_queue_url.clone()),
        events_topic_arn: Some(infra.events_topic_arn.clone()),
        commands_topic_arn: Some(infra.commands_topic_arn.clone()),
        receive_wait_secs: 1,
        shutdown_timeout_secs: 5,
        ..Settings::default()
    };
    let app = Application::build(
        Config::new(settings).expect("valid settings"),
        Clients::from_config(&aws.config),
    )
    .await
    .unwrap();
    let port = app.port();
    let shutdown = app.shutdown_token();
    let metrics = app.aws_metrics().expect("an AWS bridge");
    let running = tokio::spawn(app.run_until_stopped());

    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?client_id=c1"))
            .await
            .unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metrics.not_ready_reason().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer never polled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let command = r#"{"client_id":"c1","command":"go","data":{"n":1},"extra":true}"#;
    aws.publish(&infra.commands_topic_arn, command, &[("client_id", "c1")])
        .await;
    assert_eq!(next_text(&mut ws).await, command);
    // Delivered, then deleted from the queue.
    assert_eq!(
        aws.wait_for_counts(&infra.command_queue_url, (0, 0), PATIENCE)
            .await,
        (0, 0)
    );

    ws.send(Message::text(r#"{"action":"hello","id":"m1","data":[1]}"#))
        .await
        .unwrap();
    let ack: serde_json::Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(ack, serde_json::json!({"ack": "m1"}));
    let published = aws.receive_at_least(&observer.url, 1, PATIENCE).await;
    assert_eq!(published.len(), 1);
    let message: serde_json::Value = serde_json::from_str(&published[0].payload()).unwrap();
    assert_eq!(message["action"], "hello");
    assert_eq!(message["client_id"], "c1");
    let attributes = published[0].published_attributes();
    assert_eq!(attributes["client_id"], "c1");
    assert_eq!(attributes["action"], "hello");
    assert_eq!(stub.operations()["PublishBatch"].entries, 1);

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the bridge stops")
        .unwrap()
        .unwrap();
    stub.stop().await;
}
