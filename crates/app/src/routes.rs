//! The HTTP surface (docs/protocol.md): WebSocket upgrade, demo page, health, readiness.
//!
//! Every upgrade is checked before it is answered (docs/security.md), in this order:
//! the `Origin` against the allow-list (403), the client id in the URL (400),
//! the token when `auth = "jwt"` (401; a token for another client id than the
//! URL's: 403), shutdown (503), then the connection limits, checked and taken
//! in one step by the registry (429 per client id or per address, 503 in
//! total). A refused request never reaches the registry.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::http::header::{self, ContentType, HeaderName};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use adapters_ws::{
    Credential, LimitExceeded, Peer, SessionMode, SessionSettings, StartError, WsClientRegistry,
};
use domain::{ClientId, ShardAssignment, Stats, Uplink};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::auth::{AuthError, Authenticator, TokenSource, BEARER_PROTOCOL};
use crate::broker::BrokerStatus;
use crate::config::{normalize_origin, Config, ConfigError};

/// What every request handler shares.
pub struct AppState {
    /// Live connections.
    pub registry: Arc<WsClientRegistry>,
    /// The uplink use case.
    pub uplink: Arc<Uplink>,
    /// The use cases' counters, and whether the consumer has stopped.
    pub stats: Arc<Stats>,
    /// The broker adapters' readiness and metrics.
    pub broker: BrokerStatus,
    /// Per-connection limits.
    pub session: SessionSettings,
    /// Who may open a WebSocket.
    pub access: Access,
    /// Upgrades refused, by reason (for `/metrics`).
    pub refused: Refusals,
    /// Cancelled when the bridge shuts down: sessions close with 1001.
    pub closing: CancellationToken,
    /// In sharded mode, the shards served here: clients of other shards are
    /// refused (421), since their Commands never reach this replica.
    pub shards: Option<ShardAssignment>,
}

/// Why upgrades were refused, counted.
#[derive(Debug, Default)]
pub struct Refusals {
    counts: [AtomicU64; Refusal::ALL.len()],
}

/// One reason an upgrade is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Origin` not in the allow-list.
    Origin,
    /// No token, or one that does not verify.
    Unauthenticated,
    /// A token for another client id than the URL's.
    ClientIdMismatch,
    /// The client id has too many connections.
    PerClient,
    /// The address has too many connections.
    PerAddress,
    /// The instance has too many connections.
    AtCapacity,
    /// Sharded mode: the client's shard is owned by another replica.
    Misdirected,
}

impl Refusal {
    const ALL: [Refusal; 7] = [
        Refusal::Origin,
        Refusal::Unauthenticated,
        Refusal::ClientIdMismatch,
        Refusal::PerClient,
        Refusal::PerAddress,
        Refusal::AtCapacity,
        Refusal::Misdirected,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Origin => "origin_not_allowed",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::ClientIdMismatch => "client_id_mismatch",
            Refusal::PerClient => "too_many_connections",
            Refusal::PerAddress => "too_many_connections_from_address",
            Refusal::AtCapacity => "server_at_capacity",
            Refusal::Misdirected => "misdirected_client",
        }
    }
}

impl Refusals {
    fn count(&self, reason: Refusal) {
        self.counts[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `(label, count)` for every reason.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| (r.label(), self.counts[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

impl AppState {
    /// The state of a bridge configured by `config`; a JWT key that cannot
    /// be read is a [`ConfigError`].
    pub fn new(
        registry: Arc<WsClientRegistry>,
        uplink: Arc<Uplink>,
        stats: Arc<Stats>,
        broker: BrokerStatus,
        config: &Config,
        closing: CancellationToken,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            registry,
            uplink,
            stats,
            broker,
            session: config.session.clone(),
            access: Access::new(config)?,
            refused: Refusals::default(),
            closing,
            shards: config.shard_assignment(),
        })
    }
}

/// The checks made before an upgrade.
pub struct Access {
    auth: Authenticator,
    /// Normalized allowed origins; empty: any.
    origins: Vec<String>,
    client_ip_header: Option<HeaderName>,
    #[cfg(feature = "test-routes")]
    echo_route: bool,
}

impl Access {
    /// Readies what authentication needs before the first upgrade (a JWKS
    /// fetched from its URL).
    pub async fn start(&self) -> Result<(), String> {
        self.auth.start().await
    }

    /// The checks `config` asks for.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let access = &config.access;
        Ok(Self {
            auth: Authenticator::new(access)?,
            origins: access.allowed_origins.clone(),
            client_ip_header: access.client_ip_header.clone(),
            #[cfg(feature = "test-routes")]
            echo_route: config.server.echo_route,
        })
    }

    /// False when the request comes from a page whose origin is not allowed.
    /// A request without `Origin` (not from a browser) is allowed: the list
    /// protects browsers' users from cross-site WebSocket hijacking.
    fn origin_allowed(&self, req: &HttpRequest) -> bool {
        if self.origins.is_empty() {
            return true;
        }
        match req.headers().get(header::ORIGIN) {
            None => true,
            Some(origin) => origin
                .to_str()
                .ok()
                .and_then(normalize_origin)
                .is_some_and(|origin| self.origins.contains(&origin)),
        }
    }

    /// The client's address: the last entry of the trusted proxy header
    /// when one is configured and present, else the TCP peer's.
    fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let forwarded = self.client_ip_header.as_ref().and_then(|name| {
            let value = req.headers().get_all(name).last()?.to_str().ok()?;
            value.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        });
        forwarded.or_else(|| req.peer_addr().map(|addr| addr.ip()))
    }
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(demo_page))
        .route("/sdk/wsbridge.js", web::get().to(sdk_bundle))
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .route("/ws", web::get().to(ws_query))
        .route("/ws/{client_id}", web::get().to(ws_path));
    #[cfg(feature = "test-routes")]
    cfg.route("/__echo", web::get().to(echo));
}

const DEMO_PAGE: &str = include_str!("demo.html");

async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(DEMO_PAGE)
}

/// The TypeScript client SDK's browser bundle (`clients/ts`, built and
/// checked in by `scripts/ts-sdk.sh`), which the demo page imports.
const SDK_BUNDLE: &str = include_str!("sdk/wsbridge.js");

async fn sdk_bundle() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .body(SDK_BUNDLE)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    match not_ready_because(&state) {
        None => HttpResponse::Ok().json(json!({"status": "ready"})),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "not_ready", "reason": reason})),
    }
}

/// Why `/ready` is 503, in words fit for the public port (the adapter's
/// detail goes to the log), or `None` when it is 200: only while the
/// command consumer runs and, as its broker adapter tells, its last receive
/// succeeded.
fn not_ready_because(state: &AppState) -> Option<&'static str> {
    if state.closing.is_cancelled() || state.stats.consumer_stopped() {
        Some("shutting down: the command consumer has stopped")
    } else {
        state.broker.not_ready().map(|not_ready| not_ready.public)
    }
}

async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    use crate::metrics::{render, Format, Snapshot};
    let format = Format::from_accept(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let snapshot = Snapshot::take(
        &state.stats,
        state.registry.connection_count(),
        state.registry.fragment_bytes_held(),
        not_ready_because(&state).is_none(),
        state.refused.snapshot(),
    );
    HttpResponse::Ok()
        .content_type(format.content_type())
        .body(render(snapshot, state.broker.collector(), format))
}

#[derive(Deserialize)]
struct WsQuery {
    client_id: Option<String>,
    token: Option<String>,
    /// `ack=true`: acknowledged delivery for this connection.
    ack: Option<String>,
}

impl WsQuery {
    fn acknowledging(&self) -> bool {
        matches!(self.ack.as_deref(), Some("true" | "1"))
    }
}

async fn ws_query(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let acknowledging = query.acknowledging();
    let WsQuery {
        client_id, token, ..
    } = query.into_inner();
    let mode = Mode {
        session: SessionMode::Bridge,
        acknowledging,
    };
    state
        .access
        .auth
        .refresh_for(req.headers(), token.as_deref())
        .await;
    upgrade(req, body, client_id, token, mode, state)
}

async fn ws_path(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    let mode = Mode {
        session: SessionMode::Bridge,
        acknowledging: query.acknowledging(),
    };
    let token = query.into_inner().token;
    state
        .access
        .auth
        .refresh_for(req.headers(), token.as_deref())
        .await;
    upgrade(req, body, Some(path.into_inner()), token, mode, state)
}

/// The test-only echo route (`echo_route = true`, in a build with the
/// `test-routes` feature): the same checks, session code and limits as
/// `/ws`, but messages are written back, not published.
#[cfg(feature = "test-routes")]
async fn echo(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if !state.access.echo_route {
        return error(StatusCode::NOT_FOUND, "not_found", "no such route");
    }
    let WsQuery {
        client_id, token, ..
    } = query.into_inner();
    let mode = Mode {
        session: SessionMode::Echo,
        acknowledging: false,
    };
    upgrade(req, body, client_id, token, mode, state)
}

/// How a connection is served.
#[derive(Debug, Clone, Copy)]
struct Mode {
    session: SessionMode,
    acknowledging: bool,
}

fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    client_id: Option<String>,
    token: Option<String>,
    mode: Mode,
    state: web::Data<AppState>,
) -> HttpResponse {
    let access = &state.access;
    if !access.origin_allowed(&req) {
        debug!(origin = ?req.headers().get(header::ORIGIN), "upgrade refused: origin not allowed");
        state.refused.count(Refusal::Origin);
        return error(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "this page's origin may not open a WebSocket here",
        );
    }
    let url_id = match client_id.map(ClientId::parse) {
        Some(Ok(id)) => Some(id),
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, "invalid_client_id", &e.to_string()),
        None => None,
    };
    let (client_id, protocol, credential) =
        match access.auth.authenticate(req.headers(), token.as_deref()) {
            Err(refused) => {
                debug!(reason = %refused, "upgrade refused: not authenticated");
                state.refused.count(Refusal::Unauthenticated);
                return unauthorized(&refused);
            }
            Ok(None) => match url_id {
                Some(id) => (id, None, None),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "missing_client_id",
                        "client_id is required",
                    )
                }
            },
            Ok(Some(authenticated)) => {
                if url_id
                    .as_ref()
                    .is_some_and(|id| *id != authenticated.client_id)
                {
                    debug!(
                        client_id = %authenticated.client_id,
                        "upgrade refused: token for another client id"
                    );
                    state.refused.count(Refusal::ClientIdMismatch);
                    return error(
                        StatusCode::FORBIDDEN,
                        "client_id_mismatch",
                        "the token is for another client id than the URL's",
                    );
                }
                let protocol =
                    (authenticated.source == TokenSource::Subprotocol).then_some(BEARER_PROTOCOL);
                let credential = Credential {
                    valid_until: authenticated.valid_until,
                    renewer: authenticated.renewer,
                };
                (authenticated.client_id, protocol, Some(credential))
            }
        };
    if let (SessionMode::Bridge, Some(shards)) = (mode.session, state.shards) {
        let (shard, owned) = shards.locate(&client_id);
        if !owned {
            // A routing mistake (or a load balancer that re-hashed around a
            // replica that is down) is loud: such a client would never
            // receive a Command here.
            debug!(%client_id, shard, owned = %shards.owned, "upgrade refused: shard owned elsewhere");
            state.refused.count(Refusal::Misdirected);
            return error(
                StatusCode::MISDIRECTED_REQUEST,
                Refusal::Misdirected.label(),
                &format!(
                    "client id {client_id} is in shard {shard} of {}; this replica serves shards {}",
                    shards.shards, shards.owned
                ),
            );
        }
    }
    if state.closing.is_cancelled() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "server is shutting down",
        );
    }
    let peer = Peer {
        client_id,
        ip: access.client_ip(&req),
        protocol,
        mode: mode.session,
        acknowledging: mode.acknowledging,
        credential,
    };
    match adapters_ws::start_session(
        &req,
        body,
        peer,
        state.registry.clone(),
        state.uplink.clone(),
        state.session.clone(),
        state.closing.clone(),
    ) {
        Ok(response) => response,
        Err(StartError::Handshake(e)) => e.error_response(),
        Err(StartError::Limit(limit)) => {
            debug!(%limit, "upgrade refused: connection limit");
            let (status, reason) = match limit {
                LimitExceeded::PerClient { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, Refusal::PerClient)
                }
                LimitExceeded::PerIp { .. } => (StatusCode::TOO_MANY_REQUESTS, Refusal::PerAddress),
                LimitExceeded::Total { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, Refusal::AtCapacity)
                }
            };
            state.refused.count(reason);
            error(status, reason.label(), &limit.to_string())
        }
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
}

fn unauthorized(refused: &AuthError) -> HttpResponse {
    let challenge = match refused {
        AuthError::Missing => "Bearer".to_owned(),
        AuthError::Invalid(_) => "Bearer error=\"invalid_token\"".to_owned(),
    };
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, challenge))
        .json(json!({"error": {"code": refused.code(), "message": refused.to_string()}}))
}
