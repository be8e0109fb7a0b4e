//! Helpers local to these tests (testkit has no equivalent).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use adapters_aws::{SqsCommandSource, SqsHttpClient, SqsSourceSettings};
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::SdkConfig;
use aws_sdk_sns::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_sns::config::{ConfigBag, Intercept};
use aws_sdk_sns::error::BoxError;
use aws_sdk_sns::operation::publish::PublishInput;
use aws_sdk_sns::operation::publish_batch::PublishBatchInput;
use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchInput;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use domain::{ClientId, OutboundEvent};

/// Which client makes the source's hot calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Sdk,
    Lean,
}

/// Each test, once per client.
#[macro_export]
macro_rules! both_clients {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sdk() {
                    super::$name($crate::support::Client::Sdk).await;
                }
                #[tokio::test]
                async fn lean() {
                    super::$name($crate::support::Client::Lean).await;
                }
            }
        )+
    };
}

/// A source over `queue_url` whose hot calls go through `client`.
pub fn source_with(
    client: Client,
    config: &SdkConfig,
    queue_url: &str,
    settings: SqsSourceSettings,
) -> SqsCommandSource {
    let sdk = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(config)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .build(),
    );
    with_client(
        client,
        config,
        SqsCommandSource::new(sdk, queue_url, settings),
    )
}

/// `source` with its hot calls through `client`.
pub fn with_client(
    client: Client,
    config: &SdkConfig,
    source: SqsCommandSource,
) -> SqsCommandSource {
    match client {
        Client::Sdk => source,
        Client::Lean => source.with_http_client(SqsHttpClient::from_config(config).unwrap()),
    }
}

/// Bound on every "wait until it happened" in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

/// A client id from a literal.
pub fn client(id: &str) -> ClientId {
    ClientId::parse(id).unwrap()
}

/// An outbound event with the given body (not necessarily what `ClientMessage`
/// would render: the sink must pass any body through byte for byte).
pub fn event(client_id: &str, action: &str, body: impl Into<String>) -> OutboundEvent {
    OutboundEvent {
        client_id: client(client_id),
        action: action.to_owned(),
        body: body.into(),
    }
}

/// A loopback port on which nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().unwrap().port()
}

/// Polls a future exactly once and reports whether it finished.
pub async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

/// Takes (receives with every system and message attribute, then deletes)
/// messages until `n` arrived or `timeout` passed. testkit's helpers keep only
/// String values of the attributes; some tests need the SDK's message itself.
pub async fn take_raw(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    n: usize,
    timeout: Duration,
) -> Vec<Message> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let messages = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        for message in messages {
            sqs.delete_message()
                .queue_url(queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
            got.push(message);
        }
    }
    got
}

/// One SNS call seen by [`CallLog`]: the operation and the messages it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnsCall {
    /// `PublishBatch` or `Publish` (other operations are not recorded).
    pub operation: &'static str,
    /// The `Message` of each entry, in request order.
    pub messages: Vec<String>,
}

/// An SDK interceptor recording every Publish / PublishBatch an SNS client
/// makes (once per operation, not per retry attempt).
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<SnsCall>>>);

impl CallLog {
    /// What was recorded so far.
    pub fn calls(&self) -> Vec<SnsCall> {
        self.0.lock().unwrap().clone()
    }

    /// An SNS client for `config` that records into this log.
    pub fn sns_client(&self, config: &aws_config::SdkConfig) -> aws_sdk_sns::Client {
        let conf = aws_sdk_sns::config::Builder::from(config)
            .interceptor(self.clone())
            .build();
        aws_sdk_sns::Client::from_conf(conf)
    }
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "adapters-aws-test-call-log"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        let call = if let Some(batch) = input.downcast_ref::<PublishBatchInput>() {
            SnsCall {
                operation: "PublishBatch",
                messages: batch
                    .publish_batch_request_entries()
                    .iter()
                    .map(|e| e.message().to_owned())
                    .collect(),
            }
        } else if let Some(single) = input.downcast_ref::<PublishInput>() {
            SnsCall {
                operation: "Publish",
                messages: single.message().map(str::to_owned).into_iter().collect(),
            }
        } else {
            return Ok(());
        };
        self.0.lock().unwrap().push(call);
        Ok(())
    }
}

/// An SDK interceptor recording the payload of every SendMessageBatch an SQS
/// client makes, as SQS counts it against its limit: each entry's body and
/// attribute names, types and values.
#[derive(Debug, Clone, Default)]
pub struct SendBatchLog(Arc<Mutex<Vec<usize>>>);

impl SendBatchLog {
    /// The payload of each call so far, in bytes.
    pub fn payload_sizes(&self) -> Vec<usize> {
        self.0.lock().unwrap().clone()
    }

    /// An SQS client for `config` that records into this log.
    pub fn sqs_client(&self, config: &SdkConfig) -> aws_sdk_sqs::Client {
        let conf = aws_sdk_sqs::config::Builder::from(config)
            .interceptor(self.clone())
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }
}

impl aws_sdk_sqs::config::Intercept for SendBatchLog {
    fn name(&self) -> &'static str {
        "adapters-aws-test-send-batch-log"
    }

    fn read_before_execution(
        &self,
        context: &aws_sdk_sqs::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_sqs::config::ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input();
        if let Some(batch) = input.downcast_ref::<SendMessageBatchInput>() {
            let bytes = batch
                .entries()
                .iter()
                .map(|entry| {
                    let attributes = entry.message_attributes().into_iter().flatten();
                    entry.message_body().len()
                        + attributes
                            .map(|(name, v)| {
                                name.len()
                                    + v.data_type().len()
                                    + v.string_value().map_or(0, str::len)
                                    + v.binary_value().map_or(0, |b| b.as_ref().len())
                            })
                            .sum::<usize>()
                })
                .sum();
            self.0.lock().unwrap().push(bytes);
        }
        Ok(())
    }
}
