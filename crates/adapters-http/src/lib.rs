//! The inbound HTTP adapter of wsbridge: in the hexagon, a *driving*
//! adapter, the bridge's HTTP surface (docs/protocol.md, docs/operations.md)
//! in front of the core.
//!
//! - [`configure`] mounts the public routes: the WebSocket upgrade (`/ws`,
//!   `/ws/{client_id}`, and the test-only `/__echo`), `/health`, `/ready`
//!   and `/metrics`;
//! - `upgrade`: the admission of an upgrade, one step per check (origin,
//!   client id, token, shard, shutdown), before the WebSocket side starts
//!   the session and takes the connection limits;
//! - [`admin`]: the admin API on a listener of its own;
//! - [`auth`]: JWT verification (HS256, RS256 from PEM or a JWKS, keys from
//!   a JWKS URL) on a ring-backed provider, and development tokens;
//! - [`metrics`]: `/metrics`, the domain's counters and the broker's own
//!   series in the Prometheus text format (or OpenMetrics).
//!
//! Every refusal is a typed error that renders itself (`impl
//! ResponseError`): its status code and the one JSON error body,
//! `{"error": {"code": …, "message": …}}`, and every refusal is counted for
//! `/metrics` ([`Refusals`]).
//!
//! It knows the domain and actix-web, and no other adapter: what it needs of
//! the WebSocket sessions, of the broker and of the bus comes in through the
//! small traits of [`ports`], which the `app` crate implements, and its
//! settings come in as plain structs ([`AccessSettings`], [`JwtSettings`]).

pub mod admin;
pub mod auth;
mod error_body;
pub mod metrics;
pub mod ports;
mod probes;
mod refusals;
mod settings;
mod state;
mod upgrade;

use actix_web::web;

pub use error_body::ErrorBody;
pub use ports::{
    Admitted, BrokerProbe, ConnectionDetails, ConnectionLimit, Connections, ControlBus, Credential,
    NotPublished, SessionRefused, Sessions,
};
pub use refusals::{AdminRefusal, Refusal, Refusals};
pub use settings::{normalize_origin, AccessSettings, JwtSettings, SettingError};
pub use state::{Access, AppState};
pub use upgrade::UpgradeError;

/// Mounts the public routes; the handlers read an [`AppState`] from the
/// app's data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(probes::health))
        .route("/ready", web::get().to(probes::ready))
        .route("/metrics", web::get().to(probes::metrics));
    upgrade::configure(cfg);
}
