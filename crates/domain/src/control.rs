//! Control messages (docs/control-plane.md): the admin API's `disconnect` and `send`,
//! travelling the bus like Commands so they reach whichever replica holds
//! the client, in every mode. They are Commands with a reserved name —
//! routed, de-duplicated, retried and given up exactly like one:
//!
//! ```json
//! {"client_id": "alice", "command": "$disconnect", "code": 4000, "reason": "session revoked", "connection_id": "17"}
//! {"client_id": "alice", "command": "$send", "frame": {"notice": "maintenance at 02:00"}}
//! ```
//!
//! `code` defaults to 1000 and must be 1000 or 3000–4999; `reason` is at
//! most 123 bytes; `connection_id` is optional. `$send` writes `frame` as
//! it is, with no delivery id (nothing to acknowledge).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::ports::Frame;

/// `command` of a disconnect order.
pub const DISCONNECT: &str = "$disconnect";
/// `command` of a direct frame.
pub const SEND: &str = "$send";
/// Longest close reason a close frame carries (RFC 6455).
pub const MAX_REASON_BYTES: usize = 123;

/// What a control message asks of the replica that holds the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close the client's connections (only one, when named).
    Disconnect {
        /// The connection to close, else all of the client's.
        connection_id: Option<u64>,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Write this frame to each of the client's connections.
    Send {
        /// The frame, as given.
        frame: Frame,
    },
}

#[derive(Deserialize)]
struct Wire<'a> {
    command: &'a str,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    connection_id: Option<String>,
    #[serde(borrow, default)]
    frame: Option<&'a RawValue>,
}

impl Control {
    /// The control message `json` (a decoded Command) holds: `None` for an
    /// ordinary Command (cheap: no parse unless a reserved name may be
    /// there), `Some(Err(why))` for a malformed one.
    pub fn of(json: &str) -> Option<Result<Self, String>> {
        if !json.contains("\"$") {
            return None;
        }
        let wire: Wire<'_> = serde_json::from_str(json).ok()?;
        match wire.command {
            DISCONNECT => Some(Self::disconnect(wire)),
            SEND => Some(match wire.frame {
                Some(frame) => Ok(Self::Send {
                    frame: Arc::from(frame.get()),
                }),
                None => Err("$send without a frame".into()),
            }),
            _ => None,
        }
    }

    fn disconnect(wire: Wire<'_>) -> Result<Self, String> {
        let code = wire.code.unwrap_or(1000);
        if code != 1000 && !(3000..=4999).contains(&code) {
            return Err(format!(
                "$disconnect code {code}: must be 1000 or 3000-4999"
            ));
        }
        let reason = wire.reason.unwrap_or_default();
        if reason.len() > MAX_REASON_BYTES {
            return Err(format!("$disconnect reason over {MAX_REASON_BYTES} bytes"));
        }
        let connection_id = match wire.connection_id {
            None => None,
            Some(id) => Some(
                id.parse()
                    .map_err(|_| format!("$disconnect connection_id {id:?} is not a number"))?,
            ),
        };
        Ok(Self::Disconnect {
            connection_id,
            code,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_commands_are_read_and_checked() {
        assert_eq!(Control::of(r#"{"client_id":"a","command":"reboot"}"#), None);
        assert_eq!(
            Control::of(
                r#"{"client_id":"a","command":"$disconnect","code":4001,"reason":"bye","connection_id":"17"}"#
            ),
            Some(Ok(Control::Disconnect {
                connection_id: Some(17),
                code: 4001,
                reason: "bye".into()
            }))
        );
        assert_eq!(
            Control::of(r#"{"client_id":"a","command":"$disconnect"}"#),
            Some(Ok(Control::Disconnect {
                connection_id: None,
                code: 1000,
                reason: String::new()
            }))
        );
        assert_eq!(
            Control::of(r#"{"client_id":"a","command":"$send","frame":{"n": [1, 2]}}"#),
            Some(Ok(Control::Send {
                frame: Arc::from(r#"{"n": [1, 2]}"#)
            }))
        );
        assert!(matches!(
            Control::of(r#"{"client_id":"a","command":"$disconnect","code":1006}"#),
            Some(Err(_))
        ));
        assert!(matches!(
            Control::of(r#"{"client_id":"a","command":"$send"}"#),
            Some(Err(_))
        ));
        let long = format!(
            r#"{{"client_id":"a","command":"$disconnect","reason":"{}"}}"#,
            "x".repeat(124)
        );
        assert!(matches!(Control::of(&long), Some(Err(_))));
        // Another `$` name is an ordinary Command.
        assert_eq!(Control::of(r#"{"client_id":"a","command":"$other"}"#), None);
    }
}
