//! How a connection closes once its loop has stopped: deliveries stop (the
//! frames already queued are flushed first on shutdown), the close frame is
//! recorded and sent, and the last publishes — the `$disconnect` after the
//! `$connect`, beside the uplink worker's last messages — run until the
//! closing deadline.

use std::time::{Duration, SystemTime};

use actix_web::rt::task::JoinHandle;
use actix_ws::{CloseReason, Message, Session};
use domain::presence::DISCONNECT_ACTION;
use domain::{ClientId, Disconnect, Frame, OutboundEvent, Stats, Uplink};
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::close::Exit;
use crate::registry::{ConnectionId, RegistrationGuard};
use crate::uplink_worker::LazyWorker;

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

/// Why the loop stopped, as the close frame should say: `slow` also carries
/// an operator's disconnect, whose code and reason the registry holds.
pub(super) fn with_close_order(exit: Exit, guard: &RegistrationGuard) -> Exit {
    match exit {
        Exit::Slow => guard
            .close_order()
            .map_or(Exit::Slow, |(code, reason)| Exit::Kicked { code, reason }),
        other => other,
    }
}

/// Stops deliveries to the connection: from here on they count as not
/// taken. On shutdown, what was queued already is written first.
pub(super) async fn stop_deliveries(
    session: &mut Session,
    mut outbound: mpsc::Receiver<Frame>,
    exit: &Exit,
) {
    outbound.close();
    if matches!(exit, Exit::Shutdown) {
        flush_queued(session, &mut outbound).await;
    }
}

/// The close frame `exit` is answered with, counted and logged.
pub(super) fn close_reason(exit: &Exit, stats: &Stats) -> Option<CloseReason> {
    let reason = exit.close_reason();
    let code = reason.as_ref().map(|r| u16::from(r.code));
    stats.close_codes.record(code);
    let client_code = match exit {
        Exit::ClientClosed(Some(theirs)) => Some(u16::from(theirs.code)),
        _ => None,
    };
    debug!(
        reason = exit.label(),
        close_code = ?code,
        close_text = ?reason.as_ref().and_then(|r| r.description.as_deref()),
        client_close_code = ?client_code,
        "connection closing"
    );
    reason
}

/// Sends the close frame, waiting at most [`CLOSE_TIMEOUT`] for room.
pub(super) async fn send_close_frame(session: Session, reason: CloseReason) {
    match tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(reason))).await {
        Ok(Ok(())) => {}
        Ok(Err(_closed)) => debug!("close frame not sent: connection already closed"),
        Err(_elapsed) => debug!("close frame not sent: client stopped reading"),
    }
}

/// Publishes the `$connect` in the background, when presence events are on.
pub(super) fn announce_connect(
    uplink: &std::sync::Arc<Uplink>,
    client_id: &ClientId,
    id: ConnectionId,
) -> Option<JoinHandle<()>> {
    uplink.presence().map(|presence| {
        let event = presence.connected(client_id, id.get(), SystemTime::now());
        let uplink = uplink.clone();
        actix_web::rt::spawn(async move { uplink.announce(event).await })
    })
}

/// What a closed connection still has to publish.
pub(super) struct LastPublishes<'a> {
    pub(super) uplink: &'a Uplink,
    pub(super) client_id: &'a ClientId,
    pub(super) id: ConnectionId,
    /// The `$connect` still under way, if any.
    pub(super) connected: Option<JoinHandle<()>>,
    pub(super) worker: LazyWorker,
    pub(super) shutdown: CancellationToken,
}

impl LastPublishes<'_> {
    /// The `$disconnect` (after the `$connect`, never reordered) beside the
    /// worker's last messages, bounded by the closing deadline.
    pub(super) async fn finish(self, reason: Option<&CloseReason>, exit: &Exit) {
        let give_up = self.worker.give_up_token();
        let timer = actix_web::rt::spawn(closing_time(self.shutdown, give_up.clone()));
        let disconnected = self.uplink.presence().map(|presence| {
            let how = disconnect_of(reason, exit);
            presence.disconnected(self.client_id, self.id.get(), SystemTime::now(), how)
        });
        tokio::join!(
            announce_disconnect(self.uplink, self.connected, disconnected, &give_up),
            self.worker.finish()
        );
        timer.abort();
    }
}

/// The close code and reason a `$disconnect` reports: ours when we sent a
/// close frame, else the client's.
fn disconnect_of<'a>(reason: Option<&'a CloseReason>, exit: &'a Exit) -> Disconnect<'a> {
    let (code, reason) = match (reason, exit) {
        (Some(ours), _) => (Some(u16::from(ours.code)), ours.description.as_deref()),
        (None, Exit::ClientClosed(Some(theirs))) => {
            (Some(u16::from(theirs.code)), theirs.description.as_deref())
        }
        (None, _) => (None, None),
    };
    Disconnect { code, reason }
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
