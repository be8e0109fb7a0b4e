//! The WebSocket adapter of wsbridge: actix-ws sessions and the registry of
//! live connections.
//!
//! In the hexagon it sits on both sides of the core. As a *driven* adapter,
//! [`WsClientRegistry`] implements the domain's `ClientRegistry` port, through
//! which the downlink use case hands Commands to the connections of a client.
//! As a *driving* adapter, each session reads its client's frames and drives
//! the domain's `Uplink` use case, writing the ack or error back.
//!
//! It knows the domain and actix; it knows nothing of AWS, configuration or
//! routes: the `app` crate parses the client id, calls [`start_session`] from
//! its route and owns the shutdown token.
//!
//! Close codes used: 1000 answering a client's close, 1001 on shutdown and on
//! heartbeat timeout, 1002 protocol violation, 1003 binary message, 1007 text
//! that is not UTF-8, 1008 sustained message-rate abuse or a fragmented
//! message not completed in time, 1009 message over the size limit, 1011
//! internal error, 1013 slow client (outgoing queue full, or not reading) or
//! the instance's budget for incomplete messages spent.
//!
//! Connection limits (per client id, per IP address, in total) are enforced
//! by the registry when a session starts, before the upgrade is answered.

mod close;
mod fragment_budget;
mod fragments;
mod frame_limit;
mod rate;
mod registry;
mod session;
mod uplink_worker;

pub use rate::{AbusePolicy, MessageRate};
pub use registry::{
    ConnectionId, ConnectionInfo, ConnectionLimits, LimitExceeded, Registration, RegistrationGuard,
    WsClientRegistry,
};
pub use session::{
    start_session, Credential, Peer, Renewal, SessionMode, SessionSettings, StartError,
    TokenRenewer,
};
