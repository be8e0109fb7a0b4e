//! Abuse limits of the sessions (docs/security.md): message rate, sustained
//! abuse, binary and invalid text, connection limits, the echo mode used for
//! conformance runs, and what the handshake does and does not negotiate.

use std::net::SocketAddr;
use std::time::Duration;

use adapters_ws::{AbusePolicy, ConnectionLimits, MessageRate, SessionSettings};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WireFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{
    id, next_json, next_text, send_text, small_settings, wait_until, within, MemoryServer,
    TestServer, Ws,
};

/// Reads until the server's close frame; returns its code and the JSON text
/// frames before it.
async fn texts_until_close(ws: &mut Ws) -> (u16, Vec<Value>) {
    let mut texts = Vec::new();
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Text(text))) => texts.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), texts),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn rate_settings(per_sec: u32, burst: u32, strikes: u32) -> SessionSettings {
    SessionSettings {
        message_rate: MessageRate { per_sec, burst },
        abuse: AbusePolicy {
            strikes,
            window: Duration::from_secs(60),
        },
        ..small_settings()
    }
}

#[actix_web::test]
async fn messages_over_the_rate_get_rate_limited_errors_and_are_not_published() {
    // Paused, the clock moves only when every task waits (see `memory`).
    tokio::time::pause();
    let server = MemoryServer::start(rate_settings(1, 3, 100));
    let mut ws = server.connect("alice").await;

    for n in 0..5 {
        send_text(
            &mut ws,
            &json!({"action": "go", "id": format!("m{n}")}).to_string(),
        )
        .await;
    }
    // The burst of 3 goes through; the next two are refused, each with its id.
    for n in 0..3 {
        assert_eq!(next_json(&mut ws).await, json!({"ack": format!("m{n}")}));
    }
    for n in 3..5 {
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
        assert_eq!(reply["id"], format!("m{n}"), "{reply}");
    }
    // Without an id, the error has none.
    send_text(&mut ws, r#"{"action":"go"}"#).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    assert!(reply.get("id").is_none(), "{reply}");

    let published: Vec<String> = server
        .sink
        .events()
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.body).unwrap()["id"].to_string())
        .collect();
    assert_eq!(published, [r#""m0""#, r#""m1""#, r#""m2""#]);

    // The connection stays open: once the bucket refills, messages pass again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send_text(&mut ws, r#"{"action":"go","id":"later"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "later"}));
    assert_eq!(server.sink.events().len(), 4);
    server.stop().await;
}

#[actix_web::test]
async fn sustained_rate_abuse_closes_with_1008_and_publishes_nothing_more() {
    let server = TestServer::start(rate_settings(1, 1, 3)).await;
    let mut ws = server.connect("mallory").await;

    for n in 0..10 {
        // The server may close before all are written.
        let text = json!({"action": "flood", "id": format!("f{n}")}).to_string();
        if ws.send(Message::text(text)).await.is_err() {
            break;
        }
    }
    let (code, texts) = texts_until_close(&mut ws).await;
    assert_eq!(code, 1008);
    for reply in &texts {
        assert!(
            reply == &json!({"ack": "f0"}) || reply["error"]["code"] == "rate_limited",
            "{reply}"
        );
    }
    let events = server.sink.events();
    assert_eq!(
        events.len(),
        1,
        "only the first message was within the rate"
    );
    wait_until("the abuser is unregistered", || {
        server.registry.connection_count() == 0
    })
    .await;
    assert_eq!(server.deliver("mallory", "x"), 0);
    server.stop().await;
}

#[actix_web::test]
async fn echo_mode_writes_text_and_binary_back_and_publishes_nothing() {
    let server = TestServer::start(small_settings()).await;
    let url = format!("ws://{}/echo/echo-client", server.addr);
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();

    send_text(&mut ws, "plain text, not JSON").await;
    assert_eq!(next_text(&mut ws).await, "plain text, not JSON");
    within(ws.send(Message::binary(vec![0u8, 1, 2, 255])))
        .await
        .unwrap();
    match within(ws.next()).await {
        Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], [0u8, 1, 2, 255]),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    // A fragmented binary message comes back whole.
    let first = WireFrame::message(vec![1u8, 2], OpCode::Data(Data::Binary), false);
    let last = WireFrame::message(vec![3u8], OpCode::Data(Data::Continue), true);
    within(ws.send(Message::Frame(first))).await.unwrap();
    within(ws.send(Message::Frame(last))).await.unwrap();
    match within(ws.next()).await {
        Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], [1u8, 2, 3]),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    assert!(server.sink.events().is_empty());

    // The same size limit as the bridge.
    send_text(&mut ws, &"x".repeat(2000)).await;
    let (code, _) = texts_until_close(&mut ws).await;
    assert_eq!(code, 1009);
    server.stop().await;
}

#[actix_web::test]
async fn echo_mode_has_the_same_rate_limit() {
    let server = TestServer::start(rate_settings(1, 2, 100)).await;
    let url = format!("ws://{}/echo/echo-client", server.addr);
    let (mut ws, _) = within(tokio_tungstenite::connect_async(url)).await.unwrap();
    for n in 0..3 {
        send_text(&mut ws, &format!("m{n}")).await;
    }
    assert_eq!(next_text(&mut ws).await, "m0");
    assert_eq!(next_text(&mut ws).await, "m1");
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    server.stop().await;
}

#[actix_web::test]
async fn connections_over_a_limit_are_refused_before_the_upgrade() {
    let server = TestServer::start(SessionSettings {
        limits: ConnectionLimits {
            per_client: 2,
            per_ip: 3,
            total: 100,
        },
        ..small_settings()
    })
    .await;
    let _a1 = server.connect("a").await;
    let _a2 = server.connect("a").await;
    assert_eq!(refused_status(&server, "a").await, 429, "per client id");
    let b = server.connect("b").await;
    // Three from 127.0.0.1 already.
    assert_eq!(refused_status(&server, "c").await, 429, "per address");
    assert_eq!(server.registry.connection_count(), 3);
    assert_eq!(server.registry.connections_of(&id("c")), 0);
    assert_eq!(server.deliver("c", "nothing for you"), 0);

    // Closing one frees its slot.
    drop(b);
    wait_until("b is unregistered", || {
        server.registry.connection_count() == 2
    })
    .await;
    let mut c = server.connect("c").await;
    assert_eq!(server.deliver("c", "now yes"), 1);
    assert_eq!(next_text(&mut c).await, "now yes");
    server.stop().await;
}

#[actix_web::test]
async fn connections_over_the_total_are_refused_with_503() {
    let server = TestServer::start(SessionSettings {
        limits: ConnectionLimits {
            per_client: 10,
            per_ip: 10,
            total: 2,
        },
        ..small_settings()
    })
    .await;
    let _a = server.connect("a").await;
    let _b = server.connect("b").await;
    assert_eq!(refused_status(&server, "c").await, 503);
    assert_eq!(server.registry.connection_count(), 2);
    assert_eq!(server.deliver("c", "x"), 0);
    server.stop().await;
}

async fn refused_status(server: &TestServer, client_id: &str) -> u16 {
    let url = format!("ws://{}/ws/{client_id}", server.addr);
    match within(tokio_tungstenite::connect_async(url)).await {
        Ok(_) => panic!("{client_id}: upgrade accepted"),
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("{client_id}: {e}"),
    }
}

/// Sends a handshake with `extra` header lines; returns the response head
/// and the socket.
async fn handshake(addr: SocketAddr, path: &str, extra: &str) -> (String, TcpStream) {
    let mut tcp = within(TcpStream::connect(addr)).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    within(tcp.write_all(request.as_bytes())).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(tcp.read(&mut byte)).await.unwrap();
        assert_eq!(n, 1, "closed during the handshake: {head:?}");
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap().to_ascii_lowercase(), tcp)
}

#[actix_web::test]
async fn permessage_deflate_is_never_negotiated_and_bearer_is_answered() {
    let server = TestServer::start(small_settings()).await;
    let (head, _tcp) = handshake(
        server.addr,
        "/ws/alice",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         Sec-WebSocket-Protocol: bearer, some.token.value\r\n",
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
    assert!(
        head.contains("sec-websocket-protocol: bearer\r\n"),
        "{head}"
    );
    assert!(!head.contains("some.token.value"), "{head}");

    // Without an offer, no subprotocol is answered.
    let (head, _tcp) = handshake(server.addr, "/ws/bob", "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("sec-websocket-protocol"), "{head}");
    server.stop().await;
}

/// A masked frame (mask 0: the payload goes as is) with `fin` and `opcode`.
fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![
        if fin { 0x80 } else { 0 } | opcode,
        0x80 | payload.len() as u8,
    ];
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Reads the server's frames until its close frame; returns the close code.
async fn close_code(tcp: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 1024];
        let n = within(tcp.read(&mut chunk)).await.unwrap();
        assert!(n > 0, "closed without a close frame: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        // Server frames are unmasked and short here.
        while buf.len() >= 2 && buf.len() >= 2 + usize::from(buf[1] & 0x7f) {
            let len = usize::from(buf[1] & 0x7f);
            if buf[0] & 0x0f == 0x8 {
                return u16::from_be_bytes([buf[2], buf[3]]);
            }
            buf.drain(..2 + len);
        }
    }
}

#[actix_web::test]
async fn text_that_is_not_utf8_closes_with_1007_whole_or_fragmented() {
    let server = TestServer::start(small_settings()).await;
    let (_, mut tcp) = handshake(server.addr, "/ws/alice", "").await;
    within(tcp.write_all(&masked(true, 0x1, b"ok \xff\xfe")))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, 1007);

    let (_, mut tcp) = handshake(server.addr, "/ws/bob", "").await;
    within(tcp.write_all(&masked(false, 0x1, b"{\"a\":\"\xce")))
        .await
        .unwrap();
    within(tcp.write_all(&masked(true, 0x0, b"\xff\"}")))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, 1007);
    assert!(server.sink.events().is_empty());
    server.stop().await;
}

#[actix_web::test]
async fn a_fragmented_binary_message_closes_with_1003_at_its_first_fragment() {
    let server = TestServer::start(small_settings()).await;
    let (_, mut tcp) = handshake(server.addr, "/ws/alice", "").await;
    within(tcp.write_all(&masked(false, 0x2, b"\x01\x02")))
        .await
        .unwrap();
    assert_eq!(close_code(&mut tcp).await, 1003);
    assert!(server.sink.events().is_empty());
    server.stop().await;
}
