//! The gate every complete data message of a connection passes: it decides
//! what the session loop does with the message ([`Handling`]). In bridge
//! mode a binary message closes the connection (1003), and the control
//! frames (`ack_delivery`, `auth`) pass first, never rate-limited; every
//! other message takes a token from the connection's bucket (see `rate`),
//! and one over the rate is refused with a `rate_limited` error, or closes
//! the connection (1008) when too many were refused within the abuse window.
//!
//! It reads tokio's clock, so its rules are tested on paused time.

use actix_web::web::Bytes;
use actix_ws::Message;
use domain::{ClientFrame, Reply};
use tokio::time::Instant;
use tracing::debug;

use super::{SessionMode, SessionSettings};
use crate::close::Exit;
use crate::rate::{Strikes, TokenBucket};
use crate::uplink_worker::Inbound;

/// A complete data message from the client.
pub(super) enum Data {
    Text(String),
    Binary(Bytes),
}

/// What the loop does with one data message.
pub(super) enum Handling {
    /// Take this acknowledgement now.
    Ack(String),
    /// Check this fresh token now.
    Auth(String),
    /// Hand it to the uplink worker.
    Uplink(Inbound),
    /// Write it back (echo mode).
    Echo(Message),
    /// Write this error frame (echo mode has no uplink worker to order replies).
    Reply(Reply),
}

/// The per-connection message rate limit.
pub(super) struct RateGate {
    bucket: TokenBucket,
    strikes: Strikes,
}

impl RateGate {
    pub(super) fn new(settings: &SessionSettings) -> Self {
        let now = Instant::now();
        Self {
            bucket: TokenBucket::new(settings.message_rate, now),
            strikes: Strikes::new(settings.abuse),
        }
    }

    /// Decides what happens to one data message.
    pub(super) fn handle(&mut self, data: Data, mode: SessionMode) -> Result<Handling, Exit> {
        if let (SessionMode::Bridge, Data::Binary(_)) = (mode, &data) {
            return Err(Exit::Binary);
        }
        if let (SessionMode::Bridge, Data::Text(text)) = (mode, &data) {
            if let Some(delivery_id) = ClientFrame::ack_delivery(text) {
                return Ok(Handling::Ack(delivery_id));
            }
            if let Some(token) = ClientFrame::auth_token(text) {
                return Ok(Handling::Auth(token));
            }
        }
        let now = Instant::now();
        if !self.bucket.take(now) {
            if self.strikes.strike(now) {
                return Err(Exit::RateAbuse);
            }
            let reply = match &data {
                Data::Text(text) => Reply::rate_limited(text),
                Data::Binary(_) => Reply::rate_limited(""),
            };
            debug!("message over the rate limit, refused");
            return Ok(match mode {
                SessionMode::Bridge => Handling::Uplink(Inbound::Refused(Box::new(reply))),
                SessionMode::Echo => Handling::Reply(reply),
            });
        }
        Ok(match (mode, data) {
            (SessionMode::Bridge, Data::Text(text)) => Handling::Uplink(Inbound::Text(text)),
            (SessionMode::Echo, Data::Text(text)) => Handling::Echo(Message::Text(text.into())),
            (_, Data::Binary(bytes)) => Handling::Echo(Message::Binary(bytes)),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use domain::client_message::RATE_LIMITED;

    use super::*;
    use crate::rate::{AbusePolicy, MessageRate};

    fn rate_gate(per_sec: u32, burst: u32, strikes: u32) -> RateGate {
        RateGate::new(&SessionSettings {
            message_rate: MessageRate { per_sec, burst },
            abuse: AbusePolicy {
                strikes,
                window: Duration::from_secs(60),
            },
            ..SessionSettings::default()
        })
    }

    fn text(text: &str) -> Data {
        Data::Text(text.to_owned())
    }

    /// The id of the `rate_limited` error `handling` refuses its message
    /// with; `None` when it does not refuse it.
    fn refused_id(handling: &Handling) -> Option<Option<String>> {
        let reply = match handling {
            Handling::Uplink(Inbound::Refused(reply)) => &**reply,
            Handling::Reply(reply) => reply,
            _ => return None,
        };
        match reply {
            Reply::Error { code, id, .. } if *code == RATE_LIMITED => Some(id.clone()),
            _ => None,
        }
    }

    fn passed(handling: &Handling) -> Option<&str> {
        match handling {
            Handling::Uplink(Inbound::Text(text)) => Some(text),
            _ => None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn messages_over_the_rate_are_refused_with_their_id_until_the_bucket_refills() {
        let mut gate = rate_gate(1, 3, 100);
        let message = |n: u32| text(&format!(r#"{{"action":"go","id":"m{n}"}}"#));
        // The burst of 3 goes through; the next two are refused, each with its id.
        for n in 0..3 {
            let handling = gate.handle(message(n), SessionMode::Bridge).unwrap();
            assert!(passed(&handling).is_some(), "m{n} passes");
        }
        for n in 3..5 {
            let handling = gate.handle(message(n), SessionMode::Bridge).unwrap();
            assert_eq!(refused_id(&handling), Some(Some(format!("m{n}"))));
        }
        // Without an id, the error has none.
        let handling = gate
            .handle(text(r#"{"action":"go"}"#), SessionMode::Bridge)
            .unwrap();
        assert_eq!(refused_id(&handling), Some(None));

        // Once the bucket refills, messages pass again.
        tokio::time::advance(Duration::from_millis(1100)).await;
        let later = r#"{"action":"go","id":"later"}"#;
        let handling = gate.handle(text(later), SessionMode::Bridge).unwrap();
        assert_eq!(passed(&handling), Some(later));
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_close_only_when_enough_fall_within_the_abuse_window() {
        let mut gate = rate_gate(1, 1, 3);
        assert!(passed(&gate.handle(text("{}"), SessionMode::Bridge).unwrap()).is_some());
        for _ in 0..2 {
            let handling = gate.handle(text("{}"), SessionMode::Bridge).unwrap();
            assert!(refused_id(&handling).is_some());
        }
        assert!(matches!(
            gate.handle(text("{}"), SessionMode::Bridge),
            Err(Exit::RateAbuse)
        ));

        // The same refusals spread wider than the window never close.
        let mut gate = rate_gate(1, 1, 3);
        assert!(passed(&gate.handle(text("{}"), SessionMode::Bridge).unwrap()).is_some());
        for _ in 0..4 {
            let first = gate.handle(text("{}"), SessionMode::Bridge).unwrap();
            let second = gate.handle(text("{}"), SessionMode::Bridge).unwrap();
            assert!(passed(&first).is_none() && refused_id(&first).is_some());
            assert!(refused_id(&second).is_some());
            tokio::time::advance(Duration::from_secs(61)).await;
            // The refill lets one through; the window starts afresh.
            assert!(passed(&gate.handle(text("{}"), SessionMode::Bridge).unwrap()).is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acknowledgements_and_tokens_are_never_rate_limited() {
        let mut gate = rate_gate(1, 1, 2);
        assert!(passed(&gate.handle(text("{}"), SessionMode::Bridge).unwrap()).is_some());
        for _ in 0..10 {
            let ack = gate
                .handle(text(r#"{"ack_delivery":"7"}"#), SessionMode::Bridge)
                .unwrap();
            assert!(matches!(ack, Handling::Ack(id) if id == "7"));
            let auth = gate
                .handle(text(r#"{"auth":"t"}"#), SessionMode::Bridge)
                .unwrap();
            assert!(matches!(auth, Handling::Auth(token) if token == "t"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn echo_mode_writes_back_under_the_same_rate_and_bridge_refuses_binary() {
        let mut gate = rate_gate(1, 2, 100);
        for message in ["m0", "m1"] {
            let handling = gate.handle(text(message), SessionMode::Echo).unwrap();
            assert!(matches!(handling, Handling::Echo(Message::Text(t)) if t == message));
        }
        let handling = gate.handle(text("m2"), SessionMode::Echo).unwrap();
        assert!(matches!(handling, Handling::Reply(_)));
        assert_eq!(refused_id(&handling), Some(None));

        let binary = || Data::Binary(Bytes::from_static(b"\x01"));
        tokio::time::advance(Duration::from_secs(1)).await;
        let echoed = gate.handle(binary(), SessionMode::Echo).unwrap();
        assert!(matches!(echoed, Handling::Echo(Message::Binary(b)) if b[..] == [1u8]));
        assert!(matches!(
            gate.handle(binary(), SessionMode::Bridge),
            Err(Exit::Binary)
        ));
    }
}
