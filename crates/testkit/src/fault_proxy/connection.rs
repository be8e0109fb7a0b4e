//! The connection tasks: accepting (or refusing) connections, reading each
//! request, applying the fault the shared state decides for it, and
//! forwarding to the target over one upstream connection per client
//! connection, until either side closes or a reset is requested.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::canned::{server_error, throttling};
use super::http::{read_message, Kind, Message};
use super::state::{bump, Shared};
use super::{CannedResponse, Fault, Outcome};

/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(_) => {
                // Out of descriptors or similar: wait a little, keep serving.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        bump(&shared.counters.connections);
        if shared.refusing() {
            bump(&shared.counters.refused);
            shared.record("", Outcome::Refused);
            abort(&shared, stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(shared.clone(), stream));
    }
}

/// Closes with a TCP RST.
fn abort(shared: &Shared, stream: TcpStream) {
    bump(&shared.counters.resets);
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Why a connection task stopped early.
enum Stop {
    /// Reset requested: RST the client.
    Reset,
    /// Either side closed or failed: just close.
    Closed,
}

/// How a request that is neither refused nor black-holed is served.
enum Reply {
    /// Answered by the proxy, not forwarded.
    Answer(CannedResponse),
    /// Forwarded, after the first delay (if any), its answer passed back
    /// after the second.
    Forward(Option<Duration>, Duration),
}

async fn serve(shared: Arc<Shared>, mut client: TcpStream) {
    let mut resets = shared.resets.subscribe();
    resets.mark_unchanged();
    let mut client_buf = Vec::new();
    let mut upstream: Option<(TcpStream, Vec<u8>)> = None;
    let stop = loop {
        let request = tokio::select! {
            request = read_message(&mut client, &mut client_buf, Kind::Request) => request,
            _ = resets.changed() => break Stop::Reset,
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) | Err(_) => break Stop::Closed,
        };
        let operation = request.operation();
        let reply = match shared.decide(&operation, request.access_key_id()) {
            Fault::Refuse => break Stop::Reset,
            Fault::BlackHole => {
                bump(&shared.counters.black_holed);
                break swallow(&mut client, &mut resets).await;
            }
            Fault::ServerError => Reply::Answer(server_error(&request)),
            Fault::Throttle => Reply::Answer(throttling(&request)),
            Fault::Respond(canned) => Reply::Answer(canned),
            Fault::PassThrough => Reply::Forward(None, Duration::ZERO),
            Fault::Delay(delay) => Reply::Forward(Some(delay), Duration::ZERO),
            Fault::DelayResponse(delay) => Reply::Forward(None, delay),
        };
        match reply {
            Reply::Answer(canned) => {
                if answer(&shared, &mut client, &canned).await.is_err() {
                    break Stop::Closed;
                }
            }
            Reply::Forward(request_delay, response_delay) => {
                if let Some(delay) = request_delay {
                    if sleep_or_reset(delay, &mut resets).await.is_err() {
                        break Stop::Reset;
                    }
                }
                if let Err(stop) = forward(
                    &shared,
                    &mut client,
                    &mut upstream,
                    &request,
                    response_delay,
                    &mut resets,
                )
                .await
                {
                    break stop;
                }
            }
        }
    };
    if let Some((upstream, _)) = upstream {
        drop(upstream);
    }
    match stop {
        Stop::Reset => abort(&shared, client),
        Stop::Closed => drop(client),
    }
}

async fn sleep_or_reset(delay: Duration, resets: &mut watch::Receiver<u64>) -> Result<(), ()> {
    tokio::select! {
        () = tokio::time::sleep(delay) => Ok(()),
        _ = resets.changed() => Err(()),
    }
}

/// Reads and drops whatever the client sends until it closes or a reset.
async fn swallow(client: &mut TcpStream, resets: &mut watch::Receiver<u64>) -> Stop {
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return Stop::Closed,
                Ok(_) => {}
            },
            _ = resets.changed() => return Stop::Reset,
        }
    }
}

async fn answer(
    shared: &Shared,
    client: &mut TcpStream,
    canned: &CannedResponse,
) -> io::Result<()> {
    bump(&shared.counters.answered);
    client.write_all(&canned.to_bytes()).await
}

/// Sends the request to the target and its answer back. `Err` ends the connection.
async fn forward(
    shared: &Shared,
    client: &mut TcpStream,
    upstream: &mut Option<(TcpStream, Vec<u8>)>,
    request: &Message,
    response_delay: Duration,
    resets: &mut watch::Receiver<u64>,
) -> Result<(), Stop> {
    if upstream.is_none() {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.target));
        let stream = tokio::select! {
            connected = connect => match connected {
                Ok(Ok(stream)) => stream,
                // The target is down: the client sees a reset.
                _ => return Err(Stop::Reset),
            },
            _ = resets.changed() => return Err(Stop::Reset),
        };
        let _ = stream.set_nodelay(true);
        *upstream = Some((stream, Vec::new()));
    }
    let Some((target, target_buf)) = upstream.as_mut() else {
        return Err(Stop::Closed);
    };
    bump(&shared.counters.forwarded);
    if target.write_all(&request.raw).await.is_err() {
        return Err(Stop::Reset);
    }
    loop {
        let response = tokio::select! {
            response = read_message(target, target_buf, Kind::Response) => response,
            _ = resets.changed() => return Err(Stop::Reset),
        };
        let response = match response {
            Ok(Some(response)) => response,
            // The target hung up without answering: so does the proxy.
            Ok(None) | Err(_) => return Err(Stop::Reset),
        };
        if !response_delay.is_zero() && sleep_or_reset(response_delay, resets).await.is_err() {
            return Err(Stop::Reset);
        }
        if shared.black_holing() {
            bump(&shared.counters.black_holed);
            return Err(swallow(client, resets).await);
        }
        if client.write_all(&response.raw).await.is_err() {
            return Err(Stop::Closed);
        }
        // An interim answer (100 Continue) is followed by the real one.
        if response
            .status
            .is_some_and(|s| (100..200).contains(&s) && s != 101)
        {
            continue;
        }
        if response.close {
            let _ = client.shutdown().await;
            return Err(Stop::Closed);
        }
        return Ok(());
    }
}
