//! Why a session ends, and the close frame each reason is answered with
//! (docs/protocol.md, Close codes; RFC 6455 §7.4.1).

use std::io;

use actix_web::error::PayloadError;
use actix_ws::{CloseCode, CloseReason, ProtocolError};

/// Why a session loop stopped.
#[derive(Debug)]
pub(crate) enum Exit {
    /// The client sent a Close frame: answered with 1000.
    ClientClosed(Option<CloseReason>),
    /// The connection is gone (TCP closed or broken, socket writer dropped):
    /// no close frame can be sent.
    ClientGone,
    /// The server is shutting down: 1001.
    Shutdown,
    /// The outgoing queue overflowed: 1013.
    Slow,
    /// A write could not be handed to the socket within the client timeout
    /// (the client stopped reading): 1013.
    WriteStalled,
    /// Nothing was heard from the client within the client timeout: 1001.
    IdleTimeout,
    /// A frame, or a message reassembled from fragments, over the limit: 1009.
    TooBig {
        /// The limit in bytes.
        limit: usize,
    },
    /// A fragmented message not completed within its deadline: 1008. A
    /// policy violation, not a size problem: the client holds server memory
    /// without finishing what it started.
    FragmentTimeout,
    /// The instance holds as many bytes of incomplete messages as its budget
    /// allows: 1013. The message itself is within the limit (that would be
    /// 1009), the server is at capacity: the same message may go through
    /// later, once other connections finish theirs.
    FragmentBudget,
    /// A text message that is not UTF-8: 1007.
    InvalidUtf8,
    /// A binary message on a connection that takes only text: 1003.
    Binary,
    /// Too many messages over the rate limit within the abuse window: 1008.
    RateAbuse,
    /// An operator closed it (admin API) with this code and reason.
    Kicked {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The token the connection was opened with expired, and no fresh one
    /// came: 1008 `token_expired`.
    TokenExpired,
    /// Any other violation of the WebSocket protocol: 1002.
    Protocol(String),
    /// The session itself broke (cannot happen while the code is right): 1011.
    Internal(&'static str),
}

impl Exit {
    /// Classifies an error from the inbound message stream.
    pub(crate) fn from_protocol_error(error: ProtocolError, limit: usize) -> Self {
        match error {
            ProtocolError::Overflow => Self::TooBig { limit },
            // `FrameLimit` refused a frame header; the stream wraps its error.
            ProtocolError::Io(e) if is_payload_overflow(&e) => Self::TooBig { limit },
            // The stream reports a text frame that is not UTF-8 as InvalidData
            // around a Utf8Error; the codec reports reserved bits set as
            // InvalidData around a message: a protocol error (1002).
            ProtocolError::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
                if e.get_ref()
                    .is_some_and(|inner| inner.is::<std::str::Utf8Error>())
                {
                    Self::InvalidUtf8
                } else {
                    Self::Protocol(e.to_string())
                }
            }
            // Every other I/O error is the transport failing under it.
            ProtocolError::Io(_) => Self::ClientGone,
            other => Self::Protocol(other.to_string()),
        }
    }

    /// The close frame to send, if one can be sent at all.
    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        let (code, description) = match self {
            Self::ClientGone => return None,
            Self::ClientClosed(_) => return Some(CloseCode::Normal.into()),
            Self::Shutdown => (CloseCode::Away, "server shutting down".to_owned()),
            Self::Slow => (
                CloseCode::Again,
                "client too slow: outgoing queue full".to_owned(),
            ),
            Self::WriteStalled => (CloseCode::Again, "client stopped reading".to_owned()),
            Self::IdleTimeout => (CloseCode::Away, "heartbeat timeout".to_owned()),
            Self::TooBig { limit } => (CloseCode::Size, format!("message over {limit} bytes")),
            Self::FragmentTimeout => (
                CloseCode::Policy,
                "fragmented message not completed in time".to_owned(),
            ),
            Self::FragmentBudget => (
                CloseCode::Again,
                "server holds too many incomplete messages, try again later".to_owned(),
            ),
            Self::InvalidUtf8 => (CloseCode::Invalid, "text is not valid UTF-8".to_owned()),
            Self::Binary => (
                CloseCode::Unsupported,
                "binary frames are not supported".to_owned(),
            ),
            Self::RateAbuse => (
                CloseCode::Policy,
                "message rate limit exceeded repeatedly".to_owned(),
            ),
            Self::TokenExpired => (CloseCode::Policy, "token_expired".to_owned()),
            Self::Kicked { code, reason } => (CloseCode::from(*code), reason.clone()),
            Self::Protocol(what) => (CloseCode::Protocol, what.clone()),
            Self::Internal(what) => (CloseCode::Error, (*what).to_owned()),
        };
        Some(CloseReason {
            code,
            description: Some(description),
        })
    }

    /// A short, stable name for logs.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::ClientClosed(_) => "client_closed",
            Self::ClientGone => "client_gone",
            Self::Shutdown => "shutdown",
            Self::Slow => "slow_client",
            Self::WriteStalled => "write_stalled",
            Self::IdleTimeout => "idle_timeout",
            Self::TooBig { .. } => "too_big",
            Self::FragmentTimeout => "fragment_timeout",
            Self::FragmentBudget => "fragment_budget",
            Self::InvalidUtf8 => "invalid_utf8",
            Self::Binary => "binary_refused",
            Self::RateAbuse => "rate_abuse",
            Self::TokenExpired => "token_expired",
            Self::Kicked { .. } => "disconnected_by_operator",
            Self::Protocol(_) => "protocol_error",
            Self::Internal(_) => "internal_error",
        }
    }
}

fn is_payload_overflow(error: &io::Error) -> bool {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<PayloadError>())
        .is_some_and(|inner| matches!(inner, PayloadError::Overflow))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(exit: &Exit) -> Option<u16> {
        exit.close_reason().map(|r| u16::from(r.code))
    }

    #[test]
    fn each_exit_has_the_spec_close_code() {
        assert_eq!(code(&Exit::ClientClosed(None)), Some(1000));
        assert_eq!(code(&Exit::ClientGone), None);
        assert_eq!(code(&Exit::Shutdown), Some(1001));
        assert_eq!(code(&Exit::IdleTimeout), Some(1001));
        assert_eq!(code(&Exit::Protocol("x".into())), Some(1002));
        assert_eq!(code(&Exit::Binary), Some(1003));
        assert_eq!(code(&Exit::InvalidUtf8), Some(1007));
        assert_eq!(code(&Exit::RateAbuse), Some(1008));
        assert_eq!(code(&Exit::TokenExpired), Some(1008));
        assert_eq!(code(&Exit::FragmentTimeout), Some(1008));
        assert_eq!(code(&Exit::TooBig { limit: 1 }), Some(1009));
        assert_eq!(code(&Exit::Internal("x")), Some(1011));
        assert_eq!(code(&Exit::Slow), Some(1013));
        assert_eq!(code(&Exit::WriteStalled), Some(1013));
        assert_eq!(code(&Exit::FragmentBudget), Some(1013));
    }

    #[test]
    fn stream_errors_are_classified() {
        let limit = 10;
        assert!(matches!(
            Exit::from_protocol_error(ProtocolError::Overflow, limit),
            Exit::TooBig { limit: 10 }
        ));
        let bytes = vec![0xffu8];
        let not_utf8 = std::str::from_utf8(&bytes).unwrap_err();
        assert!(matches!(
            Exit::from_protocol_error(
                ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, not_utf8)),
                limit
            ),
            Exit::InvalidUtf8
        ));
        assert!(matches!(
            Exit::from_protocol_error(
                ProtocolError::Io(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "Received a frame with non-zero reserved bits"
                )),
                limit
            ),
            Exit::Protocol(_)
        ));
        assert!(matches!(
            Exit::from_protocol_error(ProtocolError::Io(io::Error::other("reset")), limit),
            Exit::ClientGone
        ));
        assert!(matches!(
            Exit::from_protocol_error(
                ProtocolError::Io(io::Error::other(PayloadError::Overflow)),
                limit
            ),
            Exit::TooBig { limit: 10 }
        ));
        assert!(matches!(
            Exit::from_protocol_error(ProtocolError::UnmaskedFrame, limit),
            Exit::Protocol(_)
        ));
        assert!(matches!(
            Exit::from_protocol_error(ProtocolError::ContinuationNotStarted, limit),
            Exit::Protocol(_)
        ));
    }
}
