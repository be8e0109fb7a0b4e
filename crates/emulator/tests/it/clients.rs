//! The emulator driven the way users drive it: the real AWS CLI (v1) and
//! boto3, pointed at it by `AWS_ENDPOINT_URL`, through a queue's and a
//! topic's life (create, send, receive, delete; create a topic, subscribe a
//! queue with raw delivery, publish). The tools come from `.venv`
//! (`scripts/moto-venv.sh`) or `WSBRIDGE_TEST_AWS_CLI` /
//! `WSBRIDGE_TEST_PYTHON`; without them these tests fail, saying so.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use tokio::process::Command;

use crate::emulator;

/// A command for a tool that sees only the emulator: its endpoint in
/// `AWS_ENDPOINT_URL`, a region, dummy credentials, and no AWS
/// configuration files of the machine.
fn tool(program: &Path, endpoint: &str) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    command
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_CONFIG_FILE", "/nonexistent/wsbridge-test-aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/wsbridge-test-aws-credentials",
        )
        .env("AWS_DEFAULT_OUTPUT", "json")
        .env("AWS_PAGER", "")
        .kill_on_drop(true);
    command
}

fn describe(args: &[&str], output: &Output) -> String {
    format!(
        "aws {}: {:?}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `aws ARGS…` against `endpoint`. AWS CLI v1 ignores `AWS_ENDPOINT_URL`
/// for `aws sqs` (it pins SQS's legacy host names per region;
/// aws/aws-cli#8737), so those also get `--endpoint-url`; `aws sns` goes by
/// the environment alone.
fn aws_command(endpoint: &str, args: &[&str]) -> Command {
    let mut command = tool(&testkit::tools::aws_cli(), endpoint);
    command.args(args);
    if args.first() == Some(&"sqs") {
        command.args(["--endpoint-url", endpoint]);
    }
    command
}

/// Runs `aws ARGS…` against `endpoint` ([`aws_command`]); its JSON answer
/// (`null` when it prints nothing). Panics when it fails.
async fn aws(endpoint: &str, args: &[&str]) -> Value {
    let output = aws_command(endpoint, args)
        .output()
        .await
        .expect("running the AWS CLI");
    assert!(output.status.success(), "{}", describe(args, &output));
    if output.stdout.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", describe(args, &output)))
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_creates_sends_receives_deletes_subscribes_and_publishes() {
    let (emulator, _aws) = emulator().await;
    let endpoint = emulator.endpoint();

    let created = aws(endpoint, &["sqs", "create-queue", "--queue-name", "cli-q"]).await;
    let queue = text(&created, "/QueueUrl").to_owned();
    let listed = aws(endpoint, &["sqs", "list-queues"]).await;
    assert_eq!(listed["QueueUrls"], serde_json::json!([queue]));

    let sent = aws(
        endpoint,
        &[
            "sqs",
            "send-message",
            "--queue-url",
            &queue,
            "--message-body",
            "hello from the cli",
        ],
    )
    .await;
    // MD5 checked by the CLI itself too; here: the id is given.
    assert!(!text(&sent, "/MessageId").is_empty());
    let got = aws(
        endpoint,
        &[
            "sqs",
            "receive-message",
            "--queue-url",
            &queue,
            "--wait-time-seconds",
            "1",
        ],
    )
    .await;
    assert_eq!(text(&got, "/Messages/0/Body"), "hello from the cli");
    let receipt = text(&got, "/Messages/0/ReceiptHandle").to_owned();
    aws(
        endpoint,
        &[
            "sqs",
            "delete-message",
            "--queue-url",
            &queue,
            "--receipt-handle",
            &receipt,
        ],
    )
    .await;
    let counts = aws(
        endpoint,
        &[
            "sqs",
            "get-queue-attributes",
            "--queue-url",
            &queue,
            "--attribute-names",
            "All",
        ],
    )
    .await;
    assert_eq!(
        text(&counts, "/Attributes/ApproximateNumberOfMessages"),
        "0"
    );
    assert_eq!(
        text(&counts, "/Attributes/ApproximateNumberOfMessagesNotVisible"),
        "0"
    );
    let queue_arn = text(&counts, "/Attributes/QueueArn").to_owned();

    let topic = aws(endpoint, &["sns", "create-topic", "--name", "cli-t"]).await;
    let topic = text(&topic, "/TopicArn").to_owned();
    let subscribed = aws(
        endpoint,
        &[
            "sns",
            "subscribe",
            "--topic-arn",
            &topic,
            "--protocol",
            "sqs",
            "--notification-endpoint",
            &queue_arn,
            "--attributes",
            "RawMessageDelivery=true",
        ],
    )
    .await;
    assert!(text(&subscribed, "/SubscriptionArn").starts_with(&topic));
    aws(
        endpoint,
        &[
            "sns",
            "publish",
            "--topic-arn",
            &topic,
            "--message",
            r#"{"client_id":"c1","command":"go"}"#,
            "--message-attributes",
            r#"{"client_id":{"DataType":"String","StringValue":"c1"}}"#,
        ],
    )
    .await;
    let got = aws(
        endpoint,
        &[
            "sqs",
            "receive-message",
            "--queue-url",
            &queue,
            "--message-attribute-names",
            "All",
            "--wait-time-seconds",
            "5",
        ],
    )
    .await;
    assert_eq!(
        text(&got, "/Messages/0/Body"),
        r#"{"client_id":"c1","command":"go"}"#
    );
    assert_eq!(
        text(&got, "/Messages/0/MessageAttributes/client_id/StringValue"),
        "c1"
    );

    // What the emulator does not implement fails, saying so.
    let args = [
        "sqs",
        "list-dead-letter-source-queues",
        "--queue-url",
        queue.as_str(),
    ];
    let output = aws_command(endpoint, &args).output().await.unwrap();
    assert!(!output.status.success(), "{}", describe(&args, &output));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("ListDeadLetterSourceQueues is not supported by the embedded emulator"),
        "{}",
        describe(&args, &output)
    );

    aws(endpoint, &["sqs", "delete-queue", "--queue-url", &queue]).await;
    let listed = aws(endpoint, &["sqs", "list-queues"]).await;
    assert!(
        listed
            .get("QueueUrls")
            .is_none_or(|urls| urls == &serde_json::json!([])),
        "{listed}"
    );
    emulator.stop().await;
}

/// The same life through boto3; the script asserts, and prints `ok` last.
const BOTO3_SCRIPT: &str = r#"
import json, boto3

sqs = boto3.client("sqs")
sns = boto3.client("sns")
queue = sqs.create_queue(QueueName="boto-q")["QueueUrl"]
assert queue in sqs.list_queues()["QueueUrls"], queue
sqs.send_message(QueueUrl=queue, MessageBody="hello from boto3")
got = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
assert [m["Body"] for m in got] == ["hello from boto3"], got
sqs.delete_message(QueueUrl=queue, ReceiptHandle=got[0]["ReceiptHandle"])
attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
assert attributes["ApproximateNumberOfMessages"] == "0", attributes
assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0", attributes

topic = sns.create_topic(Name="boto-t")["TopicArn"]
sns.subscribe(
    TopicArn=topic,
    Protocol="sqs",
    Endpoint=attributes["QueueArn"],
    Attributes={"RawMessageDelivery": "true"},
)
command = json.dumps({"client_id": "c1", "command": "go"})
sns.publish(
    TopicArn=topic,
    Message=command,
    MessageAttributes={"client_id": {"DataType": "String", "StringValue": "c1"}},
)
got = sqs.receive_message(
    QueueUrl=queue, MessageAttributeNames=["All"], WaitTimeSeconds=5
)["Messages"]
assert got[0]["Body"] == command, got
assert got[0]["MessageAttributes"]["client_id"]["StringValue"] == "c1", got

try:
    sqs.list_dead_letter_source_queues(QueueUrl=queue)
    raise AssertionError("ListDeadLetterSourceQueues succeeded")
except sqs.exceptions.ClientError as error:
    message = error.response["Error"]["Message"]
    assert "not supported by the embedded emulator" in message, error.response

sqs.delete_queue(QueueUrl=queue)
assert queue not in sqs.list_queues().get("QueueUrls", []), "still listed"
print("ok")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_creates_sends_receives_deletes_subscribes_and_publishes() {
    let (emulator, _aws) = emulator().await;
    let output = tool(&testkit::tools::python_with_boto3(), emulator.endpoint())
        .args(["-c", BOTO3_SCRIPT])
        .output()
        .await
        .expect("running Python");
    let describe = describe(&["(boto3 script)"], &output);
    assert!(output.status.success(), "{describe}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "ok",
        "{describe}"
    );
    emulator.stop().await;
}
