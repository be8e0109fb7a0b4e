//! The WebSocket adapter against a real actix-web server on an ephemeral
//! port, driven by real tokio-tungstenite clients.
//!
//! Each test starts its own server (one worker thread, its own registry,
//! sink and shutdown token), so the tests run in parallel. The tests of
//! timer rules run their sessions without sockets, on paused time (see
//! `memory`).

#![allow(clippy::unwrap_used, missing_docs)]

mod fragments;
mod limits;
mod memory;

use memory::MemoryServer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use adapters_ws::{start_session, Peer, SessionMode, SessionSettings, WsClientRegistry};
use async_trait::async_trait;
use domain::{
    ClientId, ClientRegistry, DeliveryId, EventSink, Frame, OutboundEvent, PublishError, Stats,
    Uplink,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::RwLock;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WireFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// A client's WebSocket: over TCP, or over an in-memory pipe (`memory`).
type Ws<S = MaybeTlsStream<TcpStream>> = WebSocketStream<S>;

/// What a client speaks over.
trait Io: AsyncRead + AsyncWrite + Unpin {}

impl<S: AsyncRead + AsyncWrite + Unpin> Io for S {}

/// The longest any single expectation may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The far side of the uplink: a sink that records what it was given.

#[derive(Default)]
struct RecordingSink {
    events: Mutex<Vec<OutboundEvent>>,
    fail: AtomicBool,
    /// Publishing waits while a test holds this lock for writing.
    gate: RwLock<()>,
}

#[async_trait]
impl EventSink for RecordingSink {
    async fn publish(&self, event: OutboundEvent) -> Result<(), PublishError> {
        let _open = self.gate.read().await;
        if self.fail.load(Ordering::SeqCst) {
            return Err(PublishError::Unavailable("sink is down".into()));
        }
        self.events.lock().unwrap().push(event);
        Ok(())
    }
}

impl RecordingSink {
    fn events(&self) -> Vec<OutboundEvent> {
        self.events.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------
// The server under test.

#[derive(Clone)]
struct State {
    registry: Arc<WsClientRegistry>,
    uplink: Arc<Uplink>,
    settings: SessionSettings,
    shutdown: CancellationToken,
}

async fn ws_route(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, actix_web::Error> {
    session_route(req, body, path.into_inner(), SessionMode::Bridge, state)
}

async fn echo_route(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, actix_web::Error> {
    session_route(req, body, path.into_inner(), SessionMode::Echo, state)
}

fn session_route(
    req: HttpRequest,
    body: web::Payload,
    client_id: String,
    mode: SessionMode,
    state: web::Data<State>,
) -> Result<HttpResponse, actix_web::Error> {
    let client_id = ClientId::parse(client_id).map_err(actix_web::error::ErrorBadRequest)?;
    let peer = Peer {
        ip: req.peer_addr().map(|addr| addr.ip()),
        protocol: Some("bearer"),
        mode,
        ..Peer::new(client_id)
    };
    start_session(
        &req,
        body,
        peer,
        Arc::clone(&state.registry),
        Arc::clone(&state.uplink),
        state.settings.clone(),
        state.shutdown.clone(),
    )
    .map_err(Into::into)
}

/// What a server's sessions share: the registry, the uplink to the
/// recording sink, and the shutdown token.
struct Backend {
    registry: Arc<WsClientRegistry>,
    uplink: Arc<Uplink>,
    sink: Arc<RecordingSink>,
    shutdown: CancellationToken,
}

impl Backend {
    fn new() -> Self {
        let sink = Arc::new(RecordingSink::default());
        Self {
            registry: Arc::new(WsClientRegistry::new()),
            uplink: Arc::new(Uplink::new(
                Arc::clone(&sink) as Arc<dyn EventSink>,
                Arc::new(Stats::default()),
            )),
            sink,
            shutdown: CancellationToken::new(),
        }
    }

    fn deliver(&self, client_id: &str, text: &str) -> usize {
        let frame: Frame = Arc::from(text);
        self.registry
            .deliver(&id(client_id), &frame, DeliveryId::from(1))
            .taken()
    }
}

struct TestServer {
    addr: SocketAddr,
    backend: Backend,
    handle: ServerHandle,
}

impl std::ops::Deref for TestServer {
    type Target = Backend;

    fn deref(&self) -> &Backend {
        &self.backend
    }
}

impl TestServer {
    async fn start(settings: SessionSettings) -> Self {
        let backend = Backend::new();
        let state = State {
            registry: Arc::clone(&backend.registry),
            uplink: Arc::clone(&backend.uplink),
            settings,
            shutdown: backend.shutdown.clone(),
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .route("/ws/{client_id}", web::get().to(ws_route))
                .route("/echo/{client_id}", web::get().to(echo_route))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            addr,
            backend,
            handle,
        }
    }

    async fn connect(&self, client_id: &str) -> Ws {
        let url = format!("ws://{}/ws/{client_id}", self.addr);
        let (ws, response) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
        assert_eq!(response.status().as_u16(), 101);
        ws
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn small_settings() -> SessionSettings {
    SessionSettings {
        outbound_capacity: 16,
        max_frame_bytes: 1024,
        ..SessionSettings::default()
    }
}

// ---------------------------------------------------------------------------
// Client-side helpers.

fn id(raw: &str) -> ClientId {
    ClientId::parse(raw).unwrap()
}

async fn within<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("timed out waiting")
}

/// Waits, in small steps and for at most [`PATIENCE`], until `done` holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The next text frame (pings are answered by the client library).
async fn next_text<S: Io>(ws: &mut Ws<S>) -> String {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn next_json<S: Io>(ws: &mut Ws<S>) -> Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}

/// Reads until the server's close frame; returns its code and how many text
/// frames came before it.
async fn read_until_close<S: Io>(ws: &mut Ws<S>) -> (u16, usize) {
    let mut texts = 0;
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Text(_))) => texts += 1,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), texts),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn send_text<S: Io>(ws: &mut Ws<S>, text: &str) {
    within(ws.send(Message::text(text))).await.unwrap();
}

/// A client that speaks WebSocket by hand: after the handshake it writes only
/// what a test tells it to, not even a pong (a client library answers pings
/// by itself, and writing into a socket the server has closed makes it fail
/// before it shows the close frame).
struct RawClient<S = TcpStream> {
    io: S,
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: SocketAddr, client_id: &str) -> Self {
        let mut tcp = within(TcpStream::connect(addr)).await.unwrap();
        let request = format!(
            "GET /ws/{client_id} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        within(tcp.write_all(request.as_bytes())).await.unwrap();
        let mut client = Self::over(tcp);
        let head_end = loop {
            if let Some(at) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            assert!(
                client.fill().await,
                "connection closed during the handshake"
            );
        };
        let head = String::from_utf8_lossy(&client.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        client.buf.drain(..head_end);
        client
    }
}

impl<S: Io> RawClient<S> {
    /// A client on `io`, past any handshake.
    fn over(io: S) -> Self {
        Self {
            io,
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        within(self.io.write_all(bytes)).await.unwrap();
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = within(self.io.read(&mut chunk)).await.unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads the server's (unmasked) frames until its close frame; returns
    /// the close code and the opcodes of the frames before it.
    async fn read_until_close(&mut self) -> (u16, Vec<u8>) {
        let mut opcodes = Vec::new();
        loop {
            let Some((opcode, payload)) = self.parse_frame() else {
                assert!(self.fill().await, "connection closed without a close frame");
                continue;
            };
            if opcode == 0x8 {
                return (u16::from_be_bytes([payload[0], payload[1]]), opcodes);
            }
            opcodes.push(opcode);
        }
    }

    fn parse_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (len, start) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                usize::try_from(u64::from_be_bytes(b[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            126 | 127 => return None,
            short => (usize::from(short), 2),
        };
        if b.len() < start + len {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let payload = b[start..start + len].to_vec();
        self.buf.drain(..start + len);
        Some((opcode, payload))
    }
}

// ---------------------------------------------------------------------------
// Downlink: the registry to the sockets.

#[actix_web::test]
async fn a_delivered_frame_reaches_its_client_and_no_other() {
    let server = TestServer::start(small_settings()).await;
    let mut alice = server.connect("alice").await;
    let mut bob = server.connect("bob").await;

    assert_eq!(server.deliver("alice", r#"{"command":"for-alice"}"#), 1);
    assert_eq!(next_text(&mut alice).await, r#"{"command":"for-alice"}"#);

    // Bob's first frame is his own: he never saw Alice's.
    assert_eq!(server.deliver("bob", r#"{"command":"for-bob"}"#), 1);
    assert_eq!(next_text(&mut bob).await, r#"{"command":"for-bob"}"#);

    assert_eq!(server.deliver("carol", "{}"), 0);
    server.stop().await;
}

#[actix_web::test]
async fn every_socket_of_a_client_gets_the_frame_in_order() {
    let server = TestServer::start(small_settings()).await;
    let mut first = server.connect("alice").await;
    let mut second = server.connect("alice").await;
    assert_eq!(server.registry.connections_of(&id("alice")), 2);

    assert_eq!(server.deliver("alice", "one"), 2);
    assert_eq!(server.deliver("alice", "two"), 2);
    for ws in [&mut first, &mut second] {
        assert_eq!(next_text(ws).await, "one");
        assert_eq!(next_text(ws).await, "two");
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Uplink: the sockets to the event sink.

#[actix_web::test]
async fn a_valid_message_is_published_with_the_server_stamped_client_id_and_acked() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;

    send_text(
        &mut ws,
        r#"{"action":"go","id":"m1","client_id":"mallory","data":{"x":1}}"#,
    )
    .await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "m1"}));

    let events = server.sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].client_id, id("alice"));
    assert_eq!(events[0].action, "go");
    let body: Value = serde_json::from_str(&events[0].body).unwrap();
    assert_eq!(
        body,
        json!({"action":"go","id":"m1","client_id":"alice","data":{"x":1}})
    );
    server.stop().await;
}

#[actix_web::test]
async fn a_failed_publish_is_answered_with_an_error_carrying_the_id() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;
    server.sink.fail.store(true, Ordering::SeqCst);

    send_text(&mut ws, r#"{"action":"go","id":"m2"}"#).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["id"], "m2");
    assert_eq!(reply["error"]["code"], "publish_failed");
    assert!(server.sink.events().is_empty());
    server.stop().await;
}

#[actix_web::test]
async fn invalid_json_gets_an_error_and_the_connection_stays_usable() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;

    send_text(&mut ws, "this is not json").await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], "invalid_message");
    assert!(reply.get("id").is_none());

    send_text(&mut ws, r#"{"action":"go","id":"after"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "after"}));
    assert_eq!(server.sink.events().len(), 1);
    server.stop().await;
}

#[actix_web::test]
async fn a_binary_frame_closes_with_1003_and_nothing_is_published() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;

    send_text(&mut ws, r#"{"action":"go","id":"before"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "before"}));
    within(ws.send(Message::binary(b"{\"action\":\"bin\"}".to_vec())))
        .await
        .unwrap();
    assert_eq!(read_until_close(&mut ws).await, (1003, 0));
    let events = server.sink.events();
    assert_eq!(events.len(), 1, "only the text message is published");
    assert_eq!(events[0].action, "go");
    wait_until("the connection is unregistered", || {
        server.registry.connection_count() == 0
    })
    .await;
    server.stop().await;
}

#[actix_web::test]
async fn a_fragmented_message_is_reassembled() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;

    let text = r#"{"action":"split","id":"f1"}"#;
    let (head, tail) = text.split_at(10);
    let first = WireFrame::message(head.as_bytes().to_vec(), OpCode::Data(Data::Text), false);
    let last = WireFrame::message(tail.as_bytes().to_vec(), OpCode::Data(Data::Continue), true);
    within(ws.send(Message::Frame(first))).await.unwrap();
    within(ws.send(Message::Frame(last))).await.unwrap();

    assert_eq!(next_json(&mut ws).await, json!({"ack": "f1"}));
    assert_eq!(server.sink.events()[0].action, "split");
    server.stop().await;
}

#[actix_web::test]
async fn a_slow_publish_does_not_hold_up_delivery() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;

    let held = server.sink.gate.write().await;
    send_text(&mut ws, r#"{"action":"go","id":"slow"}"#).await;
    // While the publish waits, a Command still gets through.
    assert_eq!(server.deliver("alice", "command"), 1);
    assert_eq!(next_text(&mut ws).await, "command");
    assert!(server.sink.events().is_empty());

    drop(held);
    assert_eq!(next_json(&mut ws).await, json!({"ack": "slow"}));
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Limits and close codes.

#[actix_web::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;

    let big = format!(r#"{{"action":"go","data":"{}"}}"#, "x".repeat(2000));
    send_text(&mut ws, &big).await;
    assert_eq!(read_until_close(&mut ws).await, (1009, 0));
    assert!(server.sink.events().is_empty());
    wait_until("the connection is unregistered", || {
        server.registry.connection_count() == 0
    })
    .await;
    server.stop().await;
}

#[actix_web::test]
async fn a_frame_declared_over_the_limit_closes_with_1009_before_its_payload_arrives() {
    let server = TestServer::start(small_settings()).await;
    let mut client = RawClient::connect(server.addr, "alice").await;

    // A masked text frame header declaring 1 GiB, and no payload at all.
    let mut header = vec![0x81, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 30).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    client.write(&header).await;

    assert_eq!(client.read_until_close().await, (1009, vec![]));
    wait_until("the connection is unregistered", || {
        server.registry.connection_count() == 0
    })
    .await;
    server.stop().await;
}

#[actix_web::test]
async fn fragments_adding_up_to_more_than_the_limit_close_with_1009() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;

    // Each fragment is under the limit of 1024 bytes; together they are not.
    let part = "x".repeat(600);
    let first = WireFrame::message(part.clone().into_bytes(), OpCode::Data(Data::Text), false);
    let last = WireFrame::message(part.into_bytes(), OpCode::Data(Data::Continue), true);
    within(ws.send(Message::Frame(first))).await.unwrap();
    within(ws.send(Message::Frame(last))).await.unwrap();

    assert_eq!(read_until_close(&mut ws).await, (1009, 0));
    assert!(server.sink.events().is_empty());
    server.stop().await;
}

#[actix_web::test]
async fn a_client_that_does_not_read_is_closed_with_1013_and_others_are_unaffected() {
    let capacity = 32;
    let server = TestServer::start(SessionSettings {
        outbound_capacity: capacity,
        ..small_settings()
    })
    .await;
    let mut stalled = server.connect("stalled").await;
    let mut reader = server.connect("reader").await;

    // Deliver to the client that never reads, paced so that the session keeps
    // up and its queue fills only once the socket's buffers are full.
    let chunk = "y".repeat(16 * 1024);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut taken = 0usize;
    while server.deliver("stalled", &chunk) == 1 {
        taken += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client took {taken} frames and was never cut off"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        taken > capacity,
        "cut off after {taken} frames: before its socket filled up"
    );

    // The other client still gets its frames.
    for n in 0..20 {
        assert_eq!(server.deliver("reader", &format!("frame {n}")), 1);
        assert_eq!(next_text(&mut reader).await, format!("frame {n}"));
    }

    // Once the stalled client reads, it finds the close frame after what was
    // already on its way, and never more than it was counted as taking.
    let (code, texts) = read_until_close(&mut stalled).await;
    assert_eq!(code, 1013);
    assert!(texts <= taken, "{texts} frames read, {taken} taken");
    wait_until("the stalled client is unregistered", || {
        server.registry.connections_of(&id("stalled")) == 0
    })
    .await;
    assert_eq!(server.registry.connections_of(&id("reader")), 1);
    server.stop().await;
}

#[actix_web::test]
async fn cancelling_the_shutdown_token_flushes_queued_frames_and_closes_with_1001() {
    let server = TestServer::start(small_settings()).await;
    let mut first = server.connect("alice").await;
    let mut second = server.connect("bob").await;
    assert_eq!(server.registry.connection_count(), 2);

    // What was already handed to a connection is written before it closes.
    for n in 0..5 {
        assert_eq!(server.deliver("alice", &format!("queued {n}")), 1);
    }
    server.shutdown.cancel();
    assert_eq!(read_until_close(&mut first).await, (1001, 5));
    assert_eq!(read_until_close(&mut second).await, (1001, 0));
    assert_eq!(server.deliver("alice", "after shutdown"), 0);
    wait_until("every connection is unregistered", || {
        server.registry.connection_count() == 0
    })
    .await;
    server.stop().await;
}

#[actix_web::test]
async fn a_silent_client_is_closed_after_the_timeout_and_a_live_one_is_not() {
    // Paused, the clock moves only when every task waits (see `memory`).
    tokio::time::pause();
    let server = MemoryServer::start(SessionSettings {
        heartbeat_interval: Duration::from_millis(50),
        client_timeout: Duration::from_millis(400),
        ..small_settings()
    });
    let mut silent = server.connect_raw("silent");
    let mut live = server.connect("live").await;

    // The live client reads (and so answers pings) well past the timeout.
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(1200) {
        match tokio::time::timeout(Duration::from_millis(100), live.next()).await {
            Err(_idle) => {}
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("live client got {other:?}"),
        }
    }
    assert!(pings >= 3, "only {pings} pings in 1.2 s");
    assert_eq!(server.registry.connections_of(&id("live")), 1);

    // The silent one, which never read nor answered, was closed meanwhile.
    wait_until("the silent client is unregistered", || {
        server.registry.connections_of(&id("silent")) == 0
    })
    .await;
    let (code, before) = silent.read_until_close().await;
    assert_eq!(code, 1001);
    assert!(before.iter().all(|&opcode| opcode == 0x9), "{before:?}");
    assert!(!before.is_empty(), "the silent client was never pinged");
    server.stop().await;
}

#[actix_web::test]
async fn a_client_close_is_answered_and_unregisters() {
    let server = TestServer::start(small_settings()).await;
    let mut ws = server.connect("alice").await;
    assert_eq!(server.registry.connection_count(), 1);

    within(ws.close(None)).await.unwrap();
    assert_eq!(read_until_close(&mut ws).await.0, 1000);
    wait_until("the connection is unregistered", || {
        server.registry.connection_count() == 0
    })
    .await;
    assert_eq!(server.deliver("alice", "late"), 0);
    server.stop().await;
}

#[actix_web::test]
async fn a_dropped_tcp_connection_unregisters() {
    let server = TestServer::start(small_settings()).await;
    let ws = server.connect("alice").await;
    let _other = server.connect("bob").await;
    assert_eq!(server.registry.connection_count(), 2);

    drop(ws);
    wait_until("the dropped connection is unregistered", || {
        server.registry.connections_of(&id("alice")) == 0
    })
    .await;
    assert_eq!(server.registry.connection_count(), 1);
    server.stop().await;
}
