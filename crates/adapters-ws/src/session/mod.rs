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
//! the loop (uplink worker, flush on shutdown, unregistering, close frame,
//! last publishes); the loop itself is in `serve`, the settings in
//! `settings`.
//!
//! A connection gives its slot under the limits back as soon as its socket
//! closes, not once its last publishes are done: with a slow event bus a
//! client reconnecting at once would otherwise be refused. Those publishes
//! (the client messages it had sent, its `$disconnect`) still run, counted
//! by the registry's [`closing_count`](WsClientRegistry::closing_count) for
//! a graceful shutdown to wait on, but only until [`CLOSING_DEADLINE`] (or
//! [`SHUTDOWN_CLOSING_GRACE`] into a shutdown): what the bus has not
//! confirmed by then is counted and logged, not waited for.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::error::PayloadError;
use actix_web::rt::task::JoinHandle;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use actix_ws::{Message, MessageStream, Session};
use domain::presence::DISCONNECT_ACTION;
use domain::{ClientId, Disconnect, Frame, OutboundEvent, Uplink};
use futures_util::{SinkExt, Stream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, Instrument};

use crate::close::Exit;
use crate::fragments::Reassembler;
use crate::frame_limit::FrameLimit;
use crate::registry::{Registration, WsClientRegistry};
use crate::uplink_worker::LazyWorker;

mod serve;
mod settings;

pub use settings::{
    Credential, Peer, Renewal, SessionMode, SessionSettings, StartError, TokenRenewer,
};

use serve::{serve, Incoming, Signals, UplinkPath};

/// How long a closed connection's last publishes may take: one publish's own
/// limit on SNS (`adapters_aws::sdk::PUBLISH_TIMEOUT`). Not a setting: it
/// only bounds work whose client is gone.
pub const CLOSING_DEADLINE: Duration = Duration::from_secs(15);

/// Once a shutdown has begun, how long a closed connection's last publishes
/// may still take: well within any shutdown deadline worth having, so what
/// the connections leave behind never holds the shutdown up.
pub const SHUTDOWN_CLOSING_GRACE: Duration = Duration::from_secs(1);

/// How long a closing handshake may wait for room in the socket's buffer
/// before the connection is dropped without a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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
            registration,
            uplink,
            settings,
            shutdown,
        } = self;
        // The guard is given up when the socket closes; the connection then
        // stays counted as closing until its last publishes are done or given
        // up, which is what a draining shutdown waits for.
        let Registration {
            id,
            mut outbound,
            slow,
            guard,
        } = registration;
        debug!("connection opened");
        // Sent in the background (the connection is served meanwhile) and
        // awaited before the `$disconnect`, so the two are never reordered.
        let connected = uplink.presence().map(|presence| {
            let event = presence.connected(&client_id, id.get(), SystemTime::now());
            let uplink = uplink.clone();
            actix_web::rt::spawn(async move { uplink.announce(event).await })
        });

        let stats = uplink.stats().clone();
        let mut worker = LazyWorker::new(
            uplink.clone(),
            client_id.clone(),
            session.clone(),
            settings.client_timeout,
        );

        let signals = Signals {
            slow: &slow,
            shutdown: &shutdown,
            write_timeout: settings.client_timeout,
        };
        let incoming = Incoming {
            stream: &mut stream,
            fragments,
        };
        let exit = match serve(
            &mut session,
            incoming,
            &mut outbound,
            &mut UplinkPath {
                credential: credential.as_ref(),
                worker: &mut worker,
                uplink: &uplink,
                client_id: &client_id,
            },
            &signals,
            &settings,
            mode,
        )
        .await
        {
            Ok(never) => match never {},
            Err(exit) => exit,
        };

        // `slow` also carries an operator's disconnect.
        let exit = match exit {
            Exit::Slow => guard
                .close_order()
                .map_or(Exit::Slow, |(code, reason)| Exit::Kicked { code, reason }),
            other => other,
        };
        // From here on deliveries to this connection count as not taken.
        outbound.close();
        if matches!(exit, Exit::Shutdown) {
            flush_queued(&mut session, &mut outbound).await;
        }
        drop(outbound);
        // The socket is closing: its slot goes back before the client can
        // see the close frame and reconnect.
        let closing = guard.into_closing();
        let reason = exit.close_reason();
        stats
            .close_codes
            .record(reason.as_ref().map(|r| u16::from(r.code)));
        let client_code = match &exit {
            Exit::ClientClosed(Some(theirs)) => Some(u16::from(theirs.code)),
            _ => None,
        };
        debug!(
            reason = exit.label(),
            close_code = ?reason.as_ref().map(|r| u16::from(r.code)),
            close_text = ?reason.as_ref().and_then(|r| r.description.as_deref()),
            client_close_code = ?client_code,
            "connection closing"
        );
        if let Some(reason) = reason.clone() {
            match tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(reason))).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => debug!("close frame not sent: connection already closed"),
                Err(_elapsed) => debug!("close frame not sent: client stopped reading"),
            }
        }
        drop(stream);

        // The last publishes, bounded: the `$disconnect` (after the
        // `$connect`, never reordered) beside the worker's last messages.
        let give_up = worker.give_up_token();
        let timer = actix_web::rt::spawn(closing_time(shutdown.clone(), give_up.clone()));
        let disconnected = uplink.presence().map(|presence| {
            let (code, text) = match (&reason, &exit) {
                (Some(ours), _) => (Some(u16::from(ours.code)), ours.description.as_deref()),
                (None, Exit::ClientClosed(Some(theirs))) => {
                    (Some(u16::from(theirs.code)), theirs.description.as_deref())
                }
                (None, _) => (None, None),
            };
            let how = Disconnect { code, reason: text };
            presence.disconnected(&client_id, id.get(), SystemTime::now(), how)
        });
        tokio::join!(
            announce_disconnect(&uplink, connected, disconnected, &give_up),
            worker.finish()
        );
        timer.abort();
        drop(closing);
        debug!(reason = exit.label(), "connection closed");
    }
}

/// Cancels `give_up` at the closing deadline: [`CLOSING_DEADLINE`] from now,
/// or [`SHUTDOWN_CLOSING_GRACE`] into a shutdown if that comes first.
async fn closing_time(shutdown: CancellationToken, give_up: CancellationToken) {
    let shutdown_grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_CLOSING_GRACE).await;
    };
    tokio::select! {
        () = tokio::time::sleep(CLOSING_DEADLINE) => {}
        () = shutdown_grace => {}
    }
    give_up.cancel();
}

/// Waits for the `$connect` still under way, then publishes the
/// `$disconnect`, until `give_up`: past it, the `$connect` task is stopped
/// and the `$disconnect` counted as not confirmed (the sink may still hold
/// and publish it; nobody waits for it).
async fn announce_disconnect(
    uplink: &Uplink,
    connected: Option<JoinHandle<()>>,
    disconnected: Option<OutboundEvent>,
    give_up: &CancellationToken,
) {
    let Some(event) = disconnected else { return };
    let mut connected = connected;
    let announce = async {
        if let Some(connected) = connected.as_mut() {
            let _ = connected.await;
        }
        uplink.announce(event).await;
    };
    tokio::select! {
        () = announce => {}
        () = give_up.cancelled() => {
            if let Some(connected) = connected {
                connected.abort();
            }
            uplink.count_presence_unconfirmed(DISCONNECT_ACTION);
        }
    }
}

/// On shutdown, writes the frames already queued for the connection (the
/// downlink counted them as delivered) before the close frame, for at most
/// [`CLOSE_TIMEOUT`]. `outbound` must be closed, so that this ends.
async fn flush_queued(session: &mut Session, outbound: &mut mpsc::Receiver<Frame>) {
    let mut written = 0usize;
    let flush = async {
        while let Some(frame) = outbound.recv().await {
            if session.send(Message::Text((&*frame).into())).await.is_err() {
                break;
            }
            written += 1;
        }
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, flush).await {
        Ok(()) => debug!(frames = written, "queued frames flushed"),
        Err(_elapsed) => debug!(
            frames = written,
            dropped = outbound.len(),
            "client stopped reading, queued frames dropped"
        ),
    }
}
