//! The WebSocket upgrade (docs/protocol.md, docs/security.md):
//! `/ws?client_id=…`, `/ws/{client_id}`, and the test-only `/__echo`.
//!
//! Every upgrade is checked before it is answered, in this order: the
//! `Origin` against the allow-list (403), the client id in the URL (400),
//! the token when `auth = "jwt"` (401; a token for another client id than
//! the URL's: 403), the shard in sharded mode (421), shutdown (503), then the
//! connection limits, checked and taken in one step by the WebSocket side
//! (429 per client id or per address, 503 in total). A refused request never
//! reaches the WebSocket side's registry; each refusal is an
//! [`UpgradeError`], counted by reason and rendered as the one JSON error
//! body.

mod admission;
mod error;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

pub use error::UpgradeError;

use crate::state::AppState;
use admission::Ask;

/// Mounts the upgrade routes.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(ws_query))
        .route("/ws/{client_id}", web::get().to(ws_path));
    #[cfg(feature = "test-routes")]
    cfg.route("/__echo", web::get().to(echo::echo));
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
) -> Result<HttpResponse, UpgradeError> {
    let acknowledging = query.acknowledging();
    let WsQuery {
        client_id, token, ..
    } = query.into_inner();
    let ask = Ask {
        client_id,
        token,
        echo: false,
        acknowledging,
    };
    upgrade(&req, body, ask, &state).await
}

async fn ws_path(
    req: HttpRequest,
    body: web::Payload,
    path: web::Path<String>,
    query: web::Query<WsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UpgradeError> {
    let ask = Ask {
        client_id: Some(path.into_inner()),
        acknowledging: query.acknowledging(),
        token: query.into_inner().token,
        echo: false,
    };
    upgrade(&req, body, ask, &state).await
}

/// A bridge connection's upgrade: the keys first when the token names a key
/// id the JWKS does not hold (rate-limited), then admission, every refusal
/// counted.
async fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    ask: Ask,
    state: &AppState,
) -> Result<HttpResponse, UpgradeError> {
    state
        .access
        .auth
        .refresh_for(req.headers(), ask.token.as_deref())
        .await;
    admission::admit(req, body, ask, state)
        .inspect_err(|refused| state.refused.count(refused.refusal()))
}

/// The test-only echo route (`echo_route = true`, in a build with the
/// `test-routes` feature): the same checks, session code and limits as
/// `/ws`, but messages are written back, not published.
#[cfg(feature = "test-routes")]
mod echo {
    use actix_web::http::StatusCode;
    use actix_web::{web, HttpRequest, HttpResponse, ResponseError};

    use super::{admission, Ask, UpgradeError, WsQuery};
    use crate::error_body;
    use crate::state::AppState;

    /// Why the echo route did not upgrade.
    #[derive(Debug, thiserror::Error)]
    pub(super) enum EchoError {
        /// `echo_route` is off: the route answers as if it were not there
        /// (not an upgrade refused, so not counted, no more than any other
        /// unknown path).
        #[error("no such route")]
        Off,
        /// Refused like an upgrade of `/ws`.
        #[error(transparent)]
        Refused(#[from] UpgradeError),
    }

    impl ResponseError for EchoError {
        fn status_code(&self) -> StatusCode {
            match self {
                Self::Off => StatusCode::NOT_FOUND,
                Self::Refused(refused) => refused.status_code(),
            }
        }

        fn error_response(&self) -> HttpResponse {
            match self {
                Self::Off => error_body::render(self, "not_found", None),
                Self::Refused(refused) => refused.error_response(),
            }
        }
    }

    pub(super) async fn echo(
        req: HttpRequest,
        body: web::Payload,
        query: web::Query<WsQuery>,
        state: web::Data<AppState>,
    ) -> Result<HttpResponse, EchoError> {
        if !state.access.echo_route {
            return Err(EchoError::Off);
        }
        let WsQuery {
            client_id, token, ..
        } = query.into_inner();
        let ask = Ask {
            client_id,
            token,
            echo: true,
            acknowledging: false,
        };
        let admitted = admission::admit(&req, body, ask, &state);
        Ok(admitted.inspect_err(|refused| state.refused.count(refused.refusal()))?)
    }
}
