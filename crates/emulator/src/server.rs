//! The HTTP server: one loopback listener for SQS (JSON 1.0, told apart by
//! its `X-Amz-Target` header), SNS (form-encoded query protocol) and the
//! stub's own control routes under `/__stub/`; the per-call latency and the
//! fault injection applied to every SQS and SNS call.

use std::collections::BTreeMap;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ErrorKind};
use crate::model::Model;
use crate::{admin, sns, sqs};

/// Largest request body accepted (a full SendMessageBatch is 256 KiB of
/// messages plus JSON; the control routes take bulk sends).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The error an injected fault answers with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// HTTP 500 `InternalError` (retried by the SDKs).
    #[default]
    Internal,
    /// HTTP 400 throttling (`RequestThrottled` / `Throttling`; retried by the SDKs).
    Throttle,
    /// HTTP 503 `ServiceUnavailable`.
    Unavailable,
}

impl FaultKind {
    fn error_kind(self) -> ErrorKind {
        match self {
            Self::Internal => ErrorKind::Internal,
            Self::Throttle => ErrorKind::Throttled,
            Self::Unavailable => ErrorKind::Unavailable,
        }
    }
}

/// Latency and faults applied to every SQS and SNS call (never to the
/// `/__stub/` routes). Changeable while the server runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to each call, in milliseconds (AWS answers in about 10–30
    /// ms): half before the call is handled, half before its answer is sent,
    /// as a request and its response each cross the network. A long poll
    /// that waits still answers half the latency after its message arrives.
    pub latency_ms: u64,
    /// Fraction (0..=1) of calls answered with `error` instead.
    pub error_rate: f64,
    /// Fraction (0..=1) of the entries of batch calls (SendMessageBatch,
    /// DeleteMessageBatch, ChangeMessageVisibilityBatch, PublishBatch)
    /// reported as failed (`InternalError`, not the sender's fault).
    pub entry_error_rate: f64,
    /// What an injected call failure answers.
    pub error: FaultKind,
    /// Operations the error rates apply to (`ReceiveMessage`, `PublishBatch`,
    /// …); empty: all.
    pub operations: Vec<String>,
}

impl Faults {
    fn applies_to(&self, operation: &str) -> bool {
        self.operations.is_empty() || self.operations.iter().any(|o| o == operation)
    }
}

/// How the server starts.
#[derive(Debug, Clone, PartialEq)]
pub struct EmulatorConfig {
    /// Address to listen on (loopback).
    pub host: String,
    /// Port (0: any free port).
    pub port: u16,
    /// HTTP worker threads (one is plenty: everything answers in microseconds).
    pub workers: usize,
    /// Region in ARNs.
    pub region: String,
    /// Initial latency and faults.
    pub faults: Faults,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            workers: 1,
            region: "us-east-1".into(),
            faults: Faults::default(),
        }
    }
}

/// Counts of one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStats {
    /// Calls received.
    pub calls: u64,
    /// Calls answered with an error (injected or not).
    pub errors: u64,
    /// Calls failed by fault injection.
    pub injected: u64,
    /// Entries of batch calls (1 per single-message call), messages of receives.
    pub entries: u64,
}

/// State shared by every worker.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) model: Model,
    faults: RwLock<Faults>,
    operations: Mutex<BTreeMap<String, OperationStats>>,
    request_ids: AtomicU64,
}

impl Shared {
    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        *self.faults.write().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    pub(crate) fn operations(&self) -> BTreeMap<String, OperationStats> {
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn reset_stats(&self) {
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }

    /// Counts the call, waits the first half of the configured latency,
    /// and fails it when the fault injection says so.
    pub(crate) async fn enter(&self, operation: &str) -> Result<(), ApiError> {
        let faults = self.faults();
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_micros(faults.latency_ms * 500)).await;
        }
        let injected = faults.error_rate > 0.0
            && faults.applies_to(operation)
            && rand::random::<f64>() < faults.error_rate;
        let mut operations = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let stats = operations.entry(operation.to_owned()).or_default();
        stats.calls += 1;
        if injected {
            stats.injected += 1;
            return Err(ApiError::new(
                faults.error.error_kind(),
                format!("injected fault on {operation}"),
            ));
        }
        Ok(())
    }

    /// Waits the second half of the configured latency, before an answer.
    pub(crate) async fn leave(&self) {
        let latency_ms = self.faults().latency_ms;
        if latency_ms > 0 {
            let first = latency_ms * 500;
            tokio::time::sleep(Duration::from_micros(latency_ms * 1000 - first)).await;
        }
    }

    /// Whether fault injection fails this batch entry.
    pub(crate) fn entry_fails(&self, operation: &str) -> bool {
        let faults = self.faults.read().unwrap_or_else(PoisonError::into_inner);
        faults.entry_error_rate > 0.0
            && faults.applies_to(operation)
            && rand::random::<f64>() < faults.entry_error_rate
    }

    /// Records the outcome of a call.
    pub(crate) fn finish(&self, operation: &str, ok: bool, entries: usize) {
        let mut operations = self
            .operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let stats = operations.entry(operation.to_owned()).or_default();
        if !ok {
            stats.errors += 1;
        }
        stats.entries += entries as u64;
    }
}

/// A running emulator. Dropping it does not stop the server: call [`Emulator::stop`].
#[derive(Debug)]
pub struct Emulator {
    endpoint: String,
    shared: Arc<Shared>,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl Emulator {
    /// Binds `config.host:config.port` and serves on `config.workers`
    /// threads of their own. Call from within a tokio runtime.
    pub async fn start(config: EmulatorConfig) -> io::Result<Self> {
        let listener = TcpListener::bind((config.host.as_str(), config.port))?;
        let address = listener.local_addr()?;
        let endpoint = format!("http://{address}");
        let shared = Arc::new(Shared {
            model: Model::new(endpoint.clone(), config.region.clone()),
            faults: RwLock::new(config.faults.clone()),
            operations: Mutex::default(),
            request_ids: AtomicU64::new(1),
        });
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
                .configure(admin::configure)
                .default_service(web::to(api))
        })
        .workers(config.workers.max(1))
        .keep_alive(Duration::from_secs(75))
        .client_request_timeout(Duration::from_secs(30))
        .backlog(4096)
        .disable_signals()
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(Self {
            endpoint,
            shared,
            handle,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: the value for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The in-memory state, for tests that set up or inspect it directly.
    pub fn model(&self) -> &Model {
        &self.shared.model
    }

    /// The current latency and faults.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the latency and faults.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// Counts per operation since the start (or the last reset).
    pub fn operations(&self) -> BTreeMap<String, OperationStats> {
        self.shared.operations()
    }

    /// Stops serving (calls in flight, long polls included, are cut).
    pub async fn stop(self) {
        self.handle.stop(false).await;
        let _ = self.task.await;
    }
}

/// Every SQS and SNS call: `POST /` (any path) with an `X-Amz-Target`
/// header (SQS) or a form body (SNS).
async fn api(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match target {
        Some(target) => sqs::handle(&shared, &target, &body).await,
        None => sns::handle(&shared, &body).await,
    }
}
