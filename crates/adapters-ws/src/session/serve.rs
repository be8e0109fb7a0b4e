//! The loop that serves one connection until it must close: the `select!`
//! over inbound frames, the outgoing queue, the slow-client signal, the
//! shutdown token, the heartbeat and the deadline of a fragmented message;
//! the per-connection rate gate; and the write that every frame goes
//! through, raced against the reasons to close.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use actix_web::web::Bytes;
use actix_ws::{Item, Message, MessageStream, Session};
use domain::uplink::{INVALID_TOKEN, UNEXPECTED_AUTH};
use domain::{ClientFrame, ClientId, Frame, Reply, Uplink};
use futures_util::SinkExt;
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Credential, SessionMode, SessionSettings};
use crate::close::Exit;
use crate::fragments::{FragmentError, Reassembled, Reassembler};
use crate::rate::{Strikes, TokenBucket};
use crate::uplink_worker::{Inbound, LazyWorker};

/// What every write is raced against.
pub(super) struct Signals<'a> {
    pub(super) slow: &'a CancellationToken,
    pub(super) shutdown: &'a CancellationToken,
    pub(super) write_timeout: Duration,
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

/// What the client sends: its frames, and the message being reassembled
/// from their fragments. [`serve`] takes it by value, so the bytes the
/// reassembler holds go back to the fragment budget the moment the loop
/// ends, not after the closing handshake.
pub(super) struct Incoming<'a> {
    pub(super) stream: &'a mut MessageStream,
    pub(super) fragments: Reassembler,
}

/// Sleeps until `deadline`; forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// A complete data message from the client.
enum Data {
    Text(String),
    Binary(Bytes),
}

/// Where a client's data messages go: client messages to the uplink
/// worker's queue; acknowledgements (control frames) straight to the
/// uplink use case, never rate-limited nor queued behind publishes.
pub(super) struct UplinkPath<'a> {
    /// The token the connection was opened with, if any.
    pub(super) credential: Option<&'a Credential>,
    pub(super) worker: &'a mut LazyWorker,
    pub(super) uplink: &'a Uplink,
    pub(super) client_id: &'a ClientId,
}

/// What the loop does with one data message.
enum Handling {
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

/// The moment of `at`, on the runtime's clock.
fn deadline_of(at: SystemTime) -> Instant {
    Instant::now()
        + at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
}

/// The error frame answering an `{"auth": …}` frame.
fn auth_error(code: &'static str, message: String) -> String {
    Reply::Error {
        code,
        message,
        id: None,
    }
    .to_json()
}

/// Room for one message in the uplink worker's queue.
enum Room {
    /// The worker has not started: the message starts it.
    NotStarted,
    /// A slot taken in the running worker's queue.
    Reserved(OwnedPermit<Inbound>),
}

/// A slot in `queue`; never ready while there is no queue (the session
/// then holds [`Room::NotStarted`] and does not ask).
async fn reserve(
    queue: Option<mpsc::Sender<Inbound>>,
) -> Result<OwnedPermit<Inbound>, mpsc::error::SendError<()>> {
    match queue {
        Some(queue) => queue.reserve_owned().await,
        None => std::future::pending().await,
    }
}

/// Serves the connection until it must close; returns why.
pub(super) async fn serve(
    session: &mut Session,
    incoming: Incoming<'_>,
    outbound: &mut mpsc::Receiver<Frame>,
    to_uplink: &mut UplinkPath<'_>,
    signals: &Signals<'_>,
    settings: &SessionSettings,
    mode: SessionMode,
) -> Result<Infallible, Exit> {
    let period = settings.heartbeat_interval.max(Duration::from_millis(1));
    let mut heartbeat = tokio::time::interval_at(Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let Incoming {
        stream,
        mut fragments,
    } = incoming;
    let mut rate = RateGate::new(settings);
    // When the connection's token runs out (expiry plus leeway).
    let mut token_deadline = to_uplink.credential.map(|c| deadline_of(c.valid_until));
    // Room in the uplink queue for the next message; the socket is read only
    // while there is some. Before the worker has started there always is.
    let mut permit: Option<Room> = Some(Room::NotStarted);

    loop {
        tokio::select! {
            () = signals.shutdown.cancelled() => return Err(Exit::Shutdown),
            () = signals.slow.cancelled() => return Err(Exit::Slow),
            // While a fragmented message is under way the socket is always
            // read (its permit was taken before its first fragment), so the
            // deadline only ever runs against the client.
            () = until(fragments.deadline()) => return Err(Exit::FragmentTimeout),
            () = until(token_deadline) => return Err(Exit::TokenExpired),
            frame = outbound.recv() => {
                // The registry keeps the sender for as long as the guard lives.
                let frame = frame.ok_or(Exit::Internal("outgoing queue closed"))?;
                signals.write(session, Message::Text((&*frame).into())).await?;
            }
            reserved = reserve(to_uplink.worker.queue().cloned()), if permit.is_none() => {
                let reserved = reserved.map_err(|_| Exit::Internal("uplink worker stopped"))?;
                permit = Some(Room::Reserved(reserved));
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
                        Err(FragmentError::OverBudget) => return Err(Exit::FragmentBudget),
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
                    Handling::Ack(delivery_id) => {
                        if let Some(reply) = to_uplink.uplink.acknowledge(to_uplink.client_id, &delivery_id) {
                            signals.write(session, Message::Text(reply.to_json().into())).await?;
                        }
                    }
                    Handling::Auth(token) => {
                        let reply = match to_uplink.credential {
                            Some(credential) => match credential.renewer.renew(to_uplink.client_id, &token).await {
                                Ok(valid_until) => {
                                    token_deadline = Some(deadline_of(valid_until));
                                    debug!("token renewed");
                                    r#"{"auth":"ok"}"#.to_owned()
                                }
                                Err(why) => auth_error(INVALID_TOKEN, why),
                            },
                            None => auth_error(
                                UNEXPECTED_AUTH,
                                "this connection was not opened with a token".into(),
                            ),
                        };
                        signals.write(session, Message::Text(reply.into())).await?;
                    }
                    Handling::Uplink(inbound) => match permit.take() {
                        Some(Room::Reserved(room)) => {
                            room.send(inbound);
                        }
                        Some(Room::NotStarted) => to_uplink.worker.start_with(inbound),
                        None => {}
                    },
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
