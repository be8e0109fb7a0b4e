//! The loop that serves one connection until it must close: one flat
//! `select!` over the reasons to close (shutdown, the slow-client signal,
//! the deadline of a fragmented message, the token's expiry), the outgoing
//! queue, room in the uplink queue, the inbound frames and the heartbeat.
//! Each arm hands what it got to a small helper of [`Served`], which holds
//! the connection's protocol state; and every write goes through
//! [`Signals::write`], raced against the reasons to close.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use actix_web::web::Bytes;
use actix_ws::{Item, Message, MessageStream, ProtocolError, Session};
use domain::uplink::{INVALID_TOKEN, UNEXPECTED_AUTH};
use domain::{ClientId, Frame, Reply, Uplink};
use futures_util::SinkExt;
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::gate::{Data, Handling, RateGate};
use super::heartbeat::Heartbeat;
use super::{Credential, SessionMode, SessionSettings};
use crate::close::Exit;
use crate::fragments::{FragmentError, Reassembled, Reassembler};
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
    let Incoming { stream, fragments } = incoming;
    let mut heartbeat = Heartbeat::start(settings);
    let mut served = Served {
        session,
        signals,
        settings,
        mode,
        fragments,
        rate: RateGate::new(settings),
        token_deadline: to_uplink.credential.map(|c| deadline_of(c.valid_until)),
        room: Some(Room::NotStarted),
        to_uplink,
    };
    loop {
        tokio::select! {
            () = signals.shutdown.cancelled() => return Err(Exit::Shutdown),
            () = signals.slow.cancelled() => return Err(Exit::Slow),
            // While a fragmented message is under way the socket is always
            // read (its room was taken before its first fragment), so the
            // deadline only ever runs against the client.
            () = until(served.fragments.deadline()) => return Err(Exit::FragmentTimeout),
            () = until(served.token_deadline) => return Err(Exit::TokenExpired),
            frame = outbound.recv() => served.write_queued(frame).await?,
            room = reserve(served.uplink_queue()), if served.room.is_none() => {
                served.take_room(room)?;
            }
            message = stream.recv(), if served.room.is_some() => {
                heartbeat.heard();
                served.receive(message).await?;
            }
            () = heartbeat.tick() => {
                // While the uplink queue is full the socket is not read, so
                // silence then says nothing about the client.
                if served.room.is_some() && heartbeat.silent() {
                    return Err(Exit::IdleTimeout);
                }
                served.write(Message::Ping(Bytes::new())).await?;
            }
        }
    }
}

/// The state of one served connection, and what it does with each event
/// of the loop.
struct Served<'s, 'a> {
    session: &'s mut Session,
    signals: &'s Signals<'s>,
    settings: &'s SessionSettings,
    mode: SessionMode,
    fragments: Reassembler,
    rate: RateGate,
    to_uplink: &'s mut UplinkPath<'a>,
    /// When the connection's token runs out (expiry plus leeway).
    token_deadline: Option<Instant>,
    /// Room in the uplink queue for the next message; the socket is read
    /// only while there is some. Before the worker has started there always is.
    room: Option<Room>,
}

impl Served<'_, '_> {
    async fn write(&mut self, message: Message) -> Result<(), Exit> {
        self.signals.write(self.session, message).await
    }

    async fn write_text(&mut self, text: String) -> Result<(), Exit> {
        self.write(Message::Text(text.into())).await
    }

    /// Writes a frame from the outgoing queue.
    async fn write_queued(&mut self, frame: Option<Frame>) -> Result<(), Exit> {
        // The registry keeps the sender for as long as the guard lives.
        let frame = frame.ok_or(Exit::Internal("outgoing queue closed"))?;
        self.write(Message::Text((&*frame).into())).await
    }

    /// The running uplink worker's queue; `None` before it has started.
    fn uplink_queue(&self) -> Option<mpsc::Sender<Inbound>> {
        self.to_uplink.worker.queue().cloned()
    }

    fn take_room(
        &mut self,
        reserved: Result<OwnedPermit<Inbound>, mpsc::error::SendError<()>>,
    ) -> Result<(), Exit> {
        let reserved = reserved.map_err(|_| Exit::Internal("uplink worker stopped"))?;
        self.room = Some(Room::Reserved(reserved));
        Ok(())
    }

    /// Takes one item of the client's stream.
    async fn receive(
        &mut self,
        message: Option<Result<Message, ProtocolError>>,
    ) -> Result<(), Exit> {
        let message = match message {
            None => return Err(Exit::ClientGone),
            Some(Err(e)) => {
                return Err(Exit::from_protocol_error(e, self.settings.max_frame_bytes))
            }
            Some(Ok(message)) => message,
        };
        let Some(data) = self.data_of(message).await? else {
            return Ok(());
        };
        let handling = self.rate.handle(data, self.mode)?;
        self.act(handling).await
    }

    /// The complete data message `message` makes, if any; answers a ping.
    async fn data_of(&mut self, message: Message) -> Result<Option<Data>, Exit> {
        Ok(match message {
            Message::Text(text) => Some(Data::Text(text.to_string())),
            Message::Binary(bytes) => Some(Data::Binary(bytes)),
            // Refused at its first fragment, before any is buffered.
            Message::Continuation(Item::FirstBinary(_)) if self.mode == SessionMode::Bridge => {
                return Err(Exit::Binary)
            }
            Message::Continuation(item) => self.reassemble(item)?,
            Message::Ping(payload) => {
                self.write(Message::Pong(payload)).await?;
                None
            }
            Message::Pong(_) | Message::Nop => None,
            Message::Close(reason) => return Err(Exit::ClientClosed(reason)),
        })
    }

    /// Adds a fragment to the message under way; the message once complete.
    fn reassemble(&mut self, item: Item) -> Result<Option<Data>, Exit> {
        match self.fragments.push(item) {
            Ok(Reassembled::Pending) => Ok(None),
            Ok(Reassembled::Text(text)) => Ok(Some(Data::Text(text))),
            Ok(Reassembled::Binary(bytes)) => Ok(Some(Data::Binary(bytes))),
            Err(FragmentError::TooBig) => Err(Exit::TooBig {
                limit: self.settings.max_frame_bytes,
            }),
            Err(FragmentError::OverBudget) => Err(Exit::FragmentBudget),
            Err(FragmentError::InvalidUtf8) => Err(Exit::InvalidUtf8),
        }
    }

    async fn act(&mut self, handling: Handling) -> Result<(), Exit> {
        match handling {
            Handling::Ack(delivery_id) => self.acknowledge(&delivery_id).await,
            Handling::Auth(token) => self.renew(&token).await,
            Handling::Uplink(inbound) => {
                self.hand_to_uplink(inbound);
                Ok(())
            }
            Handling::Echo(message) => self.write(message).await,
            Handling::Reply(reply) => self.write_text(reply.to_json()).await,
        }
    }

    /// Takes the client's acknowledgement of a delivery.
    async fn acknowledge(&mut self, delivery_id: &str) -> Result<(), Exit> {
        let (uplink, client_id) = (self.to_uplink.uplink, self.to_uplink.client_id);
        match uplink.acknowledge(client_id, delivery_id) {
            Some(reply) => self.write_text(reply.to_json()).await,
            None => Ok(()),
        }
    }

    /// Checks a fresh token; a valid one moves the connection's deadline.
    async fn renew(&mut self, token: &str) -> Result<(), Exit> {
        let client_id = self.to_uplink.client_id;
        let reply = match self.to_uplink.credential {
            Some(credential) => match credential.renewer.renew(client_id, token).await {
                Ok(valid_until) => {
                    self.token_deadline = Some(deadline_of(valid_until));
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
        self.write_text(reply).await
    }

    /// Gives a message to the uplink worker, in the room taken for it.
    fn hand_to_uplink(&mut self, inbound: Inbound) {
        match self.room.take() {
            Some(Room::Reserved(room)) => {
                room.send(inbound);
            }
            Some(Room::NotStarted) => self.to_uplink.worker.start_with(inbound),
            None => {}
        }
    }
}

/// Sleeps until `deadline`; forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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
