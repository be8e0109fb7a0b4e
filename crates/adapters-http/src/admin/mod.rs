//! The admin API (docs/control-plane.md): a listener of its own, off
//! by default, for operators and backends — which clients are connected here
//! and how (`clients.rs`), close a client's connections with a code and
//! reason, write a frame to a client directly (`orders.rs`). Every call
//! needs `Authorization: Bearer <admin_token>` (compared in constant time);
//! the bridge does not start the listener without a token.
//!
//! `disconnect` and `send` act on this replica's connections when the
//! client has any here (200, with how many); otherwise they are published
//! to the bus as the control message a backend would send (202, with its
//! message id), and the replica that holds the client carries them out.
//! With `?via=bus` they go to the bus at once: the way to reach a client
//! whose connections are spread over several fanout replicas.
//!
//! Every refusal is an [`AdminError`] (`error.rs`), answered with the one
//! JSON error body and counted.

mod clients;
mod error;
mod orders;

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use domain::stats::bump;
use domain::Stats;
use secrecy::{ExposeSecret, SecretString};

pub use error::AdminError;

use crate::ports::{Connections, ControlBus};
use crate::refusals::Refusals;

/// What the admin API's handlers share.
pub struct AdminApi {
    /// This replica's connections.
    pub connections: Arc<dyn Connections>,
    /// The bearer token every call must carry.
    pub token: SecretString,
    /// Where an order for a client not connected here goes.
    pub bus: Arc<dyn ControlBus>,
    /// The control-plane counters (admin orders by outcome).
    pub stats: Arc<Stats>,
    /// Refusals by reason (shared with the public listener's `/metrics`).
    pub refused: Arc<Refusals>,
}

/// The admin server of `api` on `listener` (run it; stop it with its handle).
pub fn server(listener: TcpListener, api: AdminApi) -> std::io::Result<Server> {
    let state = web::Data::new(api);
    Ok(
        HttpServer::new(move || App::new().app_data(state.clone()).configure(routes))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)?
            .run(),
    )
}

/// Mounts the admin routes; the handlers read an [`AdminApi`] from the
/// app's data.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/clients", web::get().to(clients::list))
        .route("/admin/clients/{id}", web::get().to(clients::show))
        .route(
            "/admin/clients/{id}/disconnect",
            web::post().to(orders::disconnect),
        )
        .route("/admin/clients/{id}/send", web::post().to(orders::send));
}

impl AdminApi {
    /// `answer`, with its error counted: a refusal by its reason, a control
    /// message the bus did not take as a failed order.
    fn counted(
        &self,
        answer: Result<HttpResponse, AdminError>,
    ) -> Result<HttpResponse, AdminError> {
        answer.inspect_err(|error| match error.refusal() {
            Some(reason) => self.refused.count_admin(reason),
            None => bump(&self.stats.control.admin_failed, 1),
        })
    }

    /// Refuses a call without the admin token.
    fn authorize(&self, req: &HttpRequest) -> Result<(), AdminError> {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if same_secret(given, self.token.expose_secret()) {
            Ok(())
        } else {
            Err(AdminError::Unauthorized)
        }
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

#[cfg(test)]
mod tests;
