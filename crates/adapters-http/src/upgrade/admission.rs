//! Admission of one upgrade, one step per check, in the order the module
//! above lists; the first that fails answers.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use domain::{ClientId, ShardAssignment};
use tracing::debug;

use super::UpgradeError;
use crate::auth::{TokenSource, BEARER_PROTOCOL};
use crate::ports::{Admitted, Credential, SessionRefused};
use crate::state::{Access, AppState};

/// What the request asks for.
pub(super) struct Ask {
    /// The client id of the URL (path or `?client_id=`), unparsed.
    pub client_id: Option<String>,
    /// `?token=`.
    pub token: Option<String>,
    /// Test only: an echo session.
    pub echo: bool,
    /// `ack=true`.
    pub acknowledging: bool,
}

/// Who the request is, once authenticated.
struct Identity {
    client_id: ClientId,
    protocol: Option<&'static str>,
    credential: Option<Credential>,
}

/// Checks `req` and, when every check passes, has the WebSocket side answer
/// it with the upgrade.
pub(super) fn admit(
    req: &HttpRequest,
    body: web::Payload,
    ask: Ask,
    state: &AppState,
) -> Result<HttpResponse, UpgradeError> {
    let access = &state.access;
    check_origin(access, req)?;
    let url_id = ask.client_id.map(ClientId::parse).transpose()?;
    let identity = identify(access, req, url_id, ask.token.as_deref())?;
    if !ask.echo {
        check_shard(state.shards, &identity.client_id)?;
    }
    if state.closing.is_cancelled() {
        return Err(UpgradeError::ShuttingDown);
    }
    let peer = Admitted {
        client_id: identity.client_id,
        ip: access.client_ip(req),
        protocol: identity.protocol,
        echo: ask.echo,
        acknowledging: ask.acknowledging,
        credential: identity.credential,
    };
    state.sessions.start(req, body, peer).map_err(|refused| {
        if let SessionRefused::Limit(_, limit) = &refused {
            debug!(%limit, "upgrade refused: connection limit");
        }
        UpgradeError::from(refused)
    })
}

fn check_origin(access: &Access, req: &HttpRequest) -> Result<(), UpgradeError> {
    if access.origin_allowed(req) {
        return Ok(());
    }
    debug!(origin = ?req.headers().get(header::ORIGIN), "upgrade refused: origin not allowed");
    Err(UpgradeError::OriginNotAllowed)
}

/// The client: the token's `sub` when `auth = "jwt"` (and the URL's id, if
/// any, must be the same), else the URL's id.
fn identify(
    access: &Access,
    req: &HttpRequest,
    url_id: Option<ClientId>,
    token: Option<&str>,
) -> Result<Identity, UpgradeError> {
    let authenticated = access
        .auth
        .authenticate(req.headers(), token)
        .inspect_err(|refused| debug!(reason = %refused, "upgrade refused: not authenticated"))?;
    let Some(authenticated) = authenticated else {
        let client_id = url_id.ok_or(UpgradeError::MissingClientId)?;
        return Ok(Identity {
            client_id,
            protocol: None,
            credential: None,
        });
    };
    if url_id.is_some_and(|id| id != authenticated.client_id) {
        debug!(
            client_id = %authenticated.client_id,
            "upgrade refused: token for another client id"
        );
        return Err(UpgradeError::ClientIdMismatch);
    }
    Ok(Identity {
        protocol: (authenticated.source == TokenSource::Subprotocol).then_some(BEARER_PROTOCOL),
        credential: Some(Credential {
            valid_until: authenticated.valid_until,
            verifier: authenticated.renewer,
        }),
        client_id: authenticated.client_id,
    })
}

/// In sharded mode, refuses a client whose shard another replica owns.
fn check_shard(shards: Option<ShardAssignment>, client_id: &ClientId) -> Result<(), UpgradeError> {
    let Some(shards) = shards else {
        return Ok(());
    };
    let (shard, owned) = shards.locate(client_id);
    if owned {
        return Ok(());
    }
    // A routing mistake (or a load balancer that re-hashed around a replica
    // that is down) is loud: such a client would never receive a Command here.
    debug!(%client_id, shard, owned = %shards.owned, "upgrade refused: shard owned elsewhere");
    Err(UpgradeError::Misdirected {
        client_id: client_id.clone(),
        shard,
        shards,
    })
}
