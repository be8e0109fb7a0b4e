//! The ClientMessage (client → backend): validation of a text frame, the
//! server-side stamping of `client_id`, and the replies the client gets.

use serde_json::{Map, Value};

use crate::client_id::ClientId;

/// A validated ClientMessage, not yet stamped with its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    action: String,
    id: Option<String>,
    fields: Map<String, Value>,
}

/// Why a text frame is not a ClientMessage. The text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not JSON.
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("frame must be a JSON object")]
    NotAnObject,
    /// No `action`, or not a string, or empty.
    #[error("frame needs a non-empty string field \"action\"")]
    MissingAction,
    /// `action` starts with `$`, the prefix of the bridge's own events
    /// (`$connect`, `$disconnect`): a client must not be able to forge them.
    #[error("actions starting with \"$\" are reserved for the bridge's own events")]
    ReservedAction,
    /// `id` present but not a string.
    #[error("field \"id\" must be a string")]
    IdNotString,
    /// `ack_delivery` present but not a string.
    #[error("field \"ack_delivery\" must be a string")]
    AckNotString,
}

/// An event ready for the [`crate::ports::EventSink`]: the ClientMessage JSON
/// with `client_id` set by the server, and the attributes subscriptions filter on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundEvent {
    /// The connection's client id (attribute `client_id`).
    pub client_id: ClientId,
    /// The message's action (attribute `action`).
    pub action: String,
    /// The JSON body to publish.
    pub body: String,
}

impl ClientMessage {
    /// Parses and validates one text frame.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(FrameError::NotAnObject);
        };
        Self::from_object(fields)
    }

    /// Validates an already parsed JSON object.
    pub(crate) fn from_object(fields: Map<String, Value>) -> Result<Self, FrameError> {
        let action = match fields.get("action") {
            Some(Value::String(a)) if a.starts_with('$') => return Err(FrameError::ReservedAction),
            Some(Value::String(a)) if !a.is_empty() => a.clone(),
            _ => return Err(FrameError::MissingAction),
        };
        let id = match fields.get("id") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.clone()),
            Some(_) => return Err(FrameError::IdNotString),
        };
        Ok(Self { action, id, fields })
    }

    /// The client-chosen id that the ack or error reply echoes.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The message's action.
    pub fn action(&self) -> &str {
        &self.action
    }

    /// Stamps the sender's id over whatever the client wrote in `client_id`
    /// (a client cannot speak for another) and renders the event to publish.
    pub fn into_event(mut self, sender: &ClientId) -> OutboundEvent {
        self.fields.insert(
            "client_id".to_owned(),
            Value::String(sender.as_str().to_owned()),
        );
        OutboundEvent {
            client_id: sender.clone(),
            action: self.action,
            body: Value::Object(self.fields).to_string(),
        }
    }
}

/// A frame the bridge sends back to a client about its own messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The message with this id was accepted by the event sink.
    Ack(String),
    /// The message could not be handled.
    Error {
        /// Stable machine-readable code (`invalid_message`, `publish_failed`, …).
        code: &'static str,
        /// Human-readable explanation.
        message: String,
        /// The client's id for the message, when it gave one.
        id: Option<String>,
    },
}

/// Error code for a frame that is not a valid ClientMessage.
pub const INVALID_MESSAGE: &str = "invalid_message";
/// Error code for a valid message the event sink refused for good.
pub const PUBLISH_REJECTED: &str = "publish_rejected";
/// Error code for a valid message the event sink could not take in time.
pub const PUBLISH_FAILED: &str = "publish_failed";
/// Error code for a message refused, unread, because its connection is over
/// its message rate.
pub const RATE_LIMITED: &str = "rate_limited";

impl Reply {
    /// An `invalid_message` error without an id.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Error {
            code: INVALID_MESSAGE,
            message: message.into(),
            id: None,
        }
    }

    /// A `rate_limited` error for the text frame `text`, carrying its `id`
    /// when it is a JSON object with a string `id` (the frame is not
    /// otherwise validated: it is refused whatever it holds).
    pub fn rate_limited(text: &str) -> Self {
        #[derive(serde::Deserialize)]
        struct IdOnly {
            #[serde(default)]
            id: Option<Value>,
        }
        let id = match serde_json::from_str::<IdOnly>(text) {
            Ok(IdOnly {
                id: Some(Value::String(id)),
            }) => Some(id),
            _ => None,
        };
        Self::Error {
            code: RATE_LIMITED,
            message: "too many messages: over this connection's rate limit; the message was not published"
                .to_owned(),
            id,
        }
    }

    /// The reply as the JSON text frame the client receives.
    pub fn to_json(&self) -> String {
        let value = match self {
            Reply::Ack(id) => serde_json::json!({ "ack": id }),
            Reply::Error { code, message, id } => {
                let mut obj = serde_json::json!({ "error": { "code": code, "message": message } });
                if let Some(id) = id {
                    obj["id"] = Value::String(id.clone());
                }
                obj
            }
        };
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamps_client_id_over_a_forged_one_and_keeps_other_fields() {
        let msg = ClientMessage::parse(
            r#"{"action":"go","client_id":"mallory","data":{"a":1},"x":true}"#,
        )
        .unwrap();
        let event = msg.into_event(&ClientId::parse("alice").unwrap());
        assert_eq!(event.client_id.as_str(), "alice");
        assert_eq!(event.action, "go");
        let body: Value = serde_json::from_str(&event.body).unwrap();
        assert_eq!(
            body,
            json!({"action":"go","client_id":"alice","data":{"a":1},"x":true})
        );
    }

    #[test]
    fn invalid_frames_are_named() {
        assert!(matches!(
            ClientMessage::parse("{"),
            Err(FrameError::NotJson(_))
        ));
        assert_eq!(ClientMessage::parse("[1]"), Err(FrameError::NotAnObject));
        assert_eq!(ClientMessage::parse("{}"), Err(FrameError::MissingAction));
        assert_eq!(
            ClientMessage::parse(r#"{"action":""}"#),
            Err(FrameError::MissingAction)
        );
        assert_eq!(
            ClientMessage::parse(r#"{"action":3}"#),
            Err(FrameError::MissingAction)
        );
        assert_eq!(
            ClientMessage::parse(r#"{"action":"a","id":5}"#),
            Err(FrameError::IdNotString)
        );
        for reserved in ["$connect", "$disconnect", "$anything"] {
            assert_eq!(
                ClientMessage::parse(&format!(r#"{{"action":"{reserved}"}}"#)),
                Err(FrameError::ReservedAction)
            );
        }
        assert!(ClientMessage::parse(r#"{"action":"pay$"}"#).is_ok());
    }

    #[test]
    fn a_rate_limited_reply_carries_the_id_when_there_is_one() {
        let with_id = Reply::rate_limited(r#"{"action":"a","id":"m-7","data":[1]}"#);
        let rendered: Value = serde_json::from_str(&with_id.to_json()).unwrap();
        assert_eq!(rendered["error"]["code"], "rate_limited");
        assert_eq!(rendered["id"], "m-7");
        for no_id in [
            r#"{"action":"a"}"#,
            r#"{"action":"a","id":5}"#,
            "not json",
            "[1,2]",
        ] {
            let rendered: Value =
                serde_json::from_str(&Reply::rate_limited(no_id).to_json()).unwrap();
            assert_eq!(rendered["error"]["code"], "rate_limited", "{no_id}");
            assert!(rendered.get("id").is_none(), "{no_id}: {rendered}");
        }
    }

    #[test]
    fn replies_render_as_the_spec_says() {
        let ack: Value = serde_json::from_str(&Reply::Ack("7".into()).to_json()).unwrap();
        assert_eq!(ack, json!({"ack": "7"}));
        let err = Reply::Error {
            code: PUBLISH_FAILED,
            message: "down".into(),
            id: Some("7".into()),
        };
        let err: Value = serde_json::from_str(&err.to_json()).unwrap();
        assert_eq!(
            err,
            json!({"error": {"code": "publish_failed", "message": "down"}, "id": "7"})
        );
        let invalid: Value = serde_json::from_str(&Reply::invalid("bad").to_json()).unwrap();
        assert_eq!(
            invalid,
            json!({"error": {"code": "invalid_message", "message": "bad"}})
        );
    }
}
