//! The AWS JSON 1.0 shapes of the three calls (`X-Amz-Target:
//! AmazonSQS.<Operation>`), only the fields the bridge sends and reads.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// `ReceiveMessage` request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ReceiveRequest<'a> {
    pub queue_url: &'a str,
    pub max_number_of_messages: i32,
    pub wait_time_seconds: i32,
    pub message_system_attribute_names: &'a [&'a str],
    pub message_attribute_names: &'a [&'a str],
}

/// `ReceiveMessage` answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ReceiveResponse {
    #[serde(default)]
    pub messages: Vec<WireMessage>,
}

/// One received message.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireMessage {
    pub message_id: Option<String>,
    pub receipt_handle: Option<String>,
    pub body: Option<String>,
    /// System attributes (`SentTimestamp`, …), values as strings.
    #[serde(default)]
    pub attributes: HashMap<String, String>,
    #[serde(default)]
    pub message_attributes: HashMap<String, WireAttribute>,
}

/// A message attribute: `BinaryValue` is base64.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct WireAttribute {
    pub data_type: String,
    pub string_value: Option<String>,
    pub binary_value: Option<String>,
}

/// `DeleteMessageBatch` / `ChangeMessageVisibilityBatch` request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct BatchRequest<'a> {
    pub queue_url: &'a str,
    pub entries: Vec<BatchEntry>,
}

/// One entry of a batch request (owned: the request is made before the
/// call's future, which must not borrow the caller's receipts).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct BatchEntry {
    pub id: &'static str,
    pub receipt_handle: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_timeout: Option<i32>,
}

/// The answer of a batch call: only the failures matter.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct BatchResponse {
    #[serde(default)]
    pub failed: Vec<BatchFailure>,
}

/// An entry the service did not settle.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct BatchFailure {
    pub id: String,
    #[serde(default)]
    pub sender_fault: bool,
    #[serde(default)]
    pub code: String,
    pub message: Option<String>,
}

/// The body of an error answer (`{"__type": "com.amazonaws.sqs#Code", "message": …}`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(rename = "__type", default)]
    pub kind: String,
    #[serde(alias = "Message", default)]
    pub message: Option<String>,
}
