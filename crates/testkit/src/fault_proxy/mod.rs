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
//!
//! The parts: the faults a test asks for and their limits (`fault`), what
//! the proxy reports back (`record`), the rules and counters the
//! connections consult (`state`), the connection tasks that apply them
//! (`connection`), the HTTP/1.1 framing (`http`) and the answers it gives
//! instead of forwarding (`canned`).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aws_config::SdkConfig;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

mod canned;
mod connection;
mod fault;
mod http;
mod record;
mod state;
#[cfg(test)]
mod tests;

pub use canned::CannedResponse;
pub use fault::{Fault, Limit};
pub use record::{operations, Outcome, ProxyStats, Seen};

use connection::accept_loop;
use state::{Counters, Rule, Shared, State};

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
fn target_addr(target: &str) -> Option<SocketAddr> {
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .unwrap_or(target);
    let authority = rest.split('/').next()?;
    authority.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod handle_tests {
    use super::*;

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
