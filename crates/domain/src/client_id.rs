//! The validated identity of a WebSocket client.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest client id accepted, in bytes (docs/protocol.md).
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// A client id: 1..=256 bytes of UTF-8 without control characters.
///
/// Every `ClientId` in the program went through [`ClientId::parse`], so code
/// that holds one never re-validates it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ClientId(String);

/// Why a string is not a valid [`ClientId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientIdError {
    /// The id is the empty string.
    #[error("client id is empty")]
    Empty,
    /// The id is longer than [`MAX_CLIENT_ID_BYTES`].
    #[error("client id is {0} bytes long, the limit is {MAX_CLIENT_ID_BYTES}")]
    TooLong(usize),
    /// The id holds a control character (U+0000..U+001F, U+007F..U+009F).
    #[error("client id contains a control character at byte {0}")]
    ControlCharacter(usize),
}

impl ClientId {
    /// Validates `raw` as a client id.
    pub fn parse(raw: impl Into<String>) -> Result<Self, ClientIdError> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(ClientIdError::Empty);
        }
        if raw.len() > MAX_CLIENT_ID_BYTES {
            return Err(ClientIdError::TooLong(raw.len()));
        }
        if let Some((at, _)) = raw.char_indices().find(|(_, c)| c.is_control()) {
            return Err(ClientIdError::ControlCharacter(at));
        }
        Ok(Self(raw))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for ClientId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ClientId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        ClientId::parse(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids_up_to_the_limit() {
        assert_eq!(ClientId::parse("client123").unwrap().as_str(), "client123");
        assert_eq!(ClientId::parse("ü-é 漢").unwrap().as_str(), "ü-é 漢");
        let longest = "x".repeat(MAX_CLIENT_ID_BYTES);
        assert_eq!(ClientId::parse(longest.clone()).unwrap().as_str(), longest);
    }

    #[test]
    fn refuses_empty_long_and_control_characters() {
        assert_eq!(ClientId::parse(""), Err(ClientIdError::Empty));
        assert_eq!(
            ClientId::parse("x".repeat(MAX_CLIENT_ID_BYTES + 1)),
            Err(ClientIdError::TooLong(MAX_CLIENT_ID_BYTES + 1))
        );
        assert_eq!(
            ClientId::parse("ab\ncd"),
            Err(ClientIdError::ControlCharacter(2))
        );
        assert_eq!(
            ClientId::parse("\u{7f}"),
            Err(ClientIdError::ControlCharacter(0))
        );
    }

    #[test]
    fn deserializing_validates() {
        let ok: ClientId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(ok.as_str(), "abc");
        let err = serde_json::from_str::<ClientId>("\"\"").unwrap_err();
        assert!(err.to_string().contains("client id is empty"), "{err}");
    }
}
