//! The per-connection uplink worker: hands the client's messages to the
//! [`Uplink`] use case one at a time, in the order they arrived, and writes
//! each reply back to the socket.
//!
//! It runs beside the session loop so that a slow publish never holds up the
//! Commands going the other way. When the session ends the worker still
//! publishes what it was already given (nothing received is silently lost),
//! but stops trying to reply once the socket is closed.

use std::sync::Arc;
use std::time::Duration;

use actix_ws::Session;
use domain::{ClientId, Reply, Uplink};
use tokio::sync::mpsc;
use tracing::debug;

/// How many inbound messages may wait for the worker before the session
/// stops reading from the socket.
pub(crate) const QUEUE: usize = 16;

/// One inbound message for the worker.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A text message, to be validated and published.
    Text(String),
    /// A message refused by the session (over the rate limit): only the
    /// reply is sent, in order with the replies to text messages. Boxed:
    /// rare, and it would make every slot of every connection's queue
    /// (tokio allocates 32 at once) about three times bigger.
    Refused(Box<Reply>),
}

/// Runs until the session drops its sender and the queue is empty.
pub(crate) async fn run(
    mut inbox: mpsc::Receiver<Inbound>,
    uplink: Arc<Uplink>,
    client_id: ClientId,
    mut session: Session,
    write_timeout: Duration,
) {
    let mut can_reply = true;
    while let Some(inbound) = inbox.recv().await {
        let reply = match inbound {
            Inbound::Text(text) => uplink.handle_text(&client_id, &text).await,
            Inbound::Refused(reply) => {
                uplink.count_rate_limited();
                Some(*reply)
            }
        };
        let Some(reply) = reply else { continue };
        if !can_reply {
            continue;
        }
        match tokio::time::timeout(write_timeout, session.text(reply.to_json())).await {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => {
                debug!("reply not sent: connection closed");
                can_reply = false;
            }
            Err(_elapsed) => {
                debug!("reply not sent: client stopped reading");
                can_reply = false;
            }
        }
    }
}
