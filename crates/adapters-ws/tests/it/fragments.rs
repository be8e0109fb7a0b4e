//! Fragmented messages hold server memory until their last fragment: the
//! deadline each must be complete within, and the budget that caps the bytes
//! held across all connections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use adapters_ws::SessionSettings;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WireFrame;
use tokio_tungstenite::tungstenite::Message;

use super::{
    id, next_json, send_text, small_settings, wait_until, within, Io, MemoryServer, TestServer, Ws,
};

fn first(bytes: &[u8]) -> Message {
    Message::Frame(WireFrame::message(
        bytes.to_vec(),
        OpCode::Data(Data::Text),
        false,
    ))
}

fn more(bytes: &[u8], last: bool) -> Message {
    Message::Frame(WireFrame::message(
        bytes.to_vec(),
        OpCode::Data(Data::Continue),
        last,
    ))
}

/// Reads until the server's close frame; returns its code and reason.
async fn close_frame<S: Io>(ws: &mut Ws<S>) -> (u16, String) {
    loop {
        match within(ws.next()).await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.as_str().to_owned())
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[actix_web::test]
async fn a_fragmented_message_not_completed_in_time_closes_with_1008() {
    // Paused, the clock moves only when every task waits (see `memory`).
    tokio::time::pause();
    let timeout = Duration::from_millis(600);
    let server = MemoryServer::start(SessionSettings {
        fragment_timeout: timeout,
        ..small_settings()
    });

    // Starts a message and never finishes it.
    let mut stuck = server.connect("stuck").await;
    let started = Instant::now();
    within(stuck.send(first(br#"{"action":"#))).await.unwrap();
    let (code, reason) = close_frame(&mut stuck).await;
    assert_eq!(code, 1008);
    assert_eq!(reason, "fragmented message not completed in time");
    assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
    // On paused time the close comes at the deadline, not merely after it.
    assert!(
        started.elapsed() < timeout + Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );

    // Fragments that keep coming do not push the deadline back.
    let mut trickler = server.connect("trickler").await;
    within(trickler.send(first(b"{"))).await.unwrap();
    let mut closed = None;
    for _ in 0..100 {
        if trickler.send(more(b" ", false)).await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(50), trickler.next()).await {
            Err(_quiet) => {}
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                closed = Some(u16::from(frame.code));
                break;
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected a close frame, got {other:?}"),
        }
    }
    let code = match closed {
        Some(code) => code,
        // The close came while a send failed: it is still there to read.
        None => close_frame(&mut trickler).await.0,
    };
    assert_eq!(code, 1008);

    // The deadline is per message: two messages that each take half of it,
    // back to back, both go through.
    let mut prompt = server.connect("prompt").await;
    for n in 0..2 {
        let text = json!({"action": "slowly", "id": format!("p{n}")}).to_string();
        let (head, tail) = text.split_at(8);
        within(prompt.send(first(head.as_bytes()))).await.unwrap();
        tokio::time::sleep(timeout / 2).await;
        within(prompt.send(more(tail.as_bytes(), true)))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut prompt).await,
            json!({"ack": format!("p{n}")})
        );
    }
    assert_eq!(server.sink.events().len(), 2);
    wait_until("the closed connections are unregistered", || {
        server.registry.connection_count() == 1
    })
    .await;
    assert_eq!(server.registry.fragment_bytes_held(), 0);
    server.stop().await;
}

#[actix_web::test]
async fn the_fragment_budget_caps_bytes_held_across_connections_and_closes_with_1013() {
    const CONNECTIONS: usize = 500;
    const BUDGET: usize = 64 * 1024;
    // Each client holds 1 byte, then 512: the budget has room for 128 of them.
    const HELD: usize = 512;
    let server = TestServer::start(SessionSettings {
        fragment_budget_bytes: BUDGET,
        fragment_timeout: Duration::from_secs(60),
        ..small_settings()
    })
    .await;

    let mut clients = Vec::with_capacity(CONNECTIONS);
    for n in 0..CONNECTIONS {
        clients.push(server.connect(&format!("c{n}")).await);
    }
    let texts: Vec<String> = (0..CONNECTIONS)
        .map(|n| {
            json!({"action": "frag", "id": format!("c{n}"), "pad": "x".repeat(600)}).to_string()
        })
        .collect();

    // Reads the bytes held, every millisecond, for as long as the storm lasts.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let registry = Arc::clone(&server.registry);
        let stop = Arc::clone(&stop);
        actix_web::rt::spawn(async move {
            let mut most = 0;
            for _ in 0..30_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                most = most.max(registry.fragment_bytes_held());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            most
        })
    };

    for (ws, text) in clients.iter_mut().zip(&texts) {
        within(ws.send(first(&text.as_bytes()[..1]))).await.unwrap();
    }
    for (ws, text) in clients.iter_mut().zip(&texts) {
        within(ws.send(more(&text.as_bytes()[1..HELD], false)))
            .await
            .unwrap();
    }
    // Settled: every connection still open holds its 512 bytes; the others
    // were closed and unregistered.
    wait_until("every second fragment is taken or refused", || {
        let open = server.registry.connection_count();
        open < CONNECTIONS && server.registry.fragment_bytes_held() == open * HELD
    })
    .await;
    let open = server.registry.connection_count();
    assert!(
        open * HELD <= BUDGET,
        "{open} connections hold {HELD} bytes each"
    );
    assert!(open >= BUDGET / HELD / 2, "only {open} connections kept");

    // Those over the budget were told to try again later.
    let mut kept = Vec::new();
    for (n, mut ws) in clients.into_iter().enumerate() {
        if server.registry.connections_of(&id(&format!("c{n}"))) == 1 {
            kept.push((n, ws));
            continue;
        }
        let (code, reason) = close_frame(&mut ws).await;
        assert_eq!(code, 1013, "c{n}");
        assert_eq!(
            reason, "server holds too many incomplete messages, try again later",
            "c{n}"
        );
    }
    assert_eq!(kept.len(), open);

    // With the budget spent, whole messages still go through.
    let mut plain = server.connect("plain").await;
    send_text(&mut plain, r#"{"action":"whole","id":"w1"}"#).await;
    assert_eq!(next_json(&mut plain).await, json!({"ack": "w1"}));

    // Half of the kept connections complete their message; the other half
    // go away in the middle of theirs. Either way the bytes come back.
    let mut completed = 0;
    for (n, mut ws) in kept {
        if n % 2 == 1 {
            drop(ws);
            continue;
        }
        within(ws.send(more(&texts[n].as_bytes()[HELD..], true)))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await, json!({"ack": format!("c{n}")}));
        completed += 1;
    }
    wait_until("every byte is given back", || {
        server.registry.fragment_bytes_held() == 0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let sampled = within(sampler).await.unwrap();
    assert!(sampled <= BUDGET, "{sampled} bytes held at once");
    assert!(sampled >= BUDGET / 2, "the storm never filled the budget");
    assert!(server.registry.fragment_bytes_peak() <= BUDGET);
    assert_eq!(server.sink.events().len(), completed + 1);

    // Try again later means it: with the budget free, a refused client's
    // fragmented message goes through.
    let mut again = server.connect("again").await;
    let text = json!({"action": "frag", "id": "again", "pad": "x".repeat(600)}).to_string();
    within(again.send(first(&text.as_bytes()[..1])))
        .await
        .unwrap();
    within(again.send(more(&text.as_bytes()[1..HELD], false)))
        .await
        .unwrap();
    within(again.send(more(&text.as_bytes()[HELD..], true)))
        .await
        .unwrap();
    assert_eq!(next_json(&mut again).await, json!({"ack": "again"}));
    server.stop().await;
}
