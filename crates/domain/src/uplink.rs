//! The uplink use case: validate a client's text frame, stamp its
//! `client_id`, publish it, and say what to answer.

use std::sync::Arc;

use tracing::{debug, warn};

use crate::client_id::ClientId;
use crate::client_message::{ClientMessage, Reply, PUBLISH_FAILED, PUBLISH_REJECTED};
use crate::ports::{EventSink, PublishError};
use crate::stats::{bump, Stats};

/// The uplink: shared by every connection.
pub struct Uplink {
    sink: Arc<dyn EventSink>,
    stats: Arc<Stats>,
}

impl Uplink {
    /// Wires the use case to its sink.
    pub fn new(sink: Arc<dyn EventSink>, stats: Arc<Stats>) -> Self {
        Self { sink, stats }
    }

    /// Handles one text frame from `sender`; returns the frame to answer with.
    ///
    /// A valid message with an `id` is answered with an ack once the sink has
    /// it; any failure is answered with an error (carrying the `id` when there
    /// is one), so no message is ever lost without the client being told.
    pub async fn handle_text(&self, sender: &ClientId, text: &str) -> Option<Reply> {
        let message = match ClientMessage::parse(text) {
            Ok(message) => message,
            Err(error) => {
                debug!(%error, "invalid client frame");
                bump(&self.stats.uplink.invalid, 1);
                return Some(Reply::invalid(error.to_string()));
            }
        };
        let id = message.id().map(str::to_owned);
        match self.sink.publish(message.into_event(sender)).await {
            Ok(()) => {
                bump(&self.stats.uplink.published, 1);
                id.map(Reply::Ack)
            }
            Err(error) => {
                warn!(%error, "client message not published");
                bump(&self.stats.uplink.failed, 1);
                // The sink's error text is for operators (it may hold raw
                // service responses); the client gets a short, stable message.
                let (code, message) = match error {
                    PublishError::Rejected(_) => {
                        (PUBLISH_REJECTED, "the message was refused by the event bus")
                    }
                    PublishError::Unavailable(_) => (
                        PUBLISH_FAILED,
                        "the event bus is unavailable; the message was not published",
                    ),
                };
                Some(Reply::Error {
                    code,
                    message: message.to_owned(),
                    id,
                })
            }
        }
    }
}
