//! `tools` (send-command, monitor) against moto.

use std::collections::BTreeMap;
use std::time::Instant;

use adapters_aws::bootstrap::queue_name_from_url;
use adapters_aws::sdk::Clients;
use adapters_aws::tools::{self, Monitor, SeenEvent};
use adapters_aws::{SnsEventSink, SnsSinkSettings};
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use domain::EventSink;
use testkit::{moto, unique_name};

use crate::support::{client, event, take_raw, WAIT};

#[tokio::test]
async fn an_envelope_sent_to_a_queue_decodes_back_to_the_command() {
    let aws = moto().aws().await;
    let clients = Clients::from_config(&aws.config);
    let queue = aws.create_queue(&unique_name("tools-send")).await;
    let command = r#"{"client_id":"c9","command":"refresh","data":null}"#;
    let topic_arn = "arn:aws:sns:us-east-1:123456789012:commands";

    let body = tools::envelope(command, topic_arn);
    let id = tools::send_to_queue(&clients.sqs, &queue.url, &body, &client("c9"))
        .await
        .unwrap();

    let got = aws.receive_at_least(&queue.url, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, id);
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].json()["TopicArn"], topic_arn);
    let decoded = domain::decode_sqs_body(&got[0].body).unwrap();
    assert_eq!(&*decoded.json, command);
    assert_eq!(decoded.client_id.as_str(), "c9");
    assert!(decoded.sns_message_id.is_some());
}

#[tokio::test]
async fn send_to_a_fifo_queue_groups_by_client() {
    let aws = moto().aws().await;
    let queue = aws
        .create_queue(&format!("{}.fifo", unique_name("tools-send")))
        .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let command = format!(r#"{{"client_id":"f1","command":"n{n}"}}"#);
        // The same body twice would be de-duplicated by content; the tool
        // sets its own de-duplication id.
        ids.push(
            tools::send_to_queue(&aws.sqs, &queue.url, &command, &client("f1"))
                .await
                .unwrap(),
        );
        ids.push(
            tools::send_to_queue(&aws.sqs, &queue.url, &command, &client("f1"))
                .await
                .unwrap(),
        );
    }

    let got = take_raw(&aws.sqs, &queue.url, 6, WAIT).await;
    let seen: Vec<(String, String, String)> = got
        .iter()
        .map(|m| {
            let group = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned()
                .unwrap_or_default();
            (
                m.message_id().unwrap_or_default().to_owned(),
                group,
                domain::decode_sqs_body(m.body().unwrap())
                    .unwrap()
                    .json
                    .to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                id.clone(),
                "f1".to_owned(),
                format!(r#"{{"client_id":"f1","command":"n{}"}}"#, i / 2),
            )
        })
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn publish_to_topic_delivers_the_command_with_a_client_id_attribute() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("tools-pub")).await;
    let queue = aws.create_queue(&unique_name("tools-pub-q")).await;
    aws.subscribe_queue(&topic, &queue, false).await;
    let command = r#"{"client_id":"p1","command":"ping"}"#;

    let id = tools::publish_to_topic(&aws.sns, &topic, command, &client("p1"), None)
        .await
        .unwrap();

    let got = aws.receive_at_least(&queue.url, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload(), command);
    assert_eq!(got[0].json()["MessageId"], id.as_str());
    assert_eq!(
        got[0].published_attributes(),
        BTreeMap::from([("client_id".to_owned(), "p1".to_owned())])
    );
}

#[tokio::test]
async fn publish_to_a_missing_topic_fails() {
    let aws = moto().aws().await;
    let name = unique_name("tools-there");
    let missing = aws
        .create_topic(&name)
        .await
        .replace(&name, &unique_name("tools-missing"));
    let result = tools::publish_to_topic(&aws.sns, &missing, "{}", &client("p1"), None).await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("Publish"), "{error}");
}

#[tokio::test]
async fn monitor_sees_published_events_and_stop_removes_its_queue_and_subscription() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("tools-mon")).await;
    let monitor = Monitor::start(aws.sqs.clone(), aws.sns.clone(), &topic)
        .await
        .unwrap();
    let queue_url = monitor.queue_url().to_owned();
    let queue_arn = aws.queue_arn(&queue_url).await;
    let subscribed = |subs: &[aws_sdk_sns::types::Subscription]| {
        subs.iter()
            .any(|s| s.endpoint() == Some(queue_arn.as_str()))
    };
    let subs = aws
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    assert!(subscribed(subs.subscriptions()));

    // What the bridge publishes, through the real sink.
    let sink = SnsEventSink::spawn(aws.sns.clone(), &topic, SnsSinkSettings::default());
    let body = r#"{"action":"hello","client_id":"m1"}"#;
    sink.publish(event("m1", "hello", body)).await.unwrap();

    let deadline = Instant::now() + WAIT;
    let mut seen: Vec<SeenEvent> = Vec::new();
    while seen.is_empty() && Instant::now() < deadline {
        seen.extend(monitor.next_events(1).await.unwrap());
    }
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].message, body);
    assert!(!seen[0].message_id.is_empty());
    assert_eq!(
        seen[0].attributes,
        BTreeMap::from([
            ("action".to_owned(), "hello".to_owned()),
            ("client_id".to_owned(), "m1".to_owned()),
        ])
    );
    // next_events deleted what it returned.
    assert_eq!(aws.queue_counts(&queue_url).await, (0, 0));

    monitor.stop().await.unwrap();
    let subs = aws
        .sns
        .list_subscriptions_by_topic()
        .topic_arn(&topic)
        .send()
        .await
        .unwrap();
    assert!(!subscribed(subs.subscriptions()), "{subs:?}");
    let name = queue_name_from_url(&queue_url).unwrap();
    let lookup = aws.sqs.get_queue_url().queue_name(name).send().await;
    let code = lookup.as_ref().err().and_then(|e| e.code());
    assert!(
        matches!(
            code,
            Some("AWS.SimpleQueueService.NonExistentQueue" | "QueueDoesNotExist")
        ),
        "{lookup:?}"
    );
    // Publishing still works (moto fails it while a subscription points at a
    // deleted queue).
    sink.publish(event("m1", "hello", body)).await.unwrap();
}
