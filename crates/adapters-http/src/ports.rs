//! What the HTTP surface needs from the rest of the bridge, as small traits
//! the `app` crate implements over the other adapters: the WebSocket
//! sessions an admitted upgrade becomes ([`Sessions`]), the connections the
//! admin API lists and gives orders to ([`Connections`]), the broker's
//! readiness and own series ([`BrokerProbe`]), and the bus a control message
//! goes to when its client is not connected here ([`ControlBus`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::{web, HttpRequest, HttpResponse};
use async_trait::async_trait;
use domain::{ClientId, Frame};
use prometheus_client::collector::Collector;

use crate::auth::JwtVerifier;

/// Who is connecting, as admission decided: what the session is started with.
#[derive(Clone)]
pub struct Admitted {
    /// The connection's client id.
    pub client_id: ClientId,
    /// The client's address (the trusted proxy header's, else the TCP
    /// peer's), counted against the per-address limit.
    pub ip: Option<IpAddr>,
    /// The subprotocol to answer with: `bearer` when the token came in
    /// `Sec-WebSocket-Protocol` (browsers fail a connection whose offer is
    /// not answered).
    pub protocol: Option<&'static str>,
    /// Test only (`/__echo`): messages are written back, not published.
    pub echo: bool,
    /// Opened with `ack=true`: acknowledged delivery for this connection.
    pub acknowledging: bool,
    /// Opened with a token: when it expires, and what checks a fresh one.
    pub credential: Option<Credential>,
}

/// The token a connection was opened with.
#[derive(Clone)]
pub struct Credential {
    /// `exp` plus the accepted clock skew: when the connection is closed
    /// unless the client sends a fresh token.
    pub valid_until: SystemTime,
    /// What checks the fresh tokens ([`JwtVerifier::renew`]).
    pub verifier: Arc<JwtVerifier>,
}

/// The WebSocket side of an upgrade.
pub trait Sessions: Send + Sync {
    /// Answers `req` with the upgrade and starts the session of `peer`, or
    /// says why not (the connection limits are checked and taken here, in
    /// one step).
    fn start(
        &self,
        req: &HttpRequest,
        body: web::Payload,
        peer: Admitted,
    ) -> Result<HttpResponse, SessionRefused>;

    /// Open WebSocket connections.
    fn open_connections(&self) -> usize;

    /// Bytes held in incomplete (fragmented) client messages.
    fn fragment_bytes_held(&self) -> usize;
}

/// Why the WebSocket side did not start a session.
#[derive(Debug, thiserror::Error)]
pub enum SessionRefused {
    /// The request is not a valid WebSocket handshake: answered as RFC 6455
    /// asks, by actix-web's own response.
    #[error("not a WebSocket handshake: {0}")]
    Handshake(actix_web::Error),
    /// A connection limit is reached; the text says which and its value.
    #[error("{1}")]
    Limit(ConnectionLimit, String),
}

/// Which connection limit refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionLimit {
    /// Connections of one client id.
    PerClient,
    /// Connections from one address.
    PerAddress,
    /// Connections on this instance.
    Total,
}

/// What an operator sees of one connection (admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionDetails {
    /// The connection's id.
    pub id: u64,
    /// The client's address, when known.
    pub ip: Option<IpAddr>,
    /// When it opened.
    pub since: SystemTime,
    /// Opened with `ack=true`.
    pub acknowledging: bool,
    /// Frames waiting in its outgoing queue.
    pub queued: usize,
}

/// This replica's connections, as the admin API sees and orders them.
pub trait Connections: Send + Sync {
    /// Client ids with their connection counts, in id order, after `after`
    /// (the last id of the previous page), at most `limit`; and the cursor
    /// of the next page, when there is one.
    fn clients(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(ClientId, usize)>, Option<String>);

    /// The connections of `client_id`.
    fn connections_of(&self, client_id: &ClientId) -> Vec<ConnectionDetails>;

    /// Closes the connections of `client_id` (only the one numbered `only`,
    /// when given) with `code` and `reason`; says how many it closes.
    fn disconnect(&self, client_id: &ClientId, only: Option<u64>, code: u16, reason: &str)
        -> usize;

    /// Queues `frame` as it is on every connection of `client_id`; says how
    /// many took it.
    fn send_frame(&self, client_id: &ClientId, frame: &Frame) -> usize;
}

/// What the broker's adapters tell the HTTP surface.
pub trait BrokerProbe: Send + Sync {
    /// Why the command source cannot take traffic, in words fit for the
    /// public port (naming no account, principal, host or queue), or `None`
    /// when it can.
    fn not_ready(&self) -> Option<&'static str>;

    /// The broker adapters' own series, registered for one scrape.
    fn collector(&self) -> Option<Box<dyn Collector>>;
}

/// The bus a control message goes to when its client has no connection
/// here: published where the fleet reads Commands, the replica that holds
/// the client carries it out.
#[async_trait]
pub trait ControlBus: Send + Sync {
    /// Publishes `control`, a control message for `client_id`; returns the
    /// broker's message id.
    async fn publish(&self, control: &str, client_id: &ClientId) -> Result<String, NotPublished>;
}

/// Why the bus did not take a control message, in the broker adapter's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotPublished(pub String);
