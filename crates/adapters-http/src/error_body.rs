//! The one JSON body of every refusal the HTTP surface answers,
//! `{"error": {"code": "<machine-readable>", "message": "<for a person>"}}`,
//! and the rendering the handlers' error types share.

use actix_web::http::header::WWW_AUTHENTICATE;
use actix_web::{HttpResponse, ResponseError};
use serde::{Deserialize, Serialize};

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Machine-readable, stable: `origin_not_allowed`, `invalid_token`, …
    pub code: String,
    /// For a person: what to do differently.
    pub message: String,
}

impl ErrorBody {
    /// The body of `code` and `message`.
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            error: ErrorDetail {
                code: code.to_owned(),
                message: message.to_owned(),
            },
        }
    }
}

/// `error` answered: its status code, with `challenge` as the
/// `WWW-Authenticate` header when there is one, and the body of `code` and
/// its own text.
pub(crate) fn render(
    error: &impl ResponseError,
    code: &str,
    challenge: Option<&'static str>,
) -> HttpResponse {
    let mut response = HttpResponse::build(error.status_code());
    if let Some(challenge) = challenge {
        response.insert_header((WWW_AUTHENTICATE, challenge));
    }
    response.json(ErrorBody::new(code, &error.to_string()))
}
