//! A server without sockets, for the tests of timer rules: each connection
//! is a session started by `start_session` on the test's own runtime, its
//! client at the other end of an in-memory pipe. With nothing outside the
//! runtime, a test can pause tokio's clock (`tokio::time::pause`): the
//! clock then moves only when every task waits, straight to the next timer,
//! so heartbeats, rate refills and fragment deadlines run in no real time
//! and to the exact instant.
//!
//! Only the HTTP server is left out: the upgrade request is built by hand
//! and the response head is not sent; the frames both ways are the same.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::rt::task::JoinHandle;
use actix_web::web::{self, Bytes};
use actix_web::FromRequest;
use adapters_ws::{start_session, Peer, SessionMode, SessionSettings};
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{id, Backend, RawClient, Ws};

/// Bytes the pipe holds each way before a writer waits.
const PIPE: usize = 64 * 1024;

/// Sessions served over in-memory pipes; must be used on a local task set
/// (an `actix_web::test`), as the sessions are spawned on it.
pub(crate) struct MemoryServer {
    pub(crate) backend: Backend,
    settings: SessionSettings,
    /// The tasks that copy each session's frames to its pipe.
    pumps: Mutex<Vec<JoinHandle<()>>>,
}

impl std::ops::Deref for MemoryServer {
    type Target = Backend;

    fn deref(&self) -> &Backend {
        &self.backend
    }
}

impl MemoryServer {
    pub(crate) fn start(settings: SessionSettings) -> Self {
        Self {
            backend: Backend::new(),
            settings,
            pumps: Mutex::default(),
        }
    }

    /// A bridge connection of `client_id` whose client is a WebSocket
    /// library (it answers pings by itself).
    pub(crate) async fn connect(&self, client_id: &str) -> Ws<DuplexStream> {
        WebSocketStream::from_raw_socket(self.open(client_id), Role::Client, None).await
    }

    /// A bridge connection of `client_id` whose client writes only what the
    /// test tells it to.
    pub(crate) fn connect_raw(&self, client_id: &str) -> RawClient<DuplexStream> {
        RawClient::over(self.open(client_id))
    }

    /// Starts a session of `client_id`; returns the client's end of its pipe.
    fn open(&self, client_id: &str) -> DuplexStream {
        let (client, server) = tokio::io::duplex(PIPE);
        let (from_client, to_client) = tokio::io::split(server);
        let addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 40_000);
        let req = actix_web::test::TestRequest::get()
            .uri(&format!("/ws/{client_id}"))
            .insert_header((header::UPGRADE, "websocket"))
            .insert_header((header::CONNECTION, "Upgrade"))
            .insert_header((header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ=="))
            .insert_header((header::SEC_WEBSOCKET_VERSION, "13"))
            .peer_addr(addr)
            .to_http_request();
        let mut payload = Payload::from(incoming(from_client));
        let body = web::Payload::from_request(&req, &mut payload)
            .into_inner()
            .unwrap();
        let peer = Peer {
            ip: Some(addr.ip()),
            mode: SessionMode::Bridge,
            ..Peer::new(id(client_id))
        };
        let response = start_session(
            &req,
            body,
            peer,
            Arc::clone(&self.registry),
            Arc::clone(&self.uplink),
            self.settings.clone(),
            self.shutdown.clone(),
        )
        .unwrap();
        assert_eq!(response.status().as_u16(), 101);
        let pump = actix_web::rt::spawn(outgoing(response.into_body(), to_client));
        self.pumps.lock().unwrap().push(pump);
        client
    }

    /// Stops the pumps still running (their sessions' clients are gone).
    pub(crate) async fn stop(self) {
        let pumps = std::mem::take(&mut *self.pumps.lock().unwrap());
        for pump in pumps {
            pump.abort();
            let _ = pump.await;
        }
    }
}

/// The request body: what the client writes into its pipe.
fn incoming(
    from_client: ReadHalf<DuplexStream>,
) -> Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> {
    Box::pin(futures_util::stream::unfold(
        from_client,
        |mut from_client| async move {
            let mut buf = vec![0u8; 8192];
            match from_client.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), from_client))
                }
                Err(e) => Some((Err(PayloadError::Io(e)), from_client)),
            }
        },
    ))
}

/// Copies the response body (the session's frames) into the client's
/// pipe, and closes the pipe when the body ends.
async fn outgoing(body: BoxBody, mut to_client: WriteHalf<DuplexStream>) {
    let mut body = Box::pin(body);
    while let Some(Ok(bytes)) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        if to_client.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = to_client.shutdown().await;
}
