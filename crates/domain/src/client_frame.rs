//! What a client's text frame can be: a ClientMessage to publish, or the
//! acknowledgement of a Command delivered with `ack=true`.

use serde_json::Value;

use crate::client_message::{ClientMessage, FrameError};

/// A decoded client text frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    /// A ClientMessage for the events topic.
    Message(ClientMessage),
    /// `{"ack_delivery": "<delivery id>"}`.
    AckDelivery(String),
    /// `{"auth": "<jwt>"}`: a fresh token for the connection (docs/control-plane.md, Token lifecycle).
    Auth(String),
}

impl ClientFrame {
    /// Parses one text frame (a single JSON parse for either kind).
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| FrameError::NotJson(e.to_string()))?;
        let Value::Object(fields) = value else {
            return Err(FrameError::NotAnObject);
        };
        if !fields.contains_key("action") {
            match fields.get("ack_delivery") {
                Some(Value::String(id)) => return Ok(Self::AckDelivery(id.clone())),
                Some(_) => return Err(FrameError::AckNotString),
                None => {}
            }
            if let Some(Value::String(token)) = fields.get("auth") {
                return Ok(Self::Auth(token.clone()));
            }
        }
        ClientMessage::from_object(fields).map(Self::Message)
    }

    /// The token when `text` is an `{"auth": …}` frame; cheap for every
    /// other frame (no parse unless the key appears at all).
    pub fn auth_token(text: &str) -> Option<String> {
        if !text.contains("\"auth\"") {
            return None;
        }
        match Self::parse(text) {
            Ok(Self::Auth(token)) => Some(token),
            _ => None,
        }
    }

    /// The delivery id when `text` is an acknowledgement; cheap for every
    /// other frame (no parse unless the key appears at all).
    pub fn ack_delivery(text: &str) -> Option<String> {
        if !text.contains("\"ack_delivery\"") {
            return None;
        }
        match Self::parse(text) {
            Ok(Self::AckDelivery(id)) => Some(id),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_acknowledgements_from_messages() {
        assert_eq!(
            ClientFrame::parse(r#"{"ack_delivery":"17"}"#),
            Ok(ClientFrame::AckDelivery("17".into()))
        );
        assert_eq!(
            ClientFrame::parse(r#"{"ack_delivery":17}"#),
            Err(FrameError::AckNotString)
        );
        let Ok(ClientFrame::Message(m)) = ClientFrame::parse(r#"{"action":"a","ack_delivery":1}"#)
        else {
            panic!("a frame with an action is a message");
        };
        assert_eq!(m.action(), "a");
        assert_eq!(ClientFrame::parse("{}"), Err(FrameError::MissingAction));
        assert_eq!(
            ClientFrame::ack_delivery(r#" {"ack_delivery" : "9"}"#),
            Some("9".into())
        );
        assert_eq!(
            ClientFrame::ack_delivery(r#"{"action":"a","ack_delivery":"9"}"#),
            None
        );
        assert_eq!(
            ClientFrame::ack_delivery(r#"{"action":"ack_delivery"}"#),
            None
        );
        assert_eq!(ClientFrame::parse("[]"), Err(FrameError::NotAnObject));
        assert_eq!(
            ClientFrame::parse(r#"{"auth":"a.b.c"}"#),
            Ok(ClientFrame::Auth("a.b.c".into()))
        );
        assert_eq!(
            ClientFrame::auth_token(r#"{"auth":"a.b.c"}"#),
            Some("a.b.c".into())
        );
        assert_eq!(
            ClientFrame::auth_token(r#"{"action":"auth","auth":"x"}"#),
            None
        );
        assert_eq!(ClientFrame::auth_token(r#"{"ack_delivery":"1"}"#), None);
    }
}
