//! A TLS-terminating TCP proxy on a loopback port, in front of a plain TCP
//! server (RabbitMQ's 5672): what a managed broker's `amqps://` endpoint
//! looks like to a client, made at run time.
//!
//! Each proxy makes its own certificate authority (a fresh ECDSA P-256 key,
//! thrown away with the proxy) and a server certificate signed by it for
//! `localhost` and `127.0.0.1`. A client that trusts [`TlsProxy::ca_pem`]
//! gets through; one that trusts another CA fails its handshake, which the
//! proxy counts ([`TlsProxy::handshakes`]).
//!
//! Like [`FaultProxy`](crate::FaultProxy) it runs on a thread of its own
//! with its own tokio runtime, works from any test, and stops when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// A running TLS endpoint; stops (closing every connection) when dropped.
#[derive(Debug)]
pub struct TlsProxy {
    addr: SocketAddr,
    ca_pem: String,
    counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Counts {
    completed: AtomicU64,
    failed: AtomicU64,
}

impl TlsProxy {
    /// Starts a proxy on `127.0.0.1:0` that terminates TLS and forwards the
    /// plain bytes to `target` (`host:port`). Panics when the certificates
    /// cannot be made or nothing can be bound.
    pub fn start(target: &str) -> Self {
        let target = target.to_owned();
        let (ca_pem, acceptor) = certificates();
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .unwrap_or_else(|e| panic!("TLS proxy: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("TLS proxy: no local address: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("TLS proxy: cannot make the listener non-blocking: {e}"));
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("TLS proxy: cannot build its runtime: {e}"));
        let thread_counts = counts.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tls-proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => panic!("TLS proxy: cannot register the listener: {e}"),
                    };
                    tokio::select! {
                        () = accept_loop(listener, acceptor, target, thread_counts) => {}
                        _ = stopped => {}
                    }
                });
            })
            .unwrap_or_else(|e| panic!("TLS proxy: cannot spawn its thread: {e}"));
        Self {
            addr,
            ca_pem,
            counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port clients connect to (on `localhost` / `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The PEM certificate of the CA that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// TLS handshakes so far: `(completed, failed)`.
    pub fn handshakes(&self) -> (u64, u64) {
        (
            self.counts.completed.load(Ordering::SeqCst),
            self.counts.failed.load(Ordering::SeqCst),
        )
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A fresh CA (its PEM) and an acceptor with a server certificate it signed.
fn certificates() -> (String, TlsAcceptor) {
    let ca_key = KeyPair::generate().unwrap_or_else(|e| fail("CA key", e));
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| fail("CA parameters", e));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "wsbridge test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params
        .self_signed(&ca_key)
        .unwrap_or_else(|e| fail("CA certificate", e));
    let server_key = KeyPair::generate().unwrap_or_else(|e| fail("server key", e));
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap_or_else(|e| fail("server parameters", e));
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server = server_params
        .signed_by(&server_key, &ca, &ca_key)
        .unwrap_or_else(|e| fail("server certificate", e));
    let chain: Vec<CertificateDer<'static>> = vec![server.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("TLS proxy: protocol versions: {e}"))
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap_or_else(|e| panic!("TLS proxy: server certificate refused: {e}"));
    (ca.pem(), TlsAcceptor::from(Arc::new(config)))
}

fn fail(what: &str, e: rcgen::Error) -> ! {
    panic!("TLS proxy: {what}: {e}")
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    target: String,
    counts: Arc<Counts>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let target = target.clone();
        let counts = counts.clone();
        // Ends with the runtime when the proxy is dropped.
        tokio::spawn(async move {
            let mut tls = match acceptor.accept(client).await {
                Ok(tls) => {
                    counts.completed.fetch_add(1, Ordering::SeqCst);
                    tls
                }
                Err(_) => {
                    counts.failed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            let Ok(mut server) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_proxy_has_a_ca_of_its_own() {
        let one = TlsProxy::start("127.0.0.1:9");
        let two = TlsProxy::start("127.0.0.1:9");
        assert!(one.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(one.ca_pem(), two.ca_pem());
        assert_ne!(one.port(), two.port());
        assert_eq!(one.handshakes(), (0, 0));
    }
}
