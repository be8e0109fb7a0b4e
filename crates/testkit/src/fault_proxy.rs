//! A loopback TCP proxy that injects faults between the code under test and
//! its server (moto), switched at run time by the test.
//!
//! The proxy listens on `127.0.0.1:0` and forwards to a target address. It
//! understands just enough HTTP/1.1 to find where each request and each
//! response ends (`Content-Length`, chunked, or close-delimited), so a fault
//! applies to single requests even on keep-alive connections. For each
//! request it takes the first matching [injected rule](FaultProxy::inject),
//! else the [standing mode](FaultProxy::set), and does one of:
//!
//! - [`Fault::PassThrough`]: forward it, pass the answer back;
//! - [`Fault::Refuse`]: reset the connection (TCP RST). As the standing mode
//!   it also resets every open connection at once and every new one as soon
//!   as it is accepted: the server is "down";
//! - [`Fault::BlackHole`]: read it and never answer; the connection stays
//!   silent until the client gives up (a network partition, a hung server);
//! - [`Fault::Delay`] / [`Fault::DelayResponse`]: forward it late, or pass
//!   the answer back late (the server has acted on it meanwhile);
//! - [`Fault::ServerError`], [`Fault::Throttle`], [`Fault::Respond`]: answer
//!   it with an error without forwarding it. The error is shaped for the
//!   request's protocol: SQS's JSON protocol (an `X-Amz-Target` header) gets
//!   a JSON body and `x-amzn-query-error`, SNS's query protocol an XML
//!   `<ErrorResponse>`.
//!
//! Every request and every refused connection is recorded ([`FaultProxy::seen`])
//! with its time, its operation (`ReceiveMessage`, `PublishBatch`, from the
//! `X-Amz-Target` header or the `Action` form field) and what the proxy did,
//! so a test can assert "at most a few attempts per second while down".
//!
//! It runs on a thread of its own with its own tokio runtime: it works from
//! any test, whatever runtime that test uses, and stops when dropped.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use testkit::{Fault, FaultProxy, Limit};
//! let proxy = FaultProxy::start(testkit::moto().endpoint());
//! let config = proxy.sdk_config().await; // clients built from it go through the proxy
//! proxy.set(Fault::Refuse); // SQS and SNS are down
//! proxy.set(Fault::PassThrough); // and back
//! proxy.inject_for("ReceiveMessage", Fault::Throttle, Limit::Times(3));
//! proxy.inject(Fault::ServerError, Limit::For(Duration::from_secs(2)));
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Longest request or response head the proxy accepts.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the proxy does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and pass the answer back.
    PassThrough,
    /// Reset the connection. As the standing mode ([`FaultProxy::set`]), also
    /// every open connection at once and every new one when it is accepted.
    Refuse,
    /// Read it, never answer, and keep the connection silent from then on
    /// (it cannot carry another request: its answer would be out of step).
    /// As the standing mode, an answer arriving from the target for a request
    /// forwarded earlier is swallowed too.
    BlackHole,
    /// Forward it after this long.
    Delay(Duration),
    /// Forward it at once, pass the answer back after this long.
    DelayResponse(Duration),
    /// Answer `500 Internal Server Error` (`InternalError`) without forwarding.
    ServerError,
    /// Answer `400` with a throttling error without forwarding: SQS JSON
    /// (`x-amzn-query-error: Throttling;Sender`, `__type`
    /// `com.amazonaws.sqs#ThrottlingException`) or SNS query
    /// (`<Type>Sender</Type><Code>Throttling</Code>`), by the request's protocol.
    Throttle,
    /// Answer with this response without forwarding.
    Respond(CannedResponse),
}

/// A complete HTTP answer the proxy sends instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers (`Content-Length` is added).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

/// How long an injected rule lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// For the next `n` matching requests.
    Times(u64),
    /// For matching requests from now until this long has passed.
    For(Duration),
}

/// What the proxy did with one request or connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded to the target (perhaps late).
    Forwarded,
    /// The connection was reset: a new connection while refusing (then the
    /// operation is unknown, and empty), or a request under [`Fault::Refuse`].
    Refused,
    /// Read and never answered.
    BlackHoled,
    /// Answered by the proxy with this status.
    Answered(u16),
}

/// One request (or refused connection) the proxy saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// When the proxy saw it.
    pub at: Instant,
    /// The operation (`ReceiveMessage`, `Publish`, …); empty when unknown.
    pub operation: String,
    /// What the proxy did.
    pub outcome: Outcome,
}

/// Counts of what the proxy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted (including those reset at once).
    pub connections: u64,
    /// Complete requests read, whatever happened to them.
    pub requests: u64,
    /// Requests forwarded to the target.
    pub forwarded: u64,
    /// Requests answered by the proxy itself.
    pub answered: u64,
    /// Requests swallowed by a black hole.
    pub black_holed: u64,
    /// Connections reset as soon as they were accepted (standing mode
    /// [`Fault::Refuse`]), before any request could be read.
    pub refused: u64,
    /// Connections reset in all: refused ones, ones reset at a request, and
    /// ones reset by [`FaultProxy::reset_connections`] or a switch to [`Fault::Refuse`].
    pub resets: u64,
}

impl ProxyStats {
    /// What clients tried: requests read plus connections refused before any
    /// request could be read (each attempt of an SDK call is one or the other).
    pub fn attempts(&self) -> u64 {
        self.requests + self.refused
    }
}

/// A running fault-injecting proxy; stops (closing every connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `target`
    /// (`http://host:port[/…]` or `host:port`), passing everything through.
    /// Panics if the target cannot be resolved or nothing can be bound.
    pub fn start(target: &str) -> Self {
        let target_addr = target_addr(target)
            .unwrap_or_else(|| panic!("fault proxy: cannot resolve the target {target:?}"));
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("fault proxy: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("fault proxy: no local address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("fault proxy: cannot make the listener non-blocking: {e}"));
        let (resets, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            target: target_addr,
            state: Mutex::new(State {
                mode: Fault::PassThrough,
                rules: Vec::new(),
                seen: Vec::new(),
            }),
            resets,
            counters: Counters::default(),
        });
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("fault proxy: cannot build its runtime: {e}"));
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => panic!("fault proxy: cannot register the listener: {e}"),
                    };
                    tokio::select! {
                        () = accept_loop(listener, thread_shared) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime cancels every connection task.
            })
            .unwrap_or_else(|e| panic!("fault proxy: cannot spawn its thread: {e}"));
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: use it as the AWS endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An SDK configuration whose clients go through this proxy (test region,
    /// static credentials, the workspace's HTTP client; no timeouts of its own).
    pub async fn sdk_config(&self) -> SdkConfig {
        crate::server::sdk_config_at(&self.endpoint()).await
    }

    /// Environment for a child process whose AWS calls must go through this
    /// proxy: `AWS_ENDPOINT_URL`, `AWS_REGION` and static credentials.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        crate::server::env_vars_at(&self.endpoint())
    }

    /// Sets the standing mode, used for every request no injected rule takes.
    /// Switching to [`Fault::Refuse`] resets every open connection at once.
    pub fn set(&self, fault: Fault) {
        let refuse = fault == Fault::Refuse;
        self.shared.lock().mode = fault;
        if refuse {
            self.reset_connections();
        }
    }

    /// The standing mode.
    pub fn mode(&self) -> Fault {
        self.shared.lock().mode.clone()
    }

    /// Applies `fault` to the next requests of any operation, within `limit`.
    /// Rules are tried in the order they were injected, before the standing mode.
    pub fn inject(&self, fault: Fault, limit: Limit) {
        self.add_rule(None, fault, limit);
    }

    /// Applies `fault` to the next requests of `operation` only (e.g.
    /// `"DeleteMessageBatch"`, `"PublishBatch"`), within `limit`.
    pub fn inject_for(&self, operation: &str, fault: Fault, limit: Limit) {
        self.add_rule(Some(operation.to_owned()), fault, limit);
    }

    /// Back to plain forwarding: standing mode [`Fault::PassThrough`], no rules.
    /// Connections already black-holed stay silent.
    pub fn heal(&self) {
        let mut state = self.shared.lock();
        state.mode = Fault::PassThrough;
        state.rules.clear();
    }

    /// Resets (TCP RST) every connection open now, idle or busy.
    pub fn reset_connections(&self) {
        self.shared.resets.send_modify(|epoch| *epoch += 1);
    }

    /// Every request and refused connection seen so far, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// How many requests of `operation` (every operation: `None`) were seen
    /// since `since` (a refused connection counts as an attempt of unknown
    /// operation, so only under `None`).
    pub fn attempts_since(&self, operation: Option<&str>, since: Instant) -> usize {
        self.shared
            .lock()
            .seen
            .iter()
            .filter(|s| s.at >= since)
            .filter(|s| operation.is_none_or(|op| s.operation == op))
            .count()
    }

    /// The counters.
    pub fn stats(&self) -> ProxyStats {
        self.shared.counters.snapshot()
    }

    fn add_rule(&self, operation: Option<String>, fault: Fault, limit: Limit) {
        let (remaining, until) = match limit {
            Limit::Times(n) => (Some(n), None),
            Limit::For(d) => (None, Some(Instant::now() + d)),
        };
        self.shared.lock().rules.push(Rule {
            operation,
            fault,
            remaining,
            until,
        });
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state

struct Rule {
    operation: Option<String>,
    fault: Fault,
    remaining: Option<u64>,
    until: Option<Instant>,
}

impl Rule {
    fn live(&self, now: Instant) -> bool {
        self.remaining.is_none_or(|n| n > 0) && self.until.is_none_or(|t| now < t)
    }
}

struct State {
    mode: Fault,
    rules: Vec<Rule>,
    seen: Vec<Seen>,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    requests: AtomicU64,
    forwarded: AtomicU64,
    answered: AtomicU64,
    black_holed: AtomicU64,
    refused: AtomicU64,
    resets: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ProxyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStats {
            connections: get(&self.connections),
            requests: get(&self.requests),
            forwarded: get(&self.forwarded),
            answered: get(&self.answered),
            black_holed: get(&self.black_holed),
            refused: get(&self.refused),
            resets: get(&self.resets),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    /// Bumped to reset every open connection.
    resets: watch::Sender<u64>,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refusing(&self) -> bool {
        self.lock().mode == Fault::Refuse
    }

    fn black_holing(&self) -> bool {
        self.lock().mode == Fault::BlackHole
    }

    fn record(&self, operation: &str, outcome: Outcome) {
        self.lock().seen.push(Seen {
            at: Instant::now(),
            operation: operation.to_owned(),
            outcome,
        });
    }

    /// Picks the fault for a request and records the request.
    fn decide(&self, operation: &str) -> Fault {
        let now = Instant::now();
        let mut state = self.lock();
        state.rules.retain(|r| r.live(now));
        let fault = match state
            .rules
            .iter_mut()
            .find(|r| r.operation.as_deref().is_none_or(|op| op == operation))
        {
            Some(rule) => {
                if let Some(n) = rule.remaining.as_mut() {
                    *n -= 1;
                }
                rule.fault.clone()
            }
            None => state.mode.clone(),
        };
        bump(&self.counters.requests);
        let outcome = match &fault {
            Fault::PassThrough | Fault::Delay(_) | Fault::DelayResponse(_) => Outcome::Forwarded,
            Fault::Refuse => Outcome::Refused,
            Fault::BlackHole => Outcome::BlackHoled,
            Fault::ServerError => Outcome::Answered(500),
            Fault::Throttle => Outcome::Answered(400),
            Fault::Respond(canned) => Outcome::Answered(canned.status),
        };
        state.seen.push(Seen {
            at: now,
            operation: operation.to_owned(),
            outcome,
        });
        fault
    }
}

// ---------------------------------------------------------------------------
// Connections

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
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
        match shared.decide(&operation) {
            Fault::Refuse => break Stop::Reset,
            Fault::BlackHole => {
                bump(&shared.counters.black_holed);
                break swallow(&mut client, &mut resets).await;
            }
            Fault::ServerError => {
                if answer(&shared, &mut client, &server_error(&request))
                    .await
                    .is_err()
                {
                    break Stop::Closed;
                }
            }
            Fault::Throttle => {
                if answer(&shared, &mut client, &throttling(&request))
                    .await
                    .is_err()
                {
                    break Stop::Closed;
                }
            }
            Fault::Respond(canned) => {
                if answer(&shared, &mut client, &canned).await.is_err() {
                    break Stop::Closed;
                }
            }
            Fault::PassThrough => {
                if let Err(stop) = forward(
                    &shared,
                    &mut client,
                    &mut upstream,
                    &request,
                    Duration::ZERO,
                    &mut resets,
                )
                .await
                {
                    break stop;
                }
            }
            Fault::Delay(delay) => {
                if sleep_or_reset(delay, &mut resets).await.is_err() {
                    break Stop::Reset;
                }
                if let Err(stop) = forward(
                    &shared,
                    &mut client,
                    &mut upstream,
                    &request,
                    Duration::ZERO,
                    &mut resets,
                )
                .await
                {
                    break stop;
                }
            }
            Fault::DelayResponse(delay) => {
                if let Err(stop) = forward(
                    &shared,
                    &mut client,
                    &mut upstream,
                    &request,
                    delay,
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

// ---------------------------------------------------------------------------
// HTTP/1.1 framing, just enough to find message boundaries

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
}

/// One complete HTTP message, byte for byte.
#[derive(Debug)]
struct Message {
    /// The request or status line.
    #[cfg_attr(not(test), allow(dead_code))]
    start: String,
    raw: Vec<u8>,
    /// Lower-cased header names with their values.
    headers: Vec<(String, String)>,
    /// Where the body starts in `raw`.
    body_start: usize,
    /// The status of a response.
    status: Option<u16>,
    /// The connection ends after this message.
    close: bool,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn body(&self) -> &[u8] {
        &self.raw[self.body_start..]
    }

    /// The AWS operation: `X-Amz-Target: AmazonSQS.ReceiveMessage` (JSON
    /// protocols) or the `Action` field of a form body (query protocols).
    fn operation(&self) -> String {
        if let Some(target) = self.header("x-amz-target") {
            return target.rsplit('.').next().unwrap_or(target).to_owned();
        }
        let body = String::from_utf8_lossy(self.body());
        body.split('&')
            .find_map(|pair| pair.strip_prefix("Action="))
            .unwrap_or_default()
            .to_owned()
    }

    fn is_json_protocol(&self) -> bool {
        self.header("x-amz-target").is_some()
            || self
                .header("content-type")
                .is_some_and(|t| t.contains("amz-json"))
    }
}

/// Reads one message from `stream`, keeping bytes beyond it in `buf`.
/// `Ok(None)`: the peer closed cleanly between messages.
async fn read_message(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    kind: Kind,
) -> io::Result<Option<Message>> {
    let head_end = loop {
        if let Some(pos) = find(buf, b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(invalid("HTTP head too large"));
        }
        if fill(stream, buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let status = match kind {
        Kind::Request => None,
        Kind::Response => start.split_whitespace().nth(1).and_then(|s| s.parse().ok()),
    };
    let http10 = start.contains("HTTP/1.0");
    let connection = header("connection").map(str::to_ascii_lowercase);
    let mut close = connection.as_deref() == Some("close")
        || (http10 && connection.as_deref() != Some("keep-alive"));
    let chunked =
        header("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let length = header("content-length").and_then(|l| l.parse::<usize>().ok());
    let bodiless = status.is_some_and(|s| (100..200).contains(&s) || s == 204 || s == 304);

    let end = if bodiless {
        head_end
    } else if chunked {
        chunked_end(stream, buf, head_end).await?
    } else if let Some(length) = length {
        while buf.len() < head_end + length {
            if fill(stream, buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        head_end + length
    } else if kind == Kind::Response {
        // Close-delimited body.
        while fill(stream, buf).await? > 0 {}
        close = true;
        buf.len()
    } else {
        head_end
    };
    let raw: Vec<u8> = buf.drain(..end).collect();
    Ok(Some(Message {
        start: start.to_owned(),
        raw,
        headers,
        body_start: head_end,
        status,
        close,
    }))
}

/// Reads a chunked body starting at `start`; returns where the message ends.
async fn chunked_end(stream: &mut TcpStream, buf: &mut Vec<u8>, start: usize) -> io::Result<usize> {
    let mut at = start;
    loop {
        let line_end = loop {
            if let Some(pos) = find(&buf[at..], b"\r\n") {
                break at + pos;
            }
            if fill(stream, buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        };
        let line = String::from_utf8_lossy(&buf[at..line_end]).into_owned();
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| invalid("bad chunk size"))?;
        at = line_end + 2;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let end = loop {
                    if let Some(pos) = find(&buf[at..], b"\r\n") {
                        break at + pos;
                    }
                    if fill(stream, buf).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(at);
                }
            }
        }
        while buf.len() < at + size + 2 {
            if fill(stream, buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        at += size + 2;
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

// ---------------------------------------------------------------------------
// Canned answers

static ANSWERS: AtomicU64 = AtomicU64::new(0);

fn request_id() -> String {
    format!("fault-proxy-{:08}", ANSWERS.fetch_add(1, Ordering::Relaxed))
}

impl CannedResponse {
    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            403 => "Forbidden",
            500 => "Internal Server Error",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Injected",
        };
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
        out.push_str(&self.body);
        out.into_bytes()
    }

    /// An AWS JSON-protocol error (SQS): `__type` and the query-compatible
    /// `x-amzn-query-error` header that the SDK reads the code from.
    pub fn aws_json_error(status: u16, code: &str, fault: &str, message: &str) -> Self {
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.sqs#{code}"),
            "message": message,
        })
        .to_string();
        Self {
            status,
            headers: vec![
                ("Content-Type".into(), "application/x-amz-json-1.0".into()),
                ("x-amzn-query-error".into(), format!("{code};{fault}")),
                ("x-amzn-RequestId".into(), request_id()),
            ],
            body,
        }
    }

    /// An AWS query-protocol error (SNS): an XML `<ErrorResponse>`.
    pub fn aws_query_error(status: u16, code: &str, fault: &str, message: &str) -> Self {
        let body = format!(
            "<ErrorResponse xmlns=\"http://sns.amazonaws.com/doc/2010-03-31/\"><Error>\
             <Type>{fault}</Type><Code>{code}</Code><Message>{message}</Message></Error>\
             <RequestId>{}</RequestId></ErrorResponse>",
            request_id()
        );
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/xml".into())],
            body,
        }
    }
}

fn protocol_error(request: &Message, status: u16, code: &str, fault: &str) -> CannedResponse {
    let message = "injected by the fault proxy";
    if request.is_json_protocol() {
        CannedResponse::aws_json_error(status, code, fault, message)
    } else {
        CannedResponse::aws_query_error(status, code, fault, message)
    }
}

fn throttling(request: &Message) -> CannedResponse {
    if request.is_json_protocol() {
        let mut canned = CannedResponse::aws_json_error(
            400,
            "ThrottlingException",
            "Sender",
            "Rate exceeded (injected by the fault proxy)",
        );
        // SQS names the code `Throttling` in its query-compatible header.
        for (name, value) in &mut canned.headers {
            if name == "x-amzn-query-error" {
                *value = "Throttling;Sender".into();
            }
        }
        canned
    } else {
        protocol_error(request, 400, "Throttling", "Sender")
    }
}

fn server_error(request: &Message) -> CannedResponse {
    protocol_error(request, 500, "InternalError", "Receiver")
}

fn target_addr(target: &str) -> Option<SocketAddr> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .unwrap_or(target);
    let authority = rest.split('/').next()?;
    authority.to_socket_addrs().ok()?.next()
}

/// How many of each operation were seen (handy in failure messages).
pub fn operations(seen: &[Seen]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in seen {
        *counts.entry(s.operation.clone()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A tiny HTTP/1.1 server standing in for moto: answers each request
    /// with 200 and `op=<operation> conn=<connection number>`; the path
    /// `/chunked` answers with a chunked body, `/close` with a
    /// close-delimited one. Counts the requests it served.
    async fn upstream() -> (String, Arc<AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let counter = served.clone();
        tokio::spawn(async move {
            let mut connection = 0u64;
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                connection += 1;
                let served = counter.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Ok(Some(request)) =
                        read_message(&mut stream, &mut buf, Kind::Request).await
                    {
                        served.fetch_add(1, Ordering::SeqCst);
                        let body = format!("op={} conn={connection}", request.operation());
                        let path = request.start.split_whitespace().nth(1).unwrap_or("/");
                        let response = match path {
                            "/chunked" => format!(
                                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                                 3\r\nop=\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                                body.len() - 3,
                                &body[3..]
                            ),
                            "/close" => {
                                format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{body}")
                            }
                            _ => format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            ),
                        };
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                        if path == "/close" {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), served)
    }

    fn sqs(operation: &str) -> Vec<u8> {
        format!(
            "POST / HTTP/1.1\r\nHost: sqs\r\nX-Amz-Target: AmazonSQS.{operation}\r\n\
             Content-Type: application/x-amz-json-1.0\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .into_bytes()
    }

    fn sns(action: &str, path: &str) -> Vec<u8> {
        let body = format!("Action={action}&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3Ax");
        format!(
            "POST {path} HTTP/1.1\r\nHost: sns\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        async fn connect(proxy: &FaultProxy) -> Self {
            Self {
                stream: TcpStream::connect(proxy.addr()).await.unwrap(),
                buf: Vec::new(),
            }
        }

        /// Sends a request; the answer within `within`, `None` if none came,
        /// `Some(Err)` if the connection failed or closed instead.
        async fn call(
            &mut self,
            request: &[u8],
            within: Duration,
        ) -> Option<Result<(u16, String, Message), String>> {
            if let Err(e) = self.stream.write_all(request).await {
                return Some(Err(e.to_string()));
            }
            let read = read_message(&mut self.stream, &mut self.buf, Kind::Response);
            match tokio::time::timeout(within, read).await {
                Err(_) => None,
                Ok(Ok(Some(m))) => {
                    let body = String::from_utf8_lossy(m.body()).into_owned();
                    Some(Ok((m.status.unwrap_or_default(), body, m)))
                }
                Ok(Ok(None)) => Some(Err("closed".into())),
                Ok(Err(e)) => Some(Err(e.to_string())),
            }
        }

        async fn ok(&mut self, request: &[u8]) -> (u16, String, Message) {
            match self.call(request, Duration::from_secs(5)).await {
                Some(Ok(answer)) => answer,
                other => panic!("expected an answer, got {other:?}"),
            }
        }
    }

    const SOON: Duration = Duration::from_secs(5);
    const QUIET: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn passes_requests_through_on_one_keep_alive_connection() {
        let (target, served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        assert!(proxy.endpoint().starts_with("http://127.0.0.1:"));
        let mut client = Client::connect(&proxy).await;
        let (status, body, _) = client.ok(&sqs("ReceiveMessage")).await;
        assert_eq!((status, body.as_str()), (200, "op=ReceiveMessage conn=1"));
        let (status, body, _) = client.ok(&sns("Publish", "/")).await;
        assert_eq!((status, body.as_str()), (200, "op=Publish conn=1"));
        let (status, body, _) = client.ok(&sqs("DeleteMessageBatch")).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "op=DeleteMessageBatch conn=1")
        );

        assert_eq!(served.load(Ordering::SeqCst), 3);
        let stats = proxy.stats();
        assert_eq!(
            (
                stats.connections,
                stats.requests,
                stats.forwarded,
                stats.answered
            ),
            (1, 3, 3, 0),
            "{stats:?}"
        );
        let seen = proxy.seen();
        let ops: Vec<&str> = seen.iter().map(|s| s.operation.as_str()).collect();
        assert_eq!(ops, ["ReceiveMessage", "Publish", "DeleteMessageBatch"]);
        assert!(seen.iter().all(|s| s.outcome == Outcome::Forwarded));
        assert_eq!(operations(&seen).get("Publish"), Some(&1));
    }

    #[tokio::test]
    async fn throttles_the_next_n_requests_of_one_operation_in_its_protocol() {
        let (target, served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        proxy.inject_for("ReceiveMessage", Fault::Throttle, Limit::Times(2));
        proxy.inject_for("Publish", Fault::Throttle, Limit::Times(1));
        let mut client = Client::connect(&proxy).await;

        let (status, body, message) = client.ok(&sqs("ReceiveMessage")).await;
        assert_eq!(status, 400);
        assert_eq!(
            message.header("x-amzn-query-error"),
            Some("Throttling;Sender")
        );
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["__type"], "com.amazonaws.sqs#ThrottlingException");
        // Another operation is not affected, and the connection stays usable.
        assert_eq!(client.ok(&sqs("DeleteMessageBatch")).await.0, 200);
        assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 400);
        assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);

        let (status, body, message) = client.ok(&sns("Publish", "/")).await;
        assert_eq!(status, 400);
        assert_eq!(message.header("content-type"), Some("text/xml"));
        assert!(
            body.contains("<Type>Sender</Type><Code>Throttling</Code>"),
            "{body}"
        );
        assert_eq!(client.ok(&sns("Publish", "/")).await.0, 200);

        assert_eq!(served.load(Ordering::SeqCst), 3);
        let stats = proxy.stats();
        assert_eq!((stats.requests, stats.answered), (6, 3), "{stats:?}");
        assert_eq!(
            proxy.attempts_since(Some("ReceiveMessage"), Instant::now() - SOON),
            3
        );
    }

    #[tokio::test]
    async fn answers_server_errors_for_a_time_window() {
        let (target, served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        proxy.inject(Fault::ServerError, Limit::For(Duration::from_millis(300)));
        let mut client = Client::connect(&proxy).await;
        let (status, body, _) = client.ok(&sqs("ReceiveMessage")).await;
        assert_eq!(status, 500);
        assert!(body.contains("InternalError"), "{body}");
        let (status, body, _) = client.ok(&sns("PublishBatch", "/")).await;
        assert_eq!(status, 500);
        assert!(body.contains("<Code>InternalError</Code>"), "{body}");
        assert_eq!(served.load(Ordering::SeqCst), 0);

        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_canned_response_is_sent_as_given() {
        let (target, _served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        let canned = CannedResponse {
            status: 503,
            headers: vec![("X-Test".into(), "yes".into())],
            body: "try later".into(),
        };
        proxy.inject(Fault::Respond(canned), Limit::Times(1));
        let mut client = Client::connect(&proxy).await;
        let (status, body, message) = client.ok(&sqs("ReceiveMessage")).await;
        assert_eq!((status, body.as_str()), (503, "try later"));
        assert_eq!(message.header("x-test"), Some("yes"));
        assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);
    }

    #[tokio::test]
    async fn refuse_resets_open_and_new_connections_until_healed() {
        let (target, served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        let mut open = Client::connect(&proxy).await;
        assert_eq!(open.ok(&sqs("ReceiveMessage")).await.0, 200);

        proxy.set(Fault::Refuse);
        assert_eq!(proxy.mode(), Fault::Refuse);
        // The open connection was reset: no answer, an error instead.
        let answer = open.call(&sqs("ReceiveMessage"), SOON).await;
        assert!(matches!(answer, Some(Err(_))), "{answer:?}");
        // So is every new one (the reset may even beat the end of `connect`).
        for _ in 0..3 {
            if let Ok(stream) = TcpStream::connect(proxy.addr()).await {
                let mut fresh = Client {
                    stream,
                    buf: Vec::new(),
                };
                let answer = fresh.call(&sqs("ReceiveMessage"), SOON).await;
                assert!(matches!(answer, Some(Err(_))), "{answer:?}");
            }
        }
        assert_eq!(served.load(Ordering::SeqCst), 1);
        let stats = proxy.stats();
        assert_eq!(stats.refused, 3, "{stats:?}");
        assert!(stats.resets >= 4, "{stats:?}");
        assert_eq!(stats.attempts(), stats.requests + 3);

        proxy.heal();
        let mut after = Client::connect(&proxy).await;
        assert_eq!(after.ok(&sqs("ReceiveMessage")).await.0, 200);
        assert_eq!(served.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refuse_rule_resets_only_the_matching_requests() {
        let (target, _served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        proxy.inject_for("DeleteMessageBatch", Fault::Refuse, Limit::Times(1));
        let mut client = Client::connect(&proxy).await;
        assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);
        let answer = client.call(&sqs("DeleteMessageBatch"), SOON).await;
        assert!(matches!(answer, Some(Err(_))), "{answer:?}");
        let mut again = Client::connect(&proxy).await;
        assert_eq!(again.ok(&sqs("DeleteMessageBatch")).await.0, 200);
        let refused: Vec<Seen> = proxy
            .seen()
            .into_iter()
            .filter(|s| s.outcome == Outcome::Refused)
            .collect();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].operation, "DeleteMessageBatch");
    }

    #[tokio::test]
    async fn a_black_hole_reads_and_never_answers() {
        let (target, served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        proxy.set(Fault::BlackHole);
        let mut client = Client::connect(&proxy).await;
        assert!(client.call(&sqs("ReceiveMessage"), QUIET).await.is_none());
        assert_eq!(served.load(Ordering::SeqCst), 0);
        assert_eq!(proxy.stats().black_holed, 1);

        // Healed: new connections work; the swallowed one stays silent.
        proxy.heal();
        assert!(client.call(&sqs("ReceiveMessage"), QUIET).await.is_none());
        let mut fresh = Client::connect(&proxy).await;
        assert_eq!(fresh.ok(&sqs("ReceiveMessage")).await.0, 200);
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_black_hole_swallows_the_answer_to_a_request_already_forwarded() {
        let (target, served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        // The answer is held for a while; the black hole starts meanwhile.
        proxy.inject(
            Fault::DelayResponse(Duration::from_millis(300)),
            Limit::Times(1),
        );
        let mut client = Client::connect(&proxy).await;
        let request = sqs("ReceiveMessage");
        let call = client.call(&request, Duration::from_millis(800));
        let switch = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            proxy.set(Fault::BlackHole);
        };
        let (answer, ()) = tokio::join!(call, switch);
        assert!(answer.is_none(), "{answer:?}");
        assert_eq!(served.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn delays_the_request_or_its_answer() {
        let (target, served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        let delay = Duration::from_millis(300);
        let mut client = Client::connect(&proxy).await;

        proxy.inject(Fault::Delay(delay), Limit::Times(1));
        let started = Instant::now();
        let request = sqs("ReceiveMessage");
        let call = client.ok(&request);
        let early = async {
            tokio::time::sleep(delay / 3).await;
            served.load(Ordering::SeqCst)
        };
        let ((status, _, _), early) = tokio::join!(call, early);
        assert_eq!(status, 200);
        assert!(started.elapsed() >= delay);
        assert_eq!(early, 0, "the request was forwarded before its delay");

        proxy.inject(Fault::DelayResponse(delay), Limit::Times(1));
        let started = Instant::now();
        let request = sqs("ReceiveMessage");
        let call = client.ok(&request);
        let early = async {
            tokio::time::sleep(delay / 3).await;
            served.load(Ordering::SeqCst)
        };
        let ((status, _, _), early) = tokio::join!(call, early);
        assert_eq!(status, 200);
        assert!(started.elapsed() >= delay);
        assert_eq!(early, 2, "the request was not forwarded at once");
    }

    #[tokio::test]
    async fn reset_connections_resets_an_idle_connection() {
        let (target, _served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        let mut client = Client::connect(&proxy).await;
        assert_eq!(client.ok(&sqs("ReceiveMessage")).await.0, 200);
        proxy.reset_connections();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let answer = client.call(&sqs("ReceiveMessage"), SOON).await;
        assert!(matches!(answer, Some(Err(_))), "{answer:?}");
        // Only that connection: new ones are served.
        let mut fresh = Client::connect(&proxy).await;
        assert_eq!(fresh.ok(&sqs("ReceiveMessage")).await.0, 200);
    }

    #[tokio::test]
    async fn chunked_and_close_delimited_answers_are_passed_whole() {
        let (target, _served) = upstream().await;
        let proxy = FaultProxy::start(&target);
        let mut client = Client::connect(&proxy).await;
        let (status, body, message) = client.ok(&sns("Publish", "/chunked")).await;
        assert_eq!(status, 200);
        assert_eq!(message.header("transfer-encoding"), Some("chunked"));
        assert!(body.ends_with("0\r\n\r\n"), "{body:?}");
        assert!(body.contains("Publish conn=1"), "{body:?}");
        // Still in step on the same connection.
        assert_eq!(client.ok(&sns("Publish", "/")).await.1, "op=Publish conn=1");

        let (status, body, message) = client.ok(&sns("Publish", "/close")).await;
        assert_eq!((status, body.as_str()), (200, "op=Publish conn=1"));
        assert!(message.close);
        // The proxy closes the client's side too.
        let answer = client.call(&sns("Publish", "/"), SOON).await;
        assert!(matches!(answer, Some(Err(_))), "{answer:?}");
    }

    #[test]
    fn works_without_a_runtime_and_stops_when_dropped() {
        let proxy = FaultProxy::start("127.0.0.1:9");
        let addr = proxy.addr();
        drop(proxy);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[test]
    fn target_addresses_are_urls_or_host_ports() {
        let expected = Some(SocketAddr::from(([127, 0, 0, 1], 5000)));
        assert_eq!(target_addr("http://127.0.0.1:5000"), expected);
        assert_eq!(target_addr("http://127.0.0.1:5000/moto-api/"), expected);
        assert_eq!(target_addr("127.0.0.1:5000"), expected);
        assert_eq!(target_addr("nonsense"), None);
    }
}
