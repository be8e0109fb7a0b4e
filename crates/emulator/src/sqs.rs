//! The SQS side: AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.<Operation>`,
//! `application/x-amz-json-1.0`), errors as `{"__type", "message"}` with the
//! `x-amzn-query-error` header the SDKs read the legacy code from.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiError, ApiResult, ErrorKind};
use crate::model::{
    payload_bytes, Attributes, Delivered, NewMessage, ReceiveRequest, MAX_MESSAGE_BYTES,
};
use crate::server::Shared;

const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const BATCH_LIMIT: usize = 10;

/// Answers one SQS call.
pub(crate) async fn handle(shared: &Shared, target: &str, body: &[u8]) -> HttpResponse {
    let operation = target.strip_prefix("AmazonSQS.").unwrap_or(target);
    let result = match shared.enter(operation).await {
        Ok(()) => dispatch(shared, operation, body).await,
        Err(injected) => Err(injected),
    };
    shared.leave().await;
    match result {
        Ok((text, entries)) => {
            shared.finish(operation, true, entries);
            HttpResponse::Ok()
                .content_type(CONTENT_TYPE)
                .insert_header(("x-amzn-RequestId", shared.request_id()))
                .body(text)
        }
        Err(error) => {
            shared.finish(operation, false, 0);
            error_response(shared, &error)
        }
    }
}

fn error_response(shared: &Shared, error: &ApiError) -> HttpResponse {
    let (kind, query_code, status, sender) = error.sqs_codes();
    let body = json!({
        "__type": format!("com.amazonaws.sqs#{kind}"),
        "message": error.message,
    });
    HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST))
        .content_type(CONTENT_TYPE)
        .insert_header(("x-amzn-RequestId", shared.request_id()))
        .insert_header((
            "x-amzn-query-error",
            format!(
                "{query_code};{}",
                if sender { "Sender" } else { "Receiver" }
            ),
        ))
        .body(body.to_string())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorKind::InvalidParameter, format!("invalid request: {e}")))
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

fn required<'a>(name: &str, value: &'a str) -> ApiResult<&'a str> {
    if value.is_empty() {
        Err(ApiError::missing(name))
    } else {
        Ok(value)
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct QueueIn {
    queue_url: String,
    queue_name: String,
    attributes: BTreeMap<String, String>,
    #[serde(alias = "tags")]
    tags: BTreeMap<String, String>,
    attribute_names: Vec<String>,
    tag_keys: Vec<String>,
    queue_name_prefix: String,
    next_token: Option<String>,
    max_results: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct SendIn {
    queue_url: String,
    id: String,
    message_body: String,
    delay_seconds: Option<u32>,
    message_attributes: Attributes,
    message_group_id: Option<String>,
    message_deduplication_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct SendBatchIn {
    queue_url: String,
    entries: Vec<SendIn>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ReceiveIn {
    queue_url: String,
    max_number_of_messages: Option<i64>,
    wait_time_seconds: Option<i64>,
    visibility_timeout: Option<i64>,
    attribute_names: Vec<String>,
    message_system_attribute_names: Vec<String>,
    message_attribute_names: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ReceiptIn {
    queue_url: String,
    id: String,
    receipt_handle: String,
    visibility_timeout: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct ReceiptBatchIn {
    queue_url: String,
    entries: Vec<ReceiptIn>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MessageOut<'a> {
    message_id: &'a str,
    receipt_handle: &'a str,
    #[serde(rename = "MD5OfBody")]
    md5_of_body: &'a str,
    body: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: &'a BTreeMap<&'static str, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    message_attributes: &'a Attributes,
}

impl<'a> From<&'a Delivered> for MessageOut<'a> {
    fn from(d: &'a Delivered) -> Self {
        Self {
            message_id: &d.message_id,
            receipt_handle: &d.receipt_handle,
            md5_of_body: &d.md5_of_body,
            body: &d.body,
            attributes: &d.system_attributes,
            message_attributes: &d.message_attributes,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Failed<'a> {
    id: &'a str,
    sender_fault: bool,
    code: &'static str,
    message: String,
}

impl<'a> Failed<'a> {
    fn new(id: &'a str, error: &ApiError) -> Self {
        let (kind, _, _, sender) = error.sqs_codes();
        Self {
            id,
            sender_fault: sender,
            code: kind,
            message: error.message.clone(),
        }
    }
}

/// Checks the batch rules: 1..=10 entries, distinct valid ids.
fn check_batch<'a>(ids: impl Iterator<Item = &'a str>) -> ApiResult<usize> {
    let mut seen = HashSet::new();
    for id in ids {
        let valid = !id.is_empty()
            && id.len() <= 80
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Err(ApiError::new(
                ErrorKind::InvalidBatchId,
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.",
            ));
        }
        if !seen.insert(id) {
            return Err(ApiError::new(
                ErrorKind::IdsNotDistinct,
                format!("Id {id} repeated."),
            ));
        }
    }
    match seen.len() {
        0 => Err(ApiError::new(
            ErrorKind::EmptyBatch,
            "There should be at least one entry in the request.",
        )),
        n if n > BATCH_LIMIT => Err(ApiError::new(
            ErrorKind::TooManyEntries,
            format!("Maximum number of entries per request are {BATCH_LIMIT}. You have sent {n}."),
        )),
        n => Ok(n),
    }
}

fn injected_entry_failure(operation: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Internal,
        format!("injected entry fault on {operation}"),
    )
}

/// Runs one operation; returns the JSON answer and the entries it counts.
async fn dispatch(shared: &Shared, operation: &str, body: &[u8]) -> ApiResult<(String, usize)> {
    let model = &shared.model;
    let one = |text: String| Ok((text, 1));
    match operation {
        "CreateQueue" => {
            let input: QueueIn = parse(body)?;
            let name = required("QueueName", &input.queue_name)?;
            let url = model.create_queue(name, &input.attributes, &input.tags)?;
            one(to_json(&json!({ "QueueUrl": url })))
        }
        "GetQueueUrl" => {
            let input: QueueIn = parse(body)?;
            let cell = model.queue(required("QueueName", &input.queue_name)?)?;
            one(to_json(&json!({ "QueueUrl": cell.url() })))
        }
        "DeleteQueue" => {
            let input: QueueIn = parse(body)?;
            model.delete_queue(required("QueueUrl", &input.queue_url)?)?;
            one("{}".into())
        }
        "PurgeQueue" => {
            let input: QueueIn = parse(body)?;
            model.purge_queue(required("QueueUrl", &input.queue_url)?)?;
            one("{}".into())
        }
        "ListQueues" => {
            let input: QueueIn = parse(body)?;
            let start = input
                .next_token
                .as_deref()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let max = input.max_results.unwrap_or(1000).clamp(1, 1000);
            let (urls, next) = model.list_queues(&input.queue_name_prefix, start, max);
            let mut out = json!({ "QueueUrls": urls });
            if let (Some(next), Some(_)) = (next, input.max_results) {
                out["NextToken"] = json!(next.to_string());
            }
            one(to_json(&out))
        }
        "GetQueueAttributes" => {
            let input: QueueIn = parse(body)?;
            let url = required("QueueUrl", &input.queue_url)?;
            let attributes = model.queue_attributes(url, &input.attribute_names)?;
            one(to_json(&json!({ "Attributes": attributes })))
        }
        "SetQueueAttributes" => {
            let input: QueueIn = parse(body)?;
            model
                .set_queue_attributes(required("QueueUrl", &input.queue_url)?, &input.attributes)?;
            one("{}".into())
        }
        "TagQueue" => {
            let input: QueueIn = parse(body)?;
            model.tag_queue(required("QueueUrl", &input.queue_url)?, &input.tags)?;
            one("{}".into())
        }
        "UntagQueue" => {
            let input: QueueIn = parse(body)?;
            model.untag_queue(required("QueueUrl", &input.queue_url)?, &input.tag_keys)?;
            one("{}".into())
        }
        "ListQueueTags" => {
            let input: QueueIn = parse(body)?;
            let tags = model.queue_tags(required("QueueUrl", &input.queue_url)?)?;
            one(to_json(&json!({ "Tags": tags })))
        }
        "SendMessage" => {
            let input: SendIn = parse(body)?;
            let url = required("QueueUrl", &input.queue_url)?.to_owned();
            let sent = model.send(&url, new_message(input))?;
            let mut out =
                json!({ "MessageId": sent.message_id, "MD5OfMessageBody": sent.md5_of_body });
            if let Some(seq) = sent.sequence_number {
                out["SequenceNumber"] = json!(seq);
            }
            one(to_json(&out))
        }
        "SendMessageBatch" => {
            let input: SendBatchIn = parse(body)?;
            let url = required("QueueUrl", &input.queue_url)?;
            model.queue(url)?;
            let count = check_batch(input.entries.iter().map(|e| e.id.as_str()))?;
            // As SQS counts it: bodies and message attributes together.
            let total = input.entries.iter().fold(0usize, |total, e| {
                total.saturating_add(payload_bytes(&e.message_body, &e.message_attributes))
            });
            if total > MAX_MESSAGE_BYTES {
                return Err(ApiError::new(
                    ErrorKind::BatchTooLong,
                    format!("Batch requests cannot be longer than {MAX_MESSAGE_BYTES} bytes. You have sent {total} bytes."),
                ));
            }
            let mut successful = Vec::new();
            let mut failed = Vec::new();
            for entry in input.entries {
                let id = entry.id.clone();
                if shared.entry_fails(operation) {
                    failed.push(to_json(&Failed::new(
                        &id,
                        &injected_entry_failure(operation),
                    )));
                    continue;
                }
                match model.send(url, new_message(entry)) {
                    Ok(sent) => {
                        let mut out = json!({
                            "Id": id,
                            "MessageId": sent.message_id,
                            "MD5OfMessageBody": sent.md5_of_body,
                        });
                        if let Some(seq) = sent.sequence_number {
                            out["SequenceNumber"] = json!(seq);
                        }
                        successful.push(to_json(&out));
                    }
                    Err(e) => failed.push(to_json(&Failed::new(&id, &e))),
                }
            }
            Ok((batch_answer(&successful, &failed), count))
        }
        "ReceiveMessage" => {
            let input: ReceiveIn = parse(body)?;
            let url = required("QueueUrl", &input.queue_url)?;
            let max = input.max_number_of_messages.unwrap_or(1);
            if !(1..=10).contains(&max) {
                return Err(ApiError::invalid(format!(
                    "Value {max} for parameter MaxNumberOfMessages is invalid. Reason: Must be between 1 and 10, if provided."
                )));
            }
            let wait = match input.wait_time_seconds {
                Some(secs) if (0..=20).contains(&secs) => Duration::from_secs(secs as u64),
                Some(secs) => {
                    return Err(ApiError::invalid(format!(
                        "Value {secs} for parameter WaitTimeSeconds is invalid. Reason: Must be >= 0 and <= 20, if provided."
                    )))
                }
                None => model.default_wait(url)?,
            };
            let visibility_secs = match input.visibility_timeout {
                Some(secs) if (0..=43_200).contains(&secs) => Some(secs as u32),
                Some(secs) => {
                    return Err(ApiError::invalid(format!(
                        "Value {secs} for parameter VisibilityTimeout is invalid."
                    )))
                }
                None => None,
            };
            let mut system_attributes = input.attribute_names;
            system_attributes.extend(input.message_system_attribute_names);
            let request = ReceiveRequest {
                max_messages: max as usize,
                wait,
                visibility_secs,
                system_attributes,
                message_attributes: input.message_attribute_names,
            };
            let messages = model.receive(url, &request).await?;
            let count = messages.len();
            let out: Vec<MessageOut<'_>> = messages.iter().map(MessageOut::from).collect();
            let text = if out.is_empty() {
                "{}".to_owned()
            } else {
                to_json(&json!({ "Messages": out }))
            };
            Ok((text, count))
        }
        "DeleteMessage" => {
            let input: ReceiptIn = parse(body)?;
            model.delete_message(
                required("QueueUrl", &input.queue_url)?,
                required("ReceiptHandle", &input.receipt_handle)?,
            )?;
            one("{}".into())
        }
        "DeleteMessageBatch" | "ChangeMessageVisibilityBatch" => {
            let input: ReceiptBatchIn = parse(body)?;
            let url = required("QueueUrl", &input.queue_url)?;
            model.queue(url)?;
            let count = check_batch(input.entries.iter().map(|e| e.id.as_str()))?;
            let mut successful = Vec::new();
            let mut failed = Vec::new();
            for entry in &input.entries {
                if shared.entry_fails(operation) {
                    failed.push(to_json(&Failed::new(
                        &entry.id,
                        &injected_entry_failure(operation),
                    )));
                    continue;
                }
                let result = if operation == "DeleteMessageBatch" {
                    model.delete_message(url, &entry.receipt_handle)
                } else {
                    visibility_secs(entry.visibility_timeout)
                        .and_then(|secs| model.change_visibility(url, &entry.receipt_handle, secs))
                };
                match result {
                    Ok(()) => successful.push(to_json(&json!({ "Id": entry.id }))),
                    Err(e) => failed.push(to_json(&Failed::new(&entry.id, &e))),
                }
            }
            Ok((batch_answer(&successful, &failed), count))
        }
        "ChangeMessageVisibility" => {
            let input: ReceiptIn = parse(body)?;
            let secs = visibility_secs(input.visibility_timeout)?;
            model.change_visibility(
                required("QueueUrl", &input.queue_url)?,
                required("ReceiptHandle", &input.receipt_handle)?,
                secs,
            )?;
            one("{}".into())
        }
        other => Err(ApiError::unsupported(other)),
    }
}

fn visibility_secs(value: Option<i64>) -> ApiResult<u32> {
    match value {
        Some(secs) if (0..=43_200).contains(&secs) => Ok(secs as u32),
        Some(secs) => Err(ApiError::invalid(format!(
            "Value {secs} for parameter VisibilityTimeout is invalid. Reason: Must be between 0 and 43200."
        ))),
        None => Err(ApiError::missing("VisibilityTimeout")),
    }
}

fn new_message(input: SendIn) -> NewMessage {
    NewMessage {
        body: input.message_body,
        attributes: input.message_attributes,
        delay_secs: input.delay_seconds,
        group: input.message_group_id,
        dedup_id: input.message_deduplication_id,
    }
}

/// `{"Successful": [...], "Failed": [...]}` from entries already in JSON.
fn batch_answer(successful: &[String], failed: &[String]) -> String {
    format!(
        r#"{{"Successful":[{}],"Failed":[{}]}}"#,
        successful.join(","),
        failed.join(",")
    )
}
