//! Answers the proxy gives instead of forwarding: a [`CannedResponse`] as
//! given, or the AWS error shaped for the request's protocol — SQS's JSON
//! protocol (`__type`, `x-amzn-query-error`) or SNS's query protocol (an XML
//! `<ErrorResponse>`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::http::Message;

/// A complete HTTP answer the proxy sends instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers (`Content-Length` is added).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

static ANSWERS: AtomicU64 = AtomicU64::new(0);

fn request_id() -> String {
    format!("fault-proxy-{:08}", ANSWERS.fetch_add(1, Ordering::Relaxed))
}

impl CannedResponse {
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Injected",
        };
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        out.push_str(&self.body);
        out.into_bytes()
    }

    /// An AWS JSON-protocol error (SQS): `__type` and the query-compatible
    /// `x-amzn-query-error` header that the SDK reads the code from.
    pub fn aws_json_error(status: u16, code: &str, fault: &str, message: &str) -> Self {
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{code}"),
            "message": message,
        })
        .to_string();
        Self {
            status,
            headers: vec![
                ("Content-Type".into(), "application/x-amz-json-1.0".into()),
                ("x-amzn-query-error".into(), format!("{code};{fault}")),
                ("x-amzn-RequestId".into(), request_id()),
            ],
            body,
        }
    }

    /// An AWS query-protocol error (SNS): an XML `<ErrorResponse>`.
    pub fn aws_query_error(status: u16, code: &str, fault: &str, message: &str) -> Self {
        let body = format!(
            "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error>\
             <Type>{fault}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>{}</RequestId></ErrorResponse>",
            request_id()
        );
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/xml".into())],
            body,
        }
    }
}

fn protocol_error(request: &Message, status: u16, code: &str, fault: &str) -> CannedResponse {
    let message = "injected by the fault proxy";
    if request.is_json_protocol() {
        CannedResponse::aws_json_error(status, code, fault, message)
    } else {
        CannedResponse::aws_query_error(status, code, fault, message)
    }
}

pub(super) fn throttling(request: &Message) -> CannedResponse {
    if request.is_json_protocol() {
        let mut canned = CannedResponse::aws_json_error(
            400,
            "ThrottlingException",
            "Sender",
            "Rate exceeded (injected by the fault proxy)",
        );
        // SQS names the code `Throttling` in its query-compatible header.
        for (name, value) in &mut canned.headers {
            if name == "x-amzn-query-error" {
                *value = "Throttling;Sender".into();
            }
        }
        canned
    } else {
        protocol_error(request, 400, "Throttling", "Sender")
    }
}

pub(super) fn server_error(request: &Message) -> CannedResponse {
    protocol_error(request, 500, "InternalError", "Receiver")
}
