//! What load balancers, orchestrators and scrapers ask
//! (docs/operations.md): `/health` (liveness: the process serves HTTP), `/ready`
//! (readiness: the command consumer runs and its source answers) and
//! `/metrics`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::metrics::{render, Format, Snapshot};
use crate::state::AppState;

pub(crate) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub(crate) async fn ready(state: web::Data<AppState>) -> HttpResponse {
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
        state.broker.not_ready()
    }
}

pub(crate) async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let format = Format::from_accept(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
    );
    let snapshot = Snapshot::take(
        &state.stats,
        state.sessions.open_connections(),
        state.sessions.fragment_bytes_held(),
        not_ready_because(&state).is_none(),
        &state.refused,
    );
    HttpResponse::Ok()
        .content_type(format.content_type())
        .body(render(snapshot, state.broker.collector(), format))
}
