//! What a session is started with: its limits and timers
//! ([`SessionSettings`]), what it does with data messages ([`SessionMode`]),
//! who is connecting ([`Peer`]), and why an upgrade is refused
//! ([`StartError`]).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use domain::ClientId;

use crate::rate::{AbusePolicy, MessageRate};
use crate::registry::{ConnectionLimits, LimitExceeded};

/// The limits and timers of every WebSocket session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// How many Commands may wait in a connection's outgoing queue; a client
    /// that lets it fill up is closed with 1013.
    pub outbound_capacity: usize,
    /// Largest message accepted from a client, in bytes, whether sent as one
    /// frame or in fragments; a larger one closes the connection with 1009.
    pub max_frame_bytes: usize,
    /// How long a message sent in fragments may take from its first
    /// fragment to its last; a connection that takes longer is closed with
    /// 1008. Its own timer, not the HTTP handshake timeout: that one bounds a
    /// request head of a few hundred bytes, this one up to
    /// `max_frame_bytes` from a client on a slow link.
    pub fragment_timeout: Duration,
    /// Most bytes all connections together may hold in incomplete
    /// (fragmented) messages, counted by the registry; a fragment that would
    /// take them over closes its connection with 1013.
    pub fragment_budget_bytes: usize,
    /// How often the server pings the client.
    pub heartbeat_interval: Duration,
    /// How long the client may stay silent (no frame, no pong) before it is
    /// closed with 1001, checked at each heartbeat; also the longest one
    /// write may wait for the client to take data before it is closed with 1013.
    pub client_timeout: Duration,
    /// How many data messages a connection may send; one over it is answered
    /// with a `rate_limited` error and not published.
    pub message_rate: MessageRate,
    /// How many `rate_limited` messages close the connection with 1008.
    pub abuse: AbusePolicy,
    /// Connections per client id, per IP address and in total; a new one
    /// over any of them is refused before the upgrade.
    pub limits: ConnectionLimits,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            outbound_capacity: 256,
            max_frame_bytes: 64 * 1024,
            fragment_timeout: Duration::from_secs(10),
            fragment_budget_bytes: 64 * 1024 * 1024,
            heartbeat_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(45),
            message_rate: MessageRate {
                per_sec: 20,
                burst: 50,
            },
            abuse: AbusePolicy {
                strikes: 50,
                window: Duration::from_secs(10),
            },
            limits: ConnectionLimits::default(),
        }
    }
}

/// What a session does with its client's data messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SessionMode {
    /// Text messages go to the uplink; a binary message closes with 1003.
    #[default]
    Bridge,
    /// Test only: every text and binary message is written back to the
    /// client, nothing is published (for RFC 6455 conformance runs).
    Echo,
}

/// Who is connecting, as decided before the upgrade.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The connection's client id.
    pub client_id: ClientId,
    /// The client's address, counted against the per-IP limit (`None`: not counted).
    pub ip: Option<IpAddr>,
    /// A subprotocol to answer with, when the client offered it in
    /// `Sec-WebSocket-Protocol` (browsers fail a connection whose offer is
    /// not answered).
    pub protocol: Option<&'static str>,
    /// Bridge or echo.
    pub mode: SessionMode,
    /// Opened with `ack=true`: Commands arrive as
    /// `{"delivery_id": …, "command": …}` and the client acknowledges each.
    pub acknowledging: bool,
    /// Opened with a token: the connection lasts until it expires, unless
    /// the client sends a fresh one (`{"auth": "<token>"}`).
    pub credential: Option<Credential>,
}

/// The token a connection was opened with: when it stops being valid, and
/// how a fresh one is checked.
#[derive(Clone)]
pub struct Credential {
    /// Expiry plus the accepted clock skew: the connection is closed with
    /// 1008 `token_expired` then.
    pub valid_until: SystemTime,
    /// Checks the tokens of `{"auth": …}` frames.
    pub renewer: Arc<dyn TokenRenewer>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

/// What [`TokenRenewer::renew`] answers, in time: verifying may first fetch
/// keys (a JWKS the identity provider has rotated a key into).
pub type Renewal<'a> = Pin<Box<dyn Future<Output = Result<SystemTime, String>> + Send + 'a>>;

/// Verifies a fresh token sent on an open connection.
pub trait TokenRenewer: Send + Sync {
    /// Until when the connection of `client_id` may stay open with `token`;
    /// an error (for the client) when the token does not verify or names
    /// another client.
    fn renew<'a>(&'a self, client_id: &'a ClientId, token: &'a str) -> Renewal<'a>;
}

impl Peer {
    /// A bridge connection of `client_id`, not counted per IP, no subprotocol.
    pub fn new(client_id: ClientId) -> Self {
        Self {
            client_id,
            ip: None,
            protocol: None,
            mode: SessionMode::Bridge,
            acknowledging: false,
            credential: None,
        }
    }
}

/// Why [`start_session`](super::start_session) did not upgrade the request.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The request is not a valid WebSocket handshake.
    #[error("not a WebSocket handshake: {0}")]
    Handshake(actix_web::Error),
    /// A connection limit is reached.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
}

impl From<StartError> for actix_web::Error {
    fn from(error: StartError) -> Self {
        match error {
            StartError::Handshake(e) => e,
            StartError::Limit(limit @ LimitExceeded::Total { .. }) => {
                actix_web::error::ErrorServiceUnavailable(limit)
            }
            StartError::Limit(limit) => actix_web::error::ErrorTooManyRequests(limit),
        }
    }
}
