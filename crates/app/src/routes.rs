//! The HTTP surface (SPEC §2): WebSocket upgrade, demo page, health, readiness.

use std::sync::Arc;

use actix_web::http::header::ContentType;
use actix_web::{web, HttpRequest, HttpResponse};
use adapters_ws::{SessionSettings, WsClientRegistry};
use domain::{ClientId, Stats, Uplink};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// What every request handler shares.
pub struct AppState {
    /// Live connections.
    pub registry: Arc<WsClientRegistry>,
    /// The uplink use case.
    pub uplink: Arc<Uplink>,
    /// Counters and consumer health.
    pub stats: Arc<Stats>,
    /// Per-connection limits.
    pub session: SessionSettings,
    /// Cancelled when the bridge shuts down: sessions close with 1001.
    pub closing: CancellationToken,
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(demo_page))
        .route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics))
        .route("/ws", web::get().to(ws_query))
        .route("/ws/{client_id}", web::get().to(ws_path));
}

const DEMO_PAGE: &str = include_str!("demo.html");

async fn demo_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(DEMO_PAGE)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let reason = if state.closing.is_cancelled() {
        Some("shutting down")
    } else if !state.stats.consumer_healthy() {
        Some("command consumer has not received successfully yet, or its last receive failed")
    } else {
        None
    };
    match reason {
        None => HttpResponse::Ok().json(json!({"status": "ready"})),
        Some(reason) => HttpResponse::ServiceUnavailable()
            .json(json!({"status": "not_ready", "reason": reason})),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let body = crate::metrics::render(
        &state.stats.downlink.snapshot(),
        &state.stats.uplink.snapshot(),
        state.registry.connection_count(),
        state.stats.consumer_healthy(),
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}

#[derive(Deserialize)]
struct WsQuery {
    client_id: Option<String>,
}

async fn ws_query(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    upgrade(req, body, query.into_inner().client_id, state)
}

async fn ws_path(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    upgrade(req, body, Some(path.into_inner()), state)
}

fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    client_id: Option<String>,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let client_id = match client_id.map(ClientId::parse) {
        Some(Ok(id)) => id,
        Some(Err(e)) => return Ok(bad_request("invalid_client_id", &e.to_string())),
        None => return Ok(bad_request("missing_client_id", "client_id is required")),
    };
    if state.closing.is_cancelled() {
        return Ok(HttpResponse::ServiceUnavailable().json(
            json!({"error": {"code": "shutting_down", "message": "server is shutting down"}}),
        ));
    }
    adapters_ws::start_session(
        &req,
        body,
        client_id,
        state.registry.clone(),
        state.uplink.clone(),
        state.session.clone(),
        state.closing.clone(),
    )
}

fn bad_request(code: &str, message: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": {"code": code, "message": message}}))
}
