//! What the emulator does not implement is answered with an AWS-style
//! error (HTTP 400), never with a success: on the wire, and as the SDKs
//! read it. And SNS topic tags, which it does implement.

use aws_sdk_sns::error::ProvideErrorMetadata as _;
use aws_sdk_sns::types::Tag;

use crate::emulator;

#[tokio::test]
async fn an_unknown_sqs_operation_is_an_unsupported_operation_error() {
    let (emulator, _aws) = emulator().await;
    let answer = reqwest::Client::new()
        .post(emulator.endpoint())
        .header("x-amz-target", "AmazonSQS.StartMessageMoveTask")
        .header("content-type", "application/x-amz-json-1.0")
        .body(r#"{"SourceArn":"arn:aws:sqs:us-east-1:123456789012:q"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 400);
    assert_eq!(
        answer.headers()["x-amzn-query-error"],
        "AWS.SimpleQueueService.UnsupportedOperation;Sender"
    );
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "__type": "com.amazonaws.sqs#UnsupportedOperation",
            "message": "StartMessageMoveTask is not supported by the embedded emulator",
        })
    );
    emulator.stop().await;
}

#[tokio::test]
async fn the_sdks_see_an_error_for_what_is_not_implemented() {
    let (emulator, aws) = emulator().await;
    let queue = aws.create_queue("dead-letters").await;
    let error = aws
        .sqs
        .list_dead_letter_source_queues()
        .queue_url(&queue.url)
        .send()
        .await
        .expect_err("ListDeadLetterSourceQueues is not implemented");
    let service = error.into_service_error();
    let code = aws_sdk_sqs::error::ProvideErrorMetadata::code(&service);
    assert!(
        code.is_some_and(|c| c.ends_with("UnsupportedOperation")),
        "{service:?}"
    );
    assert_eq!(
        aws_sdk_sqs::error::ProvideErrorMetadata::message(&service),
        Some("ListDeadLetterSourceQueues is not supported by the embedded emulator")
    );

    let error = aws
        .sns
        .list_platform_applications()
        .send()
        .await
        .expect_err("ListPlatformApplications is not implemented");
    let service = error.into_service_error();
    assert_eq!(service.code(), Some("InvalidAction"), "{service:?}");
    assert_eq!(
        service.message(),
        Some("ListPlatformApplications is not supported by the embedded emulator")
    );
    emulator.stop().await;
}

#[tokio::test]
async fn sns_query_errors_are_error_responses() {
    let (emulator, _aws) = emulator().await;
    let http = reqwest::Client::new();
    for (form, expected) in [
        (
            "Action=CreatePlatformEndpoint&Version=2010-03-31",
            "CreatePlatformEndpoint is not supported by the embedded emulator",
        ),
        // An SQS client of the older query protocol.
        (
            "Action=SendMessage&Version=2012-11-05&QueueUrl=q&MessageBody=x",
            "SendMessage over the SQS query protocol is not supported by the embedded emulator",
        ),
        ("Version=2010-03-31", "The request names no operation"),
    ] {
        let answer = http
            .post(emulator.endpoint())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 400, "{form}");
        let body = answer.text().await.unwrap();
        assert!(
            body.contains("<ErrorResponse") && body.contains("<Code>InvalidAction</Code>"),
            "{form}: {body}"
        );
        assert!(body.contains(expected), "{form}: {body}");
    }
    emulator.stop().await;
}

#[tokio::test]
async fn topic_tags_are_kept() {
    let (emulator, aws) = emulator().await;
    let created = aws
        .sns
        .create_topic()
        .name("tagged")
        .tags(Tag::builder().key("team").value("a").build().unwrap())
        .send()
        .await
        .unwrap();
    let topic = created.topic_arn().unwrap().to_owned();
    aws.sns
        .tag_resource()
        .resource_arn(&topic)
        .tags(Tag::builder().key("env").value("dev").build().unwrap())
        .send()
        .await
        .unwrap();
    aws.sns
        .untag_resource()
        .resource_arn(&topic)
        .tag_keys("team")
        .send()
        .await
        .unwrap();
    let listed = aws
        .sns
        .list_tags_for_resource()
        .resource_arn(&topic)
        .send()
        .await
        .unwrap();
    let tags: Vec<(&str, &str)> = listed.tags().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags, [("env", "dev")]);

    let missing = aws
        .sns
        .list_tags_for_resource()
        .resource_arn(format!("{topic}-missing"))
        .send()
        .await
        .expect_err("no such topic");
    assert_eq!(
        missing.into_service_error().code(),
        Some("ResourceNotFound")
    );
    emulator.stop().await;
}
