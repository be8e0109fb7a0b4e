//! The harness against a real moto server.
#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use testkit::{moto, unique_name};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn moto_answers_and_a_queue_round_trips_a_message() {
    let moto = moto();
    assert!(
        moto.endpoint().starts_with("http://127.0.0.1:"),
        "{}",
        moto.endpoint()
    );
    let aws = moto.aws().await;
    let queue = aws.create_queue(&unique_name("testkit-q")).await;
    assert!(queue.arn.ends_with(&queue.name), "{queue:?}");

    let id = aws
        .send_with_attributes(
            &queue.url,
            r#"{"client_id":"c1","command":"ping"}"#,
            &[("k", "v")],
        )
        .await;
    assert_eq!(aws.wait_for_counts(&queue.url, (1, 0), WAIT).await, (1, 0));

    let got = aws.receive_at_least(&queue.url, 1, WAIT).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, id);
    assert_eq!(got[0].json()["command"], "ping");
    assert_eq!(got[0].attributes.get("k").map(String::as_str), Some("v"));
    assert_eq!(got[0].receive_count, 1);
    // receive_* deletes what it took.
    assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
    aws.delete_queue(&queue.url).await;
}

#[tokio::test]
async fn sns_delivers_envelopes_and_raw_messages() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("testkit-t")).await;
    let enveloped = aws.create_queue(&unique_name("testkit-env")).await;
    let raw = aws.create_queue(&unique_name("testkit-raw")).await;
    let sub_env = aws.subscribe_queue(&topic, &enveloped, false).await;
    let sub_raw = aws.subscribe_queue(&topic, &raw, true).await;

    let message = r#"{"client_id":"c2","command":"go"}"#;
    aws.publish(&topic, message, &[("client_id", "c2")]).await;

    let env = aws.receive_at_least(&enveloped.url, 1, WAIT).await;
    assert_eq!(env.len(), 1);
    assert!(env[0].is_sns_envelope(), "{}", env[0].body);
    assert_eq!(env[0].payload(), message);
    assert_eq!(env[0].published_attributes()["client_id"], "c2");

    let bare = aws.receive_at_least(&raw.url, 1, WAIT).await;
    assert_eq!(bare.len(), 1);
    assert_eq!(bare[0].body, message);
    assert_eq!(bare[0].published_attributes()["client_id"], "c2");

    // Nothing else arrives.
    assert!(aws
        .receive_all(&raw.url, Duration::from_millis(1200))
        .await
        .is_empty());

    aws.unsubscribe(&sub_env).await;
    aws.unsubscribe(&sub_raw).await;
    aws.delete_queue(&enveloped.url).await;
    aws.delete_queue(&raw.url).await;
    aws.delete_topic(&topic).await;
}

#[tokio::test]
async fn filter_policies_and_dead_letter_queues() {
    let aws = moto().aws().await;
    let topic = aws.create_topic(&unique_name("testkit-f")).await;
    let queue = aws.create_queue(&unique_name("testkit-fq")).await;
    aws.subscribe_queue_filtered(&topic, &queue, true, r#"{"client_id":["wanted"]}"#)
        .await;
    aws.publish(&topic, "skip", &[("client_id", "other")]).await;
    aws.publish(&topic, "keep", &[("client_id", "wanted")])
        .await;
    let got = aws.receive_all(&queue.url, Duration::from_secs(2)).await;
    assert_eq!(
        got.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(),
        ["keep"]
    );

    let visibility = [(
        aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
        "0".to_owned(),
    )];
    let (main, dlq) = aws
        .create_queue_with_dlq(&unique_name("testkit-main"), 1, &visibility)
        .await;
    assert!(dlq.name.ends_with("-dlq"));
    aws.send(&main.url, "poison").await;
    // Receive without deleting, twice: the second receive moves it to the DLQ.
    for _ in 0..2 {
        aws.sqs
            .receive_message()
            .queue_url(&main.url)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
    }
    let dead = aws.receive_at_least(&dlq.url, 1, WAIT).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "poison");
}

#[test]
fn moto_works_from_a_fresh_runtime_each_time() {
    for _ in 0..2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let aws = moto().aws().await;
            let queue = aws.create_queue(&unique_name("testkit-rt.x")).await;
            assert_eq!(aws.queue_counts(&queue.url).await, (0, 0));
        });
    }
}

#[tokio::test]
async fn fifo_queues_keep_order() {
    let aws = moto().aws().await;
    let queue = aws
        .create_queue(&format!("{}.fifo", unique_name("testkit-fifo")))
        .await;
    for i in 0..3 {
        aws.send(&queue.url, &format!("m{i}")).await;
    }
    let got = aws.receive_at_least(&queue.url, 3, WAIT).await;
    let bodies: Vec<_> = got.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(bodies, ["m0", "m1", "m2"]);
}
