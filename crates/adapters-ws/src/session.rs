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
//! `frame_limit`), and fragments are reassembled under the same limit.
//!
//! Each complete data message takes a token from the connection's bucket
//! (see `rate`): a message over the rate is answered with a `rate_limited`
//! error and dropped unread; too many of those within the abuse window close
//! the connection with 1008. A binary message closes it with 1003.
//!
//! [`SessionMode::Echo`] runs the same loop, limits and close codes, but
//! writes each data message back instead of publishing it: the test-only
//! route that RFC 6455 conformance suites (Autobahn) are pointed at.

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes};
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use actix_ws::{Item, Message, MessageStream, Session};
use domain::{ClientId, Frame, Reply, Uplink};
use futures_util::{SinkExt, Stream};
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info_span, Instrument};

use crate::close::Exit;
use crate::fragments::{FragmentError, Reassembled, Reassembler};
use crate::frame_limit::FrameLimit;
use crate::rate::{AbusePolicy, MessageRate, Strikes, TokenBucket};
use crate::registry::{ConnectionLimits, LimitExceeded, Registration, WsClientRegistry};
use crate::uplink_worker::{self, Inbound};

/// How long a closing handshake may wait for room in the socket's buffer
/// before the connection is dropped without a close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The limits and timers of every WebSocket session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSettings {
    /// How many Commands may wait in a connection's outgoing queue; a client
    /// that lets it fill up is closed with 1013.
    pub outbound_capacity: usize,
    /// Largest message accepted from a client, in bytes, whether sent as one
    /// frame or in fragments; a larger one closes the connection with 1009.
    pub max_frame_bytes: usize,
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
        }
    }
}

/// Why [`start_session`] did not upgrade the request.
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
    let connection = Connection {
        client_id: peer.client_id,
        mode: peer.mode,
        session,
        stream,
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
    client_id: ClientId,
    mode: SessionMode,
    session: Session,
    stream: MessageStream,
    registration: Registration,
    uplink: Arc<Uplink>,
    settings: SessionSettings,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self) {
        let Connection {
            client_id,
            mode,
            mut session,
            mut stream,
            registration,
            uplink,
            settings,
            shutdown,
        } = self;
        // The guard lives to the end of this function: the connection stays
        // counted until its last publish is done, which is what a draining
        // shutdown waits for.
        let Registration {
            id: _,
            mut outbound,
            slow,
            guard: _guard,
        } = registration;
        debug!("connection opened");

        let stats = uplink.stats().clone();
        let (to_uplink, inbox) = mpsc::channel(uplink_worker::QUEUE);
        let worker = actix_web::rt::spawn(
            uplink_worker::run(
                inbox,
                uplink,
                client_id,
                session.clone(),
                settings.client_timeout,
            )
            .in_current_span(),
        );

        let signals = Signals {
            slow: &slow,
            shutdown: &shutdown,
            write_timeout: settings.client_timeout,
        };
        let exit = match serve(
            &mut session,
            &mut stream,
            &mut outbound,
            &to_uplink,
            &signals,
            &settings,
            mode,
        )
        .await
        {
            Ok(never) => match never {},
            Err(exit) => exit,
        };

        // From here on deliveries to this connection count as not taken.
        outbound.close();
        if matches!(exit, Exit::Shutdown) {
            flush_queued(&mut session, &mut outbound).await;
        }
        drop(outbound);
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
        if let Some(reason) = reason {
            match tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(reason))).await {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => debug!("close frame not sent: connection already closed"),
                Err(_elapsed) => debug!("close frame not sent: client stopped reading"),
            }
        }
        drop(stream);

        // Let the worker publish what it was given, then unregister.
        drop(to_uplink);
        if let Err(e) = worker.await {
            error!(error = %e, "uplink worker failed");
        }
        debug!(reason = exit.label(), "connection closed");
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

/// What every write is raced against.
struct Signals<'a> {
    slow: &'a CancellationToken,
    shutdown: &'a CancellationToken,
    write_timeout: Duration,
}

impl Signals<'_> {
    /// Writes one message, unless the connection must close first.
    ///
    /// A write that can go through at once always does; only one that waits
    /// for the client to read is abandoned (and its frame lost).
    async fn write(&self, session: &mut Session, message: Message) -> Result<(), Exit> {
        tokio::select! {
            biased;
            sent = session.send(message) => sent.map_err(|_closed| Exit::ClientGone),
            () = self.shutdown.cancelled() => Err(Exit::Shutdown),
            () = self.slow.cancelled() => Err(Exit::Slow),
            () = tokio::time::sleep(self.write_timeout) => Err(Exit::WriteStalled),
        }
    }
}

/// A complete data message from the client.
enum Data {
    Text(String),
    Binary(Bytes),
}

/// What the loop does with one data message.
enum Handling {
    /// Hand it to the uplink worker.
    Uplink(Inbound),
    /// Write it back (echo mode).
    Echo(Message),
    /// Write this error frame (echo mode has no uplink worker to order replies).
    Reply(Reply),
}

/// The per-connection message rate limit.
struct RateGate {
    bucket: TokenBucket,
    strikes: Strikes,
}

impl RateGate {
    fn new(settings: &SessionSettings) -> Self {
        let now = Instant::now();
        Self {
            bucket: TokenBucket::new(settings.message_rate, now),
            strikes: Strikes::new(settings.abuse),
        }
    }

    /// Decides what happens to one data message.
    fn handle(&mut self, data: Data, mode: SessionMode) -> Result<Handling, Exit> {
        if let (SessionMode::Bridge, Data::Binary(_)) = (mode, &data) {
            return Err(Exit::Binary);
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

/// Serves the connection until it must close; returns why.
async fn serve(
    session: &mut Session,
    stream: &mut MessageStream,
    outbound: &mut mpsc::Receiver<Frame>,
    to_uplink: &mpsc::Sender<Inbound>,
    signals: &Signals<'_>,
    settings: &SessionSettings,
    mode: SessionMode,
) -> Result<Infallible, Exit> {
    let period = settings.heartbeat_interval.max(Duration::from_millis(1));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut fragments = Reassembler::new(settings.max_frame_bytes);
    let mut rate = RateGate::new(settings);
    // Room in the uplink queue for the next message; the socket is read only
    // while there is some.
    let mut permit: Option<OwnedPermit<Inbound>> = None;

    loop {
        tokio::select! {
            () = signals.shutdown.cancelled() => return Err(Exit::Shutdown),
            () = signals.slow.cancelled() => return Err(Exit::Slow),
            frame = outbound.recv() => {
                // The registry keeps the sender for as long as the guard lives.
                let frame = frame.ok_or(Exit::Internal("outgoing queue closed"))?;
                signals.write(session, Message::Text((&*frame).into())).await?;
            }
            reserved = to_uplink.clone().reserve_owned(), if permit.is_none() => {
                permit = Some(reserved.map_err(|_| Exit::Internal("uplink worker stopped"))?);
            }
            message = stream.recv(), if permit.is_some() => {
                last_heard = Instant::now();
                let message = match message {
                    None => return Err(Exit::ClientGone),
                    Some(Err(e)) => {
                        return Err(Exit::from_protocol_error(e, settings.max_frame_bytes))
                    }
                    Some(Ok(message)) => message,
                };
                let data = match message {
                    Message::Text(text) => Some(Data::Text(text.to_string())),
                    Message::Binary(bytes) => Some(Data::Binary(bytes)),
                    // Refused at its first fragment, before any is buffered.
                    Message::Continuation(Item::FirstBinary(_)) if mode == SessionMode::Bridge => {
                        return Err(Exit::Binary)
                    }
                    Message::Continuation(item) => match fragments.push(item) {
                        Ok(Reassembled::Pending) => None,
                        Ok(Reassembled::Text(text)) => Some(Data::Text(text)),
                        Ok(Reassembled::Binary(bytes)) => Some(Data::Binary(bytes)),
                        Err(FragmentError::TooBig) => {
                            return Err(Exit::TooBig { limit: settings.max_frame_bytes })
                        }
                        Err(FragmentError::InvalidUtf8) => return Err(Exit::InvalidUtf8),
                    },
                    Message::Ping(payload) => {
                        signals.write(session, Message::Pong(payload)).await?;
                        None
                    }
                    Message::Pong(_) | Message::Nop => None,
                    Message::Close(reason) => return Err(Exit::ClientClosed(reason)),
                };
                let Some(data) = data else { continue };
                match rate.handle(data, mode)? {
                    Handling::Uplink(inbound) => {
                        if let Some(room) = permit.take() {
                            room.send(inbound);
                        }
                    }
                    Handling::Echo(message) => signals.write(session, message).await?,
                    Handling::Reply(reply) => {
                        signals.write(session, Message::Text(reply.to_json().into())).await?;
                    }
                }
            }
            _ = heartbeat.tick() => {
                // While the uplink queue is full the socket is not read, so
                // silence then says nothing about the client.
                if permit.is_some() && last_heard.elapsed() >= settings.client_timeout {
                    return Err(Exit::IdleTimeout);
                }
                signals.write(session, Message::Ping(Bytes::new())).await?;
            }
        }
    }
}
