//! The admin API (docs/control-plane.md): a listener of its own, off by default, for
//! operators and backends — which clients are connected here and how, close
//! a client's connections with a code and reason, write a frame to a client
//! directly. Every call needs `Authorization: Bearer <admin_token>`
//! (compared in constant time); the bridge does not start the listener
//! without a token.
//!
//! `disconnect` and `send` act on this replica's connections when the
//! client has any here (200, with how many); otherwise they are published
//! to the bus as the control message a backend would send (202, with its
//! message id), and the replica that holds the client carries them out.
//! With `?via=bus` they go to the bus at once: the way to reach a client
//! whose connections are spread over several fanout replicas.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use actix_web::dev::Server;
use actix_web::http::header::AUTHORIZATION;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use adapters_ws::{ConnectionId, WsClientRegistry};
use domain::stats::bump;
use domain::time::iso8601;
use domain::{ClientId, Frame, Stats};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::broker::ControlRelay;
use crate::config::Secret;

/// Most client ids one page lists.
const MAX_PAGE: usize = 1000;
/// Longest close reason a close frame carries (RFC 6455: 123 bytes).
const MAX_REASON_BYTES: usize = 123;

/// What the handlers share.
struct AdminState {
    registry: Arc<WsClientRegistry>,
    token: Secret,
    relay: Arc<ControlRelay>,
    stats: Arc<Stats>,
}

/// The admin server on `listener` (run it; stop it with its handle).
pub fn server(
    listener: TcpListener,
    registry: Arc<WsClientRegistry>,
    token: Secret,
    relay: Arc<ControlRelay>,
    stats: Arc<Stats>,
) -> std::io::Result<Server> {
    let state = web::Data::new(AdminState {
        registry,
        token,
        relay,
        stats,
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/admin/clients", web::get().to(list_clients))
            .route("/admin/clients/{id}", web::get().to(show_client))
            .route("/admin/clients/{id}/disconnect", web::post().to(disconnect))
            .route("/admin/clients/{id}/send", web::post().to(send))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run())
}

fn error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
}

/// The 401 answer, unless the request carries the admin token.
fn refused(req: &HttpRequest, state: &AdminState) -> Option<HttpResponse> {
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = state.token.expose();
    if same_secret(given, expected) {
        None
    } else {
        Some(HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .json(json!({"error": {"code": "unauthorized", "message": "Authorization: Bearer <admin_token> required"}})))
    }
}

/// Whether `given` is `expected`, in time that depends on neither: both are
/// hashed, and the digests compared without an early exit.
fn same_secret(given: &str, expected: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (a, b) = (digest(given), digest(expected));
    a.as_ref()
        .iter()
        .zip(b.as_ref())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The client a call is about, once the call is authorized: the 401 or 400
/// answer otherwise.
fn authorized_client(
    req: &HttpRequest,
    state: &AdminState,
    raw: &str,
) -> Result<ClientId, Box<HttpResponse>> {
    if let Some(refusal) = refused(req, state) {
        return Err(Box::new(refusal));
    }
    client_id(raw)
}

/// The client an order (disconnect, send) is about and whether it goes
/// straight to the bus, once the call is authorized: the 401 or 400 answer
/// otherwise.
fn authorized_order(
    req: &HttpRequest,
    state: &AdminState,
    raw: &str,
    via: &Via,
) -> Result<(ClientId, bool), Box<HttpResponse>> {
    let client = authorized_client(req, state, raw)?;
    Ok((client, via.bus_only()?))
}

fn client_id(raw: &str) -> Result<ClientId, Box<HttpResponse>> {
    ClientId::parse(raw).map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid_client_id",
            &e.to_string(),
        ))
    })
}

#[derive(Deserialize)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_clients(
    req: HttpRequest,
    page: web::Query<Page>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    if let Some(refusal) = refused(&req, &state) {
        return refusal;
    }
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let (clients, next) = state.registry.clients(page.after.as_deref(), limit);
    let clients: Vec<Value> = clients
        .iter()
        .map(|(id, n)| json!({"client_id": id.as_str(), "connections": n}))
        .collect();
    HttpResponse::Ok().json(json!({"clients": clients, "next": next}))
}

async fn show_client(
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AdminState>,
) -> HttpResponse {
    let client = match authorized_client(&req, &state, &id) {
        Ok(client) => client,
        Err(refusal) => return *refusal,
    };
    let connections = state.registry.connection_details(&client);
    if connections.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            "not_connected",
            "no connection of this client here",
        );
    }
    let connections: Vec<Value> = connections
        .iter()
        .map(|c| {
            json!({
                "connection_id": c.id.to_string(),
                "remote_address": c.ip.map(|ip| ip.to_string()),
                "since": iso8601(c.since),
                "since_ms": c.since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                "ack_mode": c.acknowledging,
                "queued_frames": c.queued,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({"client_id": client.as_str(), "connections": connections}))
}

/// `?via=bus`: publish the order to the bus without acting here first, so
/// that it reaches every replica that holds the client (fanout mode: all of
/// them, this one included), not only this one.
#[derive(Deserialize)]
struct Via {
    via: Option<String>,
}

impl Via {
    /// Whether the order goes straight to the bus; the 400 answer for an
    /// unknown `via`.
    fn bus_only(&self) -> Result<bool, Box<HttpResponse>> {
        match self.via.as_deref() {
            None | Some("here") => Ok(false),
            Some("bus") => Ok(true),
            Some(_) => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "invalid_via",
                "via is \"here\" (the default: here, else the bus) or \"bus\"",
            ))),
        }
    }
}

#[derive(Deserialize)]
struct DisconnectBody {
    #[serde(default = "normal_closure")]
    code: u16,
    #[serde(default)]
    reason: String,
    connection_id: Option<String>,
}

fn normal_closure() -> u16 {
    1000
}

async fn disconnect(
    req: HttpRequest,
    id: web::Path<String>,
    via: web::Query<Via>,
    body: web::Bytes,
    state: web::Data<AdminState>,
) -> HttpResponse {
    let (client, bus_only) = match authorized_order(&req, &state, &id, &via) {
        Ok(order) => order,
        Err(refusal) => return *refusal,
    };
    let order: DisconnectBody = if body.is_empty() {
        DisconnectBody {
            code: normal_closure(),
            reason: String::new(),
            connection_id: None,
        }
    } else {
        match serde_json::from_slice(&body) {
            Ok(order) => order,
            Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_body", &e.to_string()),
        }
    };
    if order.code != 1000 && !(3000..=4999).contains(&order.code) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_code",
            "code must be 1000 or an application code (3000-4999)",
        );
    }
    if order.reason.len() > MAX_REASON_BYTES {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_reason",
            "reason is over 123 bytes",
        );
    }
    let only = match order.connection_id.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(ConnectionId::from_raw(n)),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_connection_id",
                "connection_id is a number",
            )
        }
    };
    let closed = if bus_only {
        0
    } else {
        state
            .registry
            .disconnect(&client, only, order.code, &order.reason)
    };
    if closed > 0 {
        info!(client_id = %client, connections = closed, code = order.code, reason = %order.reason, "admin API: disconnected");
        bump(&state.stats.control.admin_here, 1);
        return HttpResponse::Ok().json(json!({"disconnected": closed}));
    }
    let mut control = json!({
        "client_id": client.as_str(),
        "command": domain::control::DISCONNECT,
        "code": order.code,
        "reason": order.reason,
    });
    if let Some(id) = only {
        control["connection_id"] = json!(id.to_string());
    }
    forward(&state, &client, &control).await
}

async fn send(
    req: HttpRequest,
    id: web::Path<String>,
    via: web::Query<Via>,
    body: web::Bytes,
    state: web::Data<AdminState>,
) -> HttpResponse {
    let (client, bus_only) = match authorized_order(&req, &state, &id, &via) {
        Ok(order) => order,
        Err(refusal) => return *refusal,
    };
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the frame must be UTF-8 JSON",
        );
    };
    if serde_json::from_str::<Value>(text).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the frame must be JSON",
        );
    }
    let frame: Frame = Arc::from(text);
    let sent = if bus_only {
        0
    } else {
        state.registry.send_frame(&client, &frame)
    };
    if sent > 0 {
        info!(client_id = %client, connections = sent, "admin API: frame sent");
        bump(&state.stats.control.admin_here, 1);
        return HttpResponse::Ok().json(json!({"sent": sent}));
    }
    // Spliced in as it came: the frame reaches the client byte for byte.
    let control = format!(
        r#"{{"client_id":{},"command":"{}","frame":{text}}}"#,
        json!(client.as_str()),
        domain::control::SEND,
    );
    forward_text(&state, &client, &control).await
}

/// Publishes `control` for a client that has no connection here: 202 with
/// the message id, 502 when the bus refused it.
async fn forward(state: &AdminState, client: &ClientId, control: &Value) -> HttpResponse {
    forward_text(state, client, &control.to_string()).await
}

async fn forward_text(state: &AdminState, client: &ClientId, control: &str) -> HttpResponse {
    match state.relay.relay(control, client).await {
        Ok(message_id) => {
            info!(client_id = %client, %message_id, "admin API: control message published");
            bump(&state.stats.control.admin_forwarded, 1);
            HttpResponse::Accepted().json(json!({"forwarded": true, "message_id": message_id}))
        }
        Err(e) => {
            let why = format!("{e:#}");
            warn!(client_id = %client, error = %why, "admin API: control message not published");
            bump(&state.stats.control.admin_failed, 1);
            error(
                StatusCode::BAD_GATEWAY,
                "bus_unavailable",
                &format!("not connected here, and the control message was not published: {why}"),
            )
        }
    }
}
