//! The proxy end to end: a tiny HTTP/1.1 server stands in for moto, a raw
//! client speaks through the proxy, and each fault is checked from the
//! client's side.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::http::{read_message, Kind, Message};
use super::*;

/// A tiny HTTP/1.1 server standing in for moto: answers each request
/// with 200 and `op=<operation> conn=<connection number>`; the path
/// `/chunked` answers with a chunked body, `/close` with a
/// close-delimited one. Counts the requests it served.
async fn upstream() -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        let mut connection = 0u64;
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            connection += 1;
            let served = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Ok(Some(request)) =
                    read_message(&mut stream, &mut buf, Kind::Request).await
                {
                    served.fetch_add(1, Ordering::SeqCst);
                    let body = format!("op={} conn={connection}", request.operation());
                    let path = request.start.split_whitespace().nth(1).unwrap_or("/");
                    let response = match path {
                        "/chunked" => format!(
                            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                             3\r\nop=\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                            body.len() - 3,
                            &body[3..]
                        ),
                        "/close" => {
                            format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}")
                        }
                        _ => format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        ),
                    };
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    if path == "/close" {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), served)
}

fn sqs(operation: &str) -> Vec<u8> {
    format!(
        "POST / HTTP/1.1\r\nHost: sqs\r\nX-Amz-Target: AmazonSQS.{operation}\r\n\
         Content-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

fn sns(action: &str, path: &str) -> Vec<u8> {
    let body = format!("Action={action}&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3Ax");
    format!(
        "POST {path} HTTP/1.1\r\nHost: sns\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(proxy: &FaultProxy) -> Self {
        Self {
            stream: TcpStream::connect(proxy.addr()).await.unwrap(),
            buf: Vec::new(),
        }
    }

    /// Sends a request; the answer within `within`, `None` if none came,
    /// `Some(Err)` if the connection failed or closed instead.
    async fn call(
        &mut self,
        request: &[u8],
        within: Duration,
    ) -> Option<Result<(u16, String, Message), String>> {
        if let Err(e) = self.stream.write_all(request).await {
            return Some(Err(e.to_string()));
        }
        let read = read_message(&mut self.stream, &mut self.buf, Kind::Response);
        match tokio::time::timeout(within, read).await {
            Err(_) => None,
            Ok(Ok(Some(m))) => {
                let body = String::from_utf8_lossy(m.body()).into_owned();
                Some(Ok((m.status.unwrap_or_default(), body, m)))
            }
            Ok(Ok(None)) => Some(Err("closed".into())),
            Ok(Err(e)) => Some(Err(e.to_string())),
        }
    }

    async fn ok(&mut self, request: &[u8]) -> (u16, String, Message) {
        match self.call(request, Duration::from_secs(5)).await {
            Some(Ok(answer)) => answer,
            other => panic!("expected an answer, got {other:?}"),
        }
    }
}

const SOON: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn passes_requests_through_on_one_keep_alive_connection() {
    let (target, served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    assert!(proxy.endpoint().starts_with("http://127.0.0.1:"));
    let mut client = Client::connect(&proxy).await;
    let (status, body, _) = client.ok(&sqs("ReceiveMessage")).await;
    assert_eq!((status, body.as_str()), (200, "op=ReceiveMessage conn=1"));
    let (status, body, _) = client.ok(&sns("Publish", "/")).await;
    assert_eq!((status, body.as_str()), (200, "op=Publish conn=1"));
    let (status, body, _) = client.ok(&sqs("DeleteMessageBatch")).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "op=DeleteMessageBatch conn=1")
    );

    assert_eq!(served.load(Ordering::SeqCst), 3);
    let stats = proxy.stats();
    assert_eq!(
        (
            stats.connections,
            stats.requests,
            stats.forwarded,
            stats.answered
        ),
        (1, 3, 3, 0),
        "{stats:?}"
    );
    let seen = proxy.seen();
    let ops: Vec<&str> = seen.iter().map(|s| s.operation.as_str()).collect();
    assert_eq!(ops, ["ReceiveMessage", "Publish", "DeleteMessageBatch"]);
    assert!(seen.iter().all(|s| s.outcome == Outcome::Forwarded));
    assert_eq!(operations(&seen).get("Publish"), Some(&1));
}

#[tokio::test]
async fn throttles_the_next_n_requests_of_one_operation_in_its_protocol() {
    let (target, served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    proxy.inject_for("ReceiveMessage", Fault::Throttle, Limit::Times(2));
    proxy.inject_for("Publish", Fault::Throttle, Limit::Times(1));
    let mut client = Client::connect(&proxy).await;

    let (status, body, message) = client.ok(&sqs("ReceiveMessage")).await;
    assert_eq!(status, 400);
    assert_eq!(
        message.header("x-amzn-query-error"),
        Some("Throttling;Sender")
    );
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["__type"], "com.amazonaws.sqs#ThrottlingException");
    // Another operation is not affected, and the connection stays usable.
    assert_eq!(client.ok(&sqs("DeleteMessageBatch")).await.0, 200);
    assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 400);
    assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);

    let (status, body, message) = client.ok(&sns("Publish", "/")).await;
    assert_eq!(status, 400);
    assert_eq!(message.header("content-type"), Some("text/xml"));
    assert!(
        body.contains("<Type>Sender</Type><Code>Throttling</Code>"),
        "{body}"
    );
    assert_eq!(client.ok(&sns("Publish", "/")).await.0, 200);

    assert_eq!(served.load(Ordering::SeqCst), 3);
    let stats = proxy.stats();
    assert_eq!((stats.requests, stats.answered), (6, 3), "{stats:?}");
    assert_eq!(
        proxy.attempts_since(Some("ReceiveMessage"), Instant::now() - SOON),
        3
    );
}

#[tokio::test]
async fn answers_server_errors_for_a_time_window() {
    let (target, served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    proxy.inject(Fault::ServerError, Limit::For(Duration::from_millis(300)));
    let mut client = Client::connect(&proxy).await;
    let (status, body, _) = client.ok(&sqs("ReceiveMessage")).await;
    assert_eq!(status, 500);
    assert!(body.contains("InternalError"), "{body}");
    let (status, body, _) = client.ok(&sns("PublishBatch", "/")).await;
    assert_eq!(status, 500);
    assert!(body.contains("<Code>InternalError</Code>"), "{body}");
    assert_eq!(served.load(Ordering::SeqCst), 0);

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_canned_response_is_sent_as_given() {
    let (target, _served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    let canned = CannedResponse {
        status: 503,
        headers: vec![("X-Test".into(), "yes".into())],
        body: "try later".into(),
    };
    proxy.inject(Fault::Respond(canned), Limit::Times(1));
    let mut client = Client::connect(&proxy).await;
    let (status, body, message) = client.ok(&sqs("ReceiveMessage")).await;
    assert_eq!((status, body.as_str()), (503, "try later"));
    assert_eq!(message.header("x-test"), Some("yes"));
    assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);
}

#[tokio::test]
async fn refuse_resets_open_and_new_connections_until_healed() {
    let (target, served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    let mut open = Client::connect(&proxy).await;
    assert_eq!(open.ok(&sqs("ReceiveMessage")).await.0, 200);

    proxy.set(Fault::Refuse);
    assert_eq!(proxy.mode(), Fault::Refuse);
    // The open connection was reset: no answer, an error instead.
    let answer = open.call(&sqs("ReceiveMessage"), SOON).await;
    assert!(matches!(answer, Some(Err(_))), "{answer:?}");
    // So is every new one (the reset may even beat the end of `connect`).
    for _ in 0..3 {
        if let Ok(stream) = TcpStream::connect(proxy.addr()).await {
            let mut fresh = Client {
                stream,
                buf: Vec::new(),
            };
            let answer = fresh.call(&sqs("ReceiveMessage"), SOON).await;
            assert!(matches!(answer, Some(Err(_))), "{answer:?}");
        }
    }
    assert_eq!(served.load(Ordering::SeqCst), 1);
    let stats = proxy.stats();
    assert_eq!(stats.refused, 3, "{stats:?}");
    assert!(stats.resets >= 4, "{stats:?}");
    assert_eq!(stats.attempts(), stats.requests + 3);

    proxy.heal();
    let mut after = Client::connect(&proxy).await;
    assert_eq!(after.ok(&sqs("ReceiveMessage")).await.0, 200);
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refuse_rule_resets_only_the_matching_requests() {
    let (target, _served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    proxy.inject_for("DeleteMessageBatch", Fault::Refuse, Limit::Times(1));
    let mut client = Client::connect(&proxy).await;
    assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);
    let answer = client.call(&sqs("DeleteMessageBatch"), SOON).await;
    assert!(matches!(answer, Some(Err(_))), "{answer:?}");
    let mut again = Client::connect(&proxy).await;
    assert_eq!(again.ok(&sqs("DeleteMessageBatch")).await.0, 200);
    let refused: Vec<Seen> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.outcome == Outcome::Refused)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].operation, "DeleteMessageBatch");
}

#[tokio::test]
async fn a_black_hole_reads_and_never_answers() {
    let (target, served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    proxy.set(Fault::BlackHole);
    let mut client = Client::connect(&proxy).await;
    assert!(client.call(&sqs("ReceiveMessage"), QUIET).await.is_none());
    assert_eq!(served.load(Ordering::SeqCst), 0);
    assert_eq!(proxy.stats().black_holed, 1);

    // Healed: new connections work; the swallowed one stays silent.
    proxy.heal();
    assert!(client.call(&sqs("ReceiveMessage"), QUIET).await.is_none());
    let mut fresh = Client::connect(&proxy).await;
    assert_eq!(fresh.ok(&sqs("ReceiveMessage")).await.0, 200);
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_black_hole_swallows_the_answer_to_a_request_already_forwarded() {
    let (target, served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    // The answer is held for a while; the black hole starts meanwhile.
    proxy.inject(
        Fault::DelayResponse(Duration::from_millis(300)),
        Limit::Times(1),
    );
    let mut client = Client::connect(&proxy).await;
    let request = sqs("ReceiveMessage");
    let call = client.call(&request, Duration::from_millis(800));
    let switch = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.set(Fault::BlackHole);
    };
    let (answer, ()) = tokio::join!(call, switch);
    assert!(answer.is_none(), "{answer:?}");
    assert_eq!(served.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn delays_the_request_or_its_answer() {
    let (target, served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    let delay = Duration::from_millis(300);
    let mut client = Client::connect(&proxy).await;

    proxy.inject(Fault::Delay(delay), Limit::Times(1));
    let started = Instant::now();
    let request = sqs("ReceiveMessage");
    let call = client.ok(&request);
    let early = async {
        tokio::time::sleep(delay / 3).await;
        served.load(Ordering::SeqCst)
    };
    let ((status, _, _), early) = tokio::join!(call, early);
    assert_eq!(status, 200);
    assert!(started.elapsed() >= delay);
    assert_eq!(early, 0, "the request was forwarded before its delay");

    proxy.inject(Fault::DelayResponse(delay), Limit::Times(1));
    let started = Instant::now();
    let request = sqs("ReceiveMessage");
    let call = client.ok(&request);
    let early = async {
        tokio::time::sleep(delay / 3).await;
        served.load(Ordering::SeqCst)
    };
    let ((status, _, _), early) = tokio::join!(call, early);
    assert_eq!(status, 200);
    assert!(started.elapsed() >= delay);
    assert_eq!(early, 2, "the request was not forwarded at once");
}

#[tokio::test]
async fn reset_connections_resets_an_idle_connection() {
    let (target, _served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    let mut client = Client::connect(&proxy).await;
    assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);
    proxy.reset_connections();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = client.call(&sqs("ReceiveMessage"), SOON).await;
    assert!(matches!(answer, Some(Err(_))), "{answer:?}");
    // Only that connection: new ones are served.
    let mut fresh = Client::connect(&proxy).await;
    assert_eq!(fresh.ok(&sqs("ReceiveMessage")).await.0, 200);
}

#[tokio::test]
async fn chunked_and_close_delimited_answers_are_passed_whole() {
    let (target, _served) = upstream().await;
    let proxy = FaultProxy::start(&target);
    let mut client = Client::connect(&proxy).await;
    let (status, body, message) = client.ok(&sns("Publish", "/chunked")).await;
    assert_eq!(status, 200);
    assert_eq!(message.header("transfer-encoding"), Some("chunked"));
    assert!(body.ends_with("0\r\n\r\n"), "{body:?}");
    assert!(body.contains("Publish conn=1"), "{body:?}");
    // Still in step on the same connection.
    assert_eq!(client.ok(&sns("Publish", "/")).await.1, "op=Publish conn=1");

    let (status, body, message) = client.ok(&sns("Publish", "/close")).await;
    assert_eq!((status, body.as_str()), (200, "op=Publish conn=1"));
    assert!(message.close);
    // The proxy closes the client's side too.
    let answer = client.call(&sns("Publish", "/"), SOON).await;
    assert!(matches!(answer, Some(Err(_))), "{answer:?}");
}

#[tokio::test]
async fn records_the_access_key_that_signed_each_request() {
    let (target, _) = upstream().await;
    let proxy = FaultProxy::start(&target);
    let mut client = Client::connect(&proxy).await;
    let signed = String::from_utf8(sqs("ReceiveMessage")).unwrap().replacen(
        "Host: sqs\r\n",
        "Host: sqs\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=AKIDEXAMPLE7/20250101/us-east-1/sqs/aws4_request, \
         SignedHeaders=host, Signature=0f\r\n",
        1,
    );
    client.ok(signed.as_bytes()).await;
    client.ok(&sqs("ReceiveMessage")).await;
    let keys: Vec<String> = proxy.seen().into_iter().map(|s| s.access_key_id).collect();
    assert_eq!(keys, ["AKIDEXAMPLE7", ""]);
}
