//! The per-connection uplink worker: hands the client's messages to the
//! [`Uplink`] use case one at a time, in the order they arrived, and writes
//! each reply back to the socket.
//!
//! It runs beside the session loop so that a slow publish never holds up the
//! Commands going the other way. When the session ends the worker still
//! publishes what it was already given, but stops trying to reply once the
//! socket is closed, and stops altogether when told to give up (the
//! connection's closing deadline): what the sink has not confirmed by then
//! is counted and logged (`Uplink::count_unconfirmed`), never waited for
//! without limit.
//!
//! [`LazyWorker`] starts it, with its queue, at the connection's first
//! client message: most connections only receive, and an idle connection
//! then costs neither the task nor the queue's first block.

use std::sync::Arc;
use std::time::Duration;

use actix_ws::Session;
use domain::{ClientId, Reply, Uplink};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

/// How many inbound messages may wait for the worker before the session
/// stops reading from the socket.
pub(crate) const QUEUE: usize = 16;

/// One inbound message for the worker.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A text message, to be validated and published.
    Text(String),
    /// A message refused by the session (over the rate limit): only the
    /// reply is sent, in order with the replies to text messages. Boxed:
    /// rare, and it would make every slot of every connection's queue
    /// (tokio allocates 32 at once) about three times bigger.
    Refused(Box<Reply>),
}

/// A connection's uplink worker, started at its first message.
pub(crate) struct LazyWorker {
    queue: Option<mpsc::Sender<Inbound>>,
    running: Option<tokio::task::JoinHandle<()>>,
    start: Option<Start>,
    /// Cancelled at the connection's closing deadline.
    give_up: CancellationToken,
}

/// What the worker is started with.
struct Start {
    uplink: Arc<Uplink>,
    client_id: ClientId,
    session: Session,
    write_timeout: Duration,
}

impl LazyWorker {
    /// A worker for `client_id`'s connection, not started yet.
    pub(crate) fn new(
        uplink: Arc<Uplink>,
        client_id: ClientId,
        session: Session,
        write_timeout: Duration,
    ) -> Self {
        Self {
            queue: None,
            running: None,
            start: Some(Start {
                uplink,
                client_id,
                session,
                write_timeout,
            }),
            give_up: CancellationToken::new(),
        }
    }

    /// Cancelling it makes the worker stop publishing: what it was given and
    /// the sink has not confirmed is counted as such, not waited for.
    pub(crate) fn give_up_token(&self) -> CancellationToken {
        self.give_up.clone()
    }

    /// The worker's queue, if it has started.
    pub(crate) fn queue(&self) -> Option<&mpsc::Sender<Inbound>> {
        self.queue.as_ref()
    }

    /// Starts the worker on the session's local task set (it must be called
    /// from the connection's task) and gives it `first`.
    pub(crate) fn start_with(&mut self, first: Inbound) {
        let Some(start) = self.start.take() else {
            // Started already: the session only calls this before, but a
            // message must never be dropped.
            if let Some(queue) = &self.queue {
                let _ = queue.try_send(first);
            }
            return;
        };
        let (queue, inbox) = mpsc::channel(QUEUE);
        // Empty, with room for QUEUE ≥ 1: cannot fail.
        let _ = queue.try_send(first);
        self.running = Some(actix_web::rt::spawn(
            run(
                inbox,
                start.uplink,
                start.client_id,
                start.session,
                start.write_timeout,
                self.give_up.clone(),
            )
            .in_current_span(),
        ));
        self.queue = Some(queue);
    }

    /// Lets the worker publish what it was given, then waits for it (until
    /// its give-up token is cancelled: see [`LazyWorker::give_up_token`]).
    pub(crate) async fn finish(self) {
        drop(self.queue);
        if let Some(running) = self.running {
            if let Err(e) = running.await {
                tracing::error!(error = %e, "uplink worker failed");
            }
        }
    }
}

/// Runs until the session drops its sender and the queue is empty.
pub(crate) async fn run(
    mut inbox: mpsc::Receiver<Inbound>,
    uplink: Arc<Uplink>,
    client_id: ClientId,
    mut session: Session,
    write_timeout: Duration,
    give_up: CancellationToken,
) {
    let mut can_reply = true;
    loop {
        let inbound = tokio::select! {
            biased;
            () = give_up.cancelled() => return give_up_rest(&mut inbox, &uplink, 0),
            inbound = inbox.recv() => match inbound {
                Some(inbound) => inbound,
                None => return,
            },
        };
        let reply = match inbound {
            Inbound::Text(text) => tokio::select! {
                reply = uplink.handle_text(&client_id, &text) => reply,
                () = give_up.cancelled() => return give_up_rest(&mut inbox, &uplink, 1),
            },
            Inbound::Refused(reply) => {
                uplink.count_rate_limited();
                Some(*reply)
            }
        };
        let Some(reply) = reply else { continue };
        if !can_reply {
            continue;
        }
        match tokio::time::timeout(write_timeout, session.text(reply.to_json())).await {
            Ok(Ok(())) => {}
            Ok(Err(_closed)) => {
                debug!("reply not sent: connection closed");
                can_reply = false;
            }
            Err(_elapsed) => {
                debug!("reply not sent: client stopped reading");
                can_reply = false;
            }
        }
    }
}

/// Counts the messages left in `inbox` (and `abandoned` already taken) as
/// not confirmed, and closes it.
fn give_up_rest(inbox: &mut mpsc::Receiver<Inbound>, uplink: &Uplink, abandoned: u64) {
    inbox.close();
    let mut left = abandoned;
    while let Ok(inbound) = inbox.try_recv() {
        if matches!(inbound, Inbound::Text(_)) {
            left += 1;
        }
    }
    uplink.count_unconfirmed(left);
}
