//! One WebSocket connection: the upgrade, and the loop that serves it until
//! it closes.
//!
//! The loop is a single `select!` over the inbound frames, the connection's
//! outgoing queue (fed by [`WsClientRegistry`]), the slow-client signal, the
//! shutdown token and a heartbeat. Client messages go to a per-connection
//! uplink worker through a small bounded queue, so publishing never holds up
//! delivery; while that queue is full the loop stops reading the socket,
//! which pushes back on the client. Every write is raced against the slow
//! signal, the shutdown token and the client timeout, so a client that stops
//! reading cannot pin the loop.
//!
//! Inbound size is limited twice: the body stream refuses a frame whose
//! header declares more than the limit before buffering it (see
//! `frame_limit`), and fragments are reassembled under the same limit. A
//! fragmented message must also be complete within the fragment timeout
//! (over it: 1008), and its fragments are charged to the budget all
//! connections share (see `fragment_budget`; over it: 1013).
//!
//! Each complete data message takes a token from the connection's bucket
//! (see `rate`): a message over the rate is answered with a `rate_limited`
//! error and dropped unread; too many of those within the abuse window close
//! the connection with 1008. A binary message closes it with 1003.
//!
//! [`SessionMode::Echo`] runs the same loop, limits and close codes, but
//! writes each data message back instead of publishing it: the test-only
//! route that RFC 6455 conformance suites (Autobahn) are pointed at.
//!
//! Here: the upgrade ([`start_session`]) and the connection's life around
//! the loop, in order. The loop itself is in `serve` (with the rate gate in
//! `gate` and the heartbeat in `heartbeat`); what happens once it stops
//! (flush on shutdown, unregistering, close frame, last publishes) in
//! `closing`; the settings in `settings`.
//!
//! A connection gives its slot under the limits back as soon as its socket
//! closes, not once its last publishes are done: with a slow event bus a
//! client reconnecting at once would otherwise be refused. Those publishes
//! (the client messages it had sent, its `$disconnect`) still run, counted
//! by the registry's [`closing_count`](WsClientRegistry::closing_count) for
//! a graceful shutdown to wait on, but only until
//! [`CLOSING_DEADLINE`](closing::CLOSING_DEADLINE) (or
//! [`SHUTDOWN_CLOSING_GRACE`](closing::SHUTDOWN_CLOSING_GRACE) into a
//! shutdown): what the bus has not confirmed by then is counted and logged,
//! not waited for.

use std::pin::Pin;
use std::sync::Arc;

use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use actix_ws::{MessageStream, Session};
use domain::{ClientId, Uplink};
use futures_util::Stream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, Instrument};

use crate::fragments::Reassembler;
use crate::frame_limit::FrameLimit;
use crate::registry::{Registration, WsClientRegistry};
use crate::uplink_worker::LazyWorker;

mod closing;
mod gate;
mod heartbeat;
mod serve;
mod settings;

pub use settings::{
    Credential, Peer, Renewal, SessionMode, SessionSettings, StartError, TokenRenewer,
};

use closing::LastPublishes;
use serve::{serve, Incoming, Signals, UplinkPath};

/// Upgrades `req` to a WebSocket for `peer` and serves it in the
/// background until it closes; returns the `101 Switching Protocols` response.
///
/// The connection is registered in `registry` before this returns, so it
/// receives every frame delivered for its client id from then on, and is
/// unregistered however the session ends. Text messages go to `uplink`;
/// cancelling `shutdown` closes the connection with 1001. Must be called from
/// an actix-web handler: the session runs on the worker's local task set.
///
/// Fails without registering anything when `req` is not a WebSocket upgrade
/// or when the connection would take its client id, its address or the
/// instance over `settings.limits` (checked and taken in one step, before
/// the upgrade is answered: no race lets one more in).
pub fn start_session(
    req: &HttpRequest,
    body: web::Payload,
    peer: Peer,
    registry: Arc<WsClientRegistry>,
    uplink: Arc<Uplink>,
    settings: SessionSettings,
    shutdown: CancellationToken,
) -> Result<HttpResponse, StartError> {
    // Refuse an oversized frame at its header, not once it is all buffered.
    let limited: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(FrameLimit::new(body.into_inner(), settings.max_frame_bytes));
    let mut limited = actix_web::dev::Payload::from(limited);
    let body = web::Payload::from_request(req, &mut limited)
        .into_inner()
        .map_err(StartError::Handshake)?;
    let protocols: &[&str] = match &peer.protocol {
        Some(protocol) => std::slice::from_ref(protocol),
        None => &[],
    };
    // actix-ws implements no extension: an offered permessage-deflate is
    // never accepted, so frames are never compressed.
    let (response, session, stream) =
        actix_ws::handle_with_protocols(req, body, protocols).map_err(StartError::Handshake)?;
    let stream = stream.max_frame_size(settings.max_frame_bytes);
    let registration = registry.try_register_with(
        peer.client_id.clone(),
        peer.ip,
        settings.outbound_capacity,
        settings.limits,
        peer.acknowledging,
    )?;
    let span = info_span!(
        "ws_connection",
        client_id = %peer.client_id,
        connection_id = %registration.id,
    );
    let fragments = Reassembler::new(
        settings.max_frame_bytes,
        settings.fragment_timeout,
        registry
            .fragment_budget()
            .charge(settings.fragment_budget_bytes),
    );
    let connection = Connection {
        credential: peer.credential,
        client_id: peer.client_id,
        mode: peer.mode,
        session,
        stream,
        fragments,
        registration,
        uplink,
        settings,
        shutdown,
    };
    actix_web::rt::spawn(connection.run().instrument(span));
    Ok(response)
}

/// Everything one session owns.
struct Connection {
    credential: Option<Credential>,
    client_id: ClientId,
    mode: SessionMode,
    session: Session,
    stream: MessageStream,
    fragments: Reassembler,
    registration: Registration,
    uplink: Arc<Uplink>,
    settings: SessionSettings,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self) {
        let Connection {
            credential,
            client_id,
            mode,
            mut session,
            mut stream,
            fragments,
            mut registration,
            uplink,
            settings,
            shutdown,
        } = self;
        let id = registration.id;
        debug!("connection opened");
        // Sent in the background (the connection is served meanwhile) and
        // awaited before the `$disconnect`, so the two are never reordered.
        let connected = closing::announce_connect(&uplink, &client_id, id);
        let mut worker = LazyWorker::new(
            uplink.clone(),
            client_id.clone(),
            session.clone(),
            settings.client_timeout,
        );

        let signals = Signals {
            slow: &registration.slow,
            shutdown: &shutdown,
            write_timeout: settings.client_timeout,
        };
        let incoming = Incoming {
            stream: &mut stream,
            fragments,
        };
        let mut to_uplink = UplinkPath {
            credential: credential.as_ref(),
            worker: &mut worker,
            uplink: &uplink,
            client_id: &client_id,
        };
        let Err(exit) = serve(
            &mut session,
            incoming,
            &mut registration.outbound,
            &mut to_uplink,
            &signals,
            &settings,
            mode,
        )
        .await;

        let exit = closing::with_close_order(exit, &registration.guard);
        closing::stop_deliveries(&mut session, registration.outbound, &exit).await;
        // The guard is given up when the socket closes: its slot goes back
        // before the client can see the close frame and reconnect. The
        // connection then stays counted as closing until its last publishes
        // are done or given up, which is what a draining shutdown waits for.
        let closing = registration.guard.into_closing();
        let reason = closing::close_reason(&exit, uplink.stats());
        if let Some(reason) = reason.clone() {
            closing::send_close_frame(session, reason).await;
        }
        drop(stream);
        let last = LastPublishes {
            uplink: &uplink,
            client_id: &client_id,
            id,
            connected,
            worker,
            shutdown,
        };
        last.finish(reason.as_ref(), &exit).await;
        drop(closing);
        debug!(reason = exit.label(), "connection closed");
    }
}
