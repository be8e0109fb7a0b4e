//! `GET /admin/clients` (the clients connected here, a page at a time) and
//! `GET /admin/clients/{id}` (one client's connections).

use std::time::UNIX_EPOCH;

use actix_web::{web, HttpRequest, HttpResponse};
use domain::time::iso8601;
use domain::ClientId;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{AdminApi, AdminError};
use crate::ports::ConnectionDetails;

/// Most client ids one page lists.
const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
pub(super) struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn list(
    req: HttpRequest,
    page: web::Query<Page>,
    api: web::Data<AdminApi>,
) -> Result<HttpResponse, AdminError> {
    api.counted(list_page(&req, &page, &api))
}

fn list_page(req: &HttpRequest, page: &Page, api: &AdminApi) -> Result<HttpResponse, AdminError> {
    api.authorize(req)?;
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let (clients, next) = api.connections.clients(page.after.as_deref(), limit);
    let clients: Vec<Value> = clients
        .iter()
        .map(|(id, n)| json!({"client_id": id.as_str(), "connections": n}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({"clients": clients, "next": next})))
}

pub(super) async fn show(
    req: HttpRequest,
    id: web::Path<String>,
    api: web::Data<AdminApi>,
) -> Result<HttpResponse, AdminError> {
    api.counted(show_client(&req, &id, &api))
}

fn show_client(req: &HttpRequest, raw: &str, api: &AdminApi) -> Result<HttpResponse, AdminError> {
    api.authorize(req)?;
    let client = ClientId::parse(raw)?;
    let connections = api.connections.connections_of(&client);
    if connections.is_empty() {
        return Err(AdminError::NotConnected);
    }
    let connections: Vec<Value> = connections.iter().map(connection).collect();
    Ok(HttpResponse::Ok().json(json!({"client_id": client.as_str(), "connections": connections})))
}

fn connection(c: &ConnectionDetails) -> Value {
    json!({
        "connection_id": c.id.to_string(),
        "remote_address": c.ip.map(|ip| ip.to_string()),
        "since": iso8601(c.since),
        "since_ms": c.since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "ack_mode": c.acknowledging,
        "queued_frames": c.queued,
    })
}
