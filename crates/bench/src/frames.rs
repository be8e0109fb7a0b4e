//! The messages the workloads move: Commands stamped with the time they
//! were produced, ClientMessages whose id is that time, and reading the
//! stamp back on arrival.

use std::time::{SystemTime, UNIX_EPOCH};

/// Padding that brings a Command to a typical size (about 200 bytes).
const PAD: &str = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz";

/// Nanoseconds since the Unix epoch, now (the same clock in every process).
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

/// A Command for `client_id`, stamped `t` (ns); `extra_pad` bytes more
/// padding make it bigger.
pub fn command(client_id: &str, seq: u64, t: u64, extra_pad: usize) -> String {
    let mut pad = String::from(PAD);
    while pad.len() < PAD.len() + extra_pad {
        pad.push_str(PAD);
    }
    pad.truncate(PAD.len() + extra_pad);
    format!(
        r#"{{"client_id":"{client_id}","command":"bench","data":{{"seq":{seq},"pad":"{pad}"}},"t":{t}}}"#
    )
}

/// A ClientMessage whose id is its send time (ns): the ack carries it back.
pub fn client_message(t: u64) -> String {
    format!(r#"{{"action":"bench","id":"{t}","data":{{"pad":"{PAD}"}}}}"#)
}

/// The stamp of a Command frame (`"t":<ns>`) or of an ack (`{"ack":"<ns>"}`).
pub fn stamp(frame: &str) -> Option<u64> {
    let digits = if let Some(rest) = frame.strip_prefix(r#"{"ack":""#) {
        rest
    } else {
        let at = frame.rfind(r#""t":"#)?;
        &frame[at + 4..]
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Whether a frame is an ack.
pub fn is_ack(frame: &str) -> bool {
    frame.starts_with(r#"{"ack":"#)
}

/// Whether a frame is an error reply.
pub fn is_error(frame: &str) -> bool {
    frame.starts_with(r#"{"error":"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_come_back_from_commands_and_acks() {
        let text = command("c-1", 7, 1_700_000_000_123_456_789, 0);
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["client_id"], "c-1");
        assert_eq!(parsed["command"], "bench");
        assert_eq!(stamp(&text), Some(1_700_000_000_123_456_789));
        assert!(command("c", 1, 1, 1000).len() > 1000);
        let message: serde_json::Value = serde_json::from_str(&client_message(42)).unwrap();
        assert_eq!(message["id"], "42");
        assert_eq!(stamp(r#"{"ack":"42"}"#), Some(42));
        assert!(is_ack(r#"{"ack":"42"}"#));
        assert!(is_error(r#"{"error":{"code":"x"}}"#));
        assert_eq!(stamp("{}"), None);
    }
}
