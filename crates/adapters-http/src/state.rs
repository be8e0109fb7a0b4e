//! What the public routes share ([`AppState`]), and the checks made of a
//! request before it may become a WebSocket ([`Access`]): the origin
//! allow-list, the client's address, authentication.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderName};
use actix_web::HttpRequest;
use domain::{ShardAssignment, Stats};
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::ports::{BrokerProbe, Sessions};
use crate::refusals::Refusals;
use crate::settings::{normalize_origin, AccessSettings, SettingError};

/// What every public request handler shares.
pub struct AppState {
    /// The WebSocket side: starts sessions, counts connections.
    pub sessions: Arc<dyn Sessions>,
    /// The use cases' counters, and whether the consumer has stopped.
    pub stats: Arc<Stats>,
    /// The broker adapters' readiness and series.
    pub broker: Arc<dyn BrokerProbe>,
    /// Who may open a WebSocket.
    pub access: Access,
    /// Refusals by reason (shared with the admin API's listener).
    pub refused: Arc<Refusals>,
    /// Cancelled when the bridge shuts down: `/ready` turns 503 and new
    /// upgrades are refused.
    pub closing: CancellationToken,
    /// In sharded mode, the shards served here: clients of other shards are
    /// refused (421), since their Commands never reach this replica.
    pub shards: Option<ShardAssignment>,
}

/// The checks made before an upgrade.
pub struct Access {
    pub(crate) auth: Authenticator,
    /// Normalized allowed origins; empty: any.
    origins: Vec<String>,
    client_ip_header: Option<HeaderName>,
    #[cfg(feature = "test-routes")]
    pub(crate) echo_route: bool,
}

impl Access {
    /// The checks `settings` ask for; a JWT key that cannot be read is a
    /// [`SettingError`] naming its setting.
    pub fn new(settings: &AccessSettings) -> Result<Self, SettingError> {
        Ok(Self {
            auth: Authenticator::new(settings.jwt.as_ref())?,
            origins: settings.allowed_origins.clone(),
            client_ip_header: settings.client_ip_header.clone(),
            #[cfg(feature = "test-routes")]
            echo_route: settings.echo_route,
        })
    }

    /// Readies what authentication needs before the first upgrade (a JWKS
    /// fetched from its URL).
    pub async fn start(&self) -> Result<(), String> {
        self.auth.start().await
    }

    /// False when the request comes from a page whose origin is not allowed.
    /// A request without `Origin` (not from a browser) is allowed: the list
    /// protects browsers' users from cross-site WebSocket hijacking.
    pub(crate) fn origin_allowed(&self, req: &HttpRequest) -> bool {
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
    pub(crate) fn client_ip(&self, req: &HttpRequest) -> Option<IpAddr> {
        let forwarded = self.client_ip_header.as_ref().and_then(|name| {
            let value = req.headers().get_all(name).last()?.to_str().ok()?;
            value.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        });
        forwarded.or_else(|| req.peer_addr().map(|addr| addr.ip()))
    }
}
