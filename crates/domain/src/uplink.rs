//! The uplink use case: validate a client's text frame, stamp its
//! `client_id`, publish it, and say what to answer.

use std::sync::Arc;

use tracing::{debug, warn};

use crate::acks::PendingAcks;
use crate::client_frame::ClientFrame;
use crate::client_id::ClientId;
use crate::client_message::{OutboundEvent, Reply, PUBLISH_FAILED, PUBLISH_REJECTED};
use crate::ports::{EventSink, PublishError};
use crate::presence::Presence;
use crate::stats::{bump, Stats};

/// The uplink: shared by every connection.
pub struct Uplink {
    sink: Arc<dyn EventSink>,
    stats: Arc<Stats>,
    acks: Option<Arc<PendingAcks>>,
    presence: Option<Presence>,
}

/// Error code for an `{"auth": …}` frame on a connection without a token.
pub const UNEXPECTED_AUTH: &str = "unexpected_auth";
/// Error code for an `{"auth": …}` frame whose token does not verify or
/// names another client.
pub const INVALID_TOKEN: &str = "invalid_token";

/// Error code for an acknowledgement of a delivery nobody waits for.
pub const UNKNOWN_DELIVERY: &str = "unknown_delivery";

impl Uplink {
    /// Wires the use case to its sink.
    pub fn new(sink: Arc<dyn EventSink>, stats: Arc<Stats>) -> Self {
        Self {
            sink,
            stats,
            acks: None,
            presence: None,
        }
    }

    /// Also announces each connection's opening and closing (presence
    /// events) through the sink.
    pub fn with_presence(mut self, presence: Presence) -> Self {
        self.presence = Some(presence);
        self
    }

    /// The presence events to announce, when they are on.
    pub fn presence(&self) -> Option<&Presence> {
        self.presence.as_ref()
    }

    /// Publishes a presence event; a failure is logged and counted, never
    /// reported to the client (the connection is not the one at fault).
    pub async fn announce(&self, event: OutboundEvent) {
        let action = event.action.clone();
        match self.sink.publish(event).await {
            Ok(()) => bump(&self.stats.control.presence_published, 1),
            Err(error) => {
                warn!(%error, action, "presence event not published");
                bump(&self.stats.control.presence_failed, 1);
            }
        }
    }

    /// Counts a presence event the sink did not confirm before its
    /// connection's closing deadline: it may still be published (the sink
    /// may hold it), but nobody waits for it any longer.
    pub fn count_presence_unconfirmed(&self, action: &str) {
        warn!(
            action,
            "presence event not confirmed before the closing deadline"
        );
        bump(&self.stats.control.presence_failed, 1);
    }

    /// Counts `messages` client messages of a closed connection that the sink
    /// did not confirm before the connection's closing deadline (their client
    /// is gone: there is nobody left to answer).
    pub fn count_unconfirmed(&self, messages: u64) {
        if messages > 0 {
            warn!(
                messages,
                "client messages of a closed connection not confirmed before its closing deadline"
            );
            bump(&self.stats.uplink.failed, messages);
        }
    }

    /// The counters this use case shares with the sessions that drive it
    /// (they count close codes into it).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Counts one client message refused unread for being over its
    /// connection's rate.
    pub fn count_rate_limited(&self) {
        bump(&self.stats.uplink.rate_limited, 1);
    }

    /// Also takes clients' `{"ack_delivery": …}` frames, confirming deliveries
    /// made to connections opened with `ack=true`.
    pub fn with_acks(mut self, acks: Arc<PendingAcks>) -> Self {
        self.acks = Some(acks);
        self
    }

    /// Handles one text frame from `sender`; returns the frame to answer with.
    ///
    /// A valid message with an `id` is answered with an ack once the sink has
    /// it; any failure is answered with an error (carrying the `id` when there
    /// is one), so no message is ever lost without the client being told.
    pub async fn handle_text(&self, sender: &ClientId, text: &str) -> Option<Reply> {
        let message = match ClientFrame::parse(text) {
            Ok(ClientFrame::Message(message)) => message,
            Ok(ClientFrame::AckDelivery(delivery_id)) => {
                return self.acknowledge(sender, &delivery_id);
            }
            Ok(ClientFrame::Auth(_)) => {
                // The session takes these; one that reaches here has no
                // token to renew (authentication is off).
                return Some(Reply::Error {
                    code: UNEXPECTED_AUTH,
                    message: "this connection was not opened with a token".into(),
                    id: None,
                });
            }
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

    /// Takes a client's `{"ack_delivery": id}`: a control frame, answered
    /// at once and never waiting on the event sink or the command source
    /// (the message is deleted in the background, in batches). Returns the
    /// error to answer with when nobody waits for that delivery.
    pub fn acknowledge(&self, sender: &ClientId, delivery_id: &str) -> Option<Reply> {
        let Some(acks) = &self.acks else {
            bump(&self.stats.uplink.invalid, 1);
            return Some(Reply::invalid("acknowledged delivery is not enabled"));
        };
        match acks.confirm(sender, delivery_id) {
            Ok(()) => None,
            Err(error) => {
                debug!(%error, "acknowledgement not taken");
                Some(Reply::Error {
                    code: UNKNOWN_DELIVERY,
                    message: error.to_string(),
                    id: None,
                })
            }
        }
    }
}
