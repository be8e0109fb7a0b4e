//! Why an upgrade is refused, and how each refusal is answered.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::{ClientId, ClientIdError, ShardAssignment};

use crate::auth::AuthError;
use crate::error_body;
use crate::ports::{ConnectionLimit, SessionRefused};
use crate::refusals::Refusal;

/// Why an upgrade is refused. Answered with its status code and the one
/// JSON error body, except a request that is no WebSocket handshake at all,
/// which gets the answer RFC 6455 prescribes (actix-web's, headers included).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// 403: the page's `Origin` is not in `allowed_origins`.
    #[error("this page's origin may not open a WebSocket here")]
    OriginNotAllowed,
    /// 400: the URL's client id is not a valid one.
    #[error("{0}")]
    InvalidClientId(#[from] ClientIdError),
    /// 401: no token, or one that does not verify.
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    /// 400: no client id, with `auth = "none"`.
    #[error("client_id is required")]
    MissingClientId,
    /// 403: the token names another client than the URL.
    #[error("the token is for another client id than the URL's")]
    ClientIdMismatch,
    /// 421: sharded mode, and the client's shard is served elsewhere.
    #[error(
        "client id {client_id} is in shard {shard} of {}; this replica serves shards {}",
        .shards.shards,
        .shards.owned
    )]
    Misdirected {
        /// The client.
        client_id: ClientId,
        /// Its shard.
        shard: u32,
        /// The shards of the fleet and those served here.
        shards: ShardAssignment,
    },
    /// 503: the bridge is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// The WebSocket side refused: not a handshake (400, 405, 426 as actix
    /// answers it), or a connection limit (429, or 503 for the instance's).
    #[error(transparent)]
    Session(#[from] SessionRefused),
}

impl UpgradeError {
    /// The reason it is counted under.
    pub fn refusal(&self) -> Refusal {
        match self {
            Self::OriginNotAllowed => Refusal::Origin,
            Self::InvalidClientId(_) => Refusal::InvalidClientId,
            Self::Unauthenticated(_) => Refusal::Unauthenticated,
            Self::MissingClientId => Refusal::MissingClientId,
            Self::ClientIdMismatch => Refusal::ClientIdMismatch,
            Self::Misdirected { .. } => Refusal::Misdirected,
            Self::ShuttingDown => Refusal::ShuttingDown,
            Self::Session(SessionRefused::Handshake(_)) => Refusal::InvalidHandshake,
            Self::Session(SessionRefused::Limit(limit, _)) => match limit {
                ConnectionLimit::PerClient => Refusal::PerClient,
                ConnectionLimit::PerAddress => Refusal::PerAddress,
                ConnectionLimit::Total => Refusal::AtCapacity,
            },
        }
    }

    /// The error code of the answer's body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(refused) => refused.code(),
            other => other.refusal().label(),
        }
    }
}

impl ResponseError for UpgradeError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::OriginNotAllowed | Self::ClientIdMismatch => StatusCode::FORBIDDEN,
            Self::InvalidClientId(_) | Self::MissingClientId => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Session(SessionRefused::Handshake(e)) => e.as_response_error().status_code(),
            Self::Session(SessionRefused::Limit(ConnectionLimit::Total, _)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Session(SessionRefused::Limit(..)) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let challenge = match self {
            Self::Session(SessionRefused::Handshake(e)) => return e.error_response(),
            Self::Unauthenticated(AuthError::Missing) => Some("Bearer"),
            Self::Unauthenticated(AuthError::Invalid(_)) => Some("Bearer error=\"invalid_token\""),
            _ => None,
        };
        error_body::render(self, self.code(), challenge)
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;
    use actix_web::http::header::WWW_AUTHENTICATE;

    use super::*;
    use crate::ErrorBody;

    async fn answer(error: UpgradeError) -> (StatusCode, Option<String>, ErrorBody) {
        let response = error.error_response();
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned());
        let status = response.status();
        let body = to_bytes(response.into_body()).await.unwrap();
        (status, challenge, serde_json::from_slice(&body).unwrap())
    }

    #[actix_web::test]
    async fn each_refusal_renders_its_status_code_and_message() {
        let limit = |which, text: &str| SessionRefused::Limit(which, text.to_owned()).into();
        let invalid = ClientId::parse("").unwrap_err();
        let invalid_text = invalid.to_string();
        let cases: Vec<(UpgradeError, u16, &str, &str)> = vec![
            (
                UpgradeError::OriginNotAllowed,
                403,
                "origin_not_allowed",
                "this page's origin may not open a WebSocket here",
            ),
            (invalid.into(), 400, "invalid_client_id", &invalid_text),
            (
                UpgradeError::MissingClientId,
                400,
                "missing_client_id",
                "client_id is required",
            ),
            (
                UpgradeError::ClientIdMismatch,
                403,
                "client_id_mismatch",
                "the token is for another client id than the URL's",
            ),
            (
                UpgradeError::ShuttingDown,
                503,
                "shutting_down",
                "server is shutting down",
            ),
            (
                limit(ConnectionLimit::PerClient, "per client"),
                429,
                "too_many_connections",
                "per client",
            ),
            (
                limit(ConnectionLimit::PerAddress, "per address"),
                429,
                "too_many_connections_from_address",
                "per address",
            ),
            (
                limit(ConnectionLimit::Total, "in total"),
                503,
                "server_at_capacity",
                "in total",
            ),
        ];
        for (error, status, code, message) in cases {
            let (got, challenge, body) = answer(error).await;
            assert_eq!(got.as_u16(), status, "{code}");
            assert_eq!(challenge, None, "{code}");
            assert_eq!(body, ErrorBody::new(code, message));
        }
    }

    #[actix_web::test]
    async fn a_misdirected_client_is_told_where_its_shard_is() {
        let shards = ShardAssignment {
            shards: 8,
            owned: domain::ShardRange::new(0, 4, 8).unwrap(),
        };
        let client_id = ClientId::parse("alice").unwrap();
        let (status, _, body) = answer(UpgradeError::Misdirected {
            client_id,
            shard: 6,
            shards,
        })
        .await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(body.error.code, "misdirected_client");
        assert_eq!(
            body.error.message,
            "client id alice is in shard 6 of 8; this replica serves shards 0..4"
        );
    }

    #[actix_web::test]
    async fn an_unauthenticated_upgrade_gets_a_bearer_challenge() {
        let (status, challenge, body) = answer(AuthError::Missing.into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer"));
        assert_eq!(body.error.code, "missing_token");
        let (status, challenge, body) =
            answer(AuthError::Invalid("the token has expired").into()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(challenge.as_deref(), Some("Bearer error=\"invalid_token\""));
        assert_eq!(
            body,
            ErrorBody::new("invalid_token", "invalid token: the token has expired")
        );
    }

    #[test]
    fn every_refusal_is_counted_under_its_reason() {
        assert_eq!(
            UpgradeError::from(AuthError::Missing).refusal(),
            Refusal::Unauthenticated
        );
        let handshake = SessionRefused::Handshake(actix_web::error::ErrorBadRequest("no upgrade"));
        let error = UpgradeError::from(handshake);
        assert_eq!(error.refusal(), Refusal::InvalidHandshake);
        assert_eq!(error.status_code(), StatusCode::BAD_REQUEST);
    }
}
