//! Why an admin API call is refused or fails, and how each is answered.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use domain::ClientIdError;

use crate::error_body;
use crate::refusals::AdminRefusal;

/// Why an admin API call is not carried out; answered with its status code
/// and the one JSON error body.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// 401: without the admin token.
    #[error("Authorization: Bearer <admin_token> required")]
    Unauthorized,
    /// 400: the client id of the path is not a valid one.
    #[error("{0}")]
    InvalidClientId(#[from] ClientIdError),
    /// 404: the client has no connection here.
    #[error("no connection of this client here")]
    NotConnected,
    /// 400: `?via=` is neither `here` nor `bus`.
    #[error("via is \"here\" (the default: here, else the bus) or \"bus\"")]
    InvalidVia,
    /// 400: a disconnect order that is not the JSON it takes.
    #[error("{0}")]
    InvalidOrder(#[from] serde_json::Error),
    /// 400: a frame to send that is not UTF-8.
    #[error("the frame must be UTF-8 JSON")]
    FrameNotUtf8,
    /// 400: a frame to send that is not JSON.
    #[error("the frame must be JSON")]
    FrameNotJson,
    /// 400: a close code other than 1000 or an application code.
    #[error("code must be 1000 or an application code (3000-4999)")]
    InvalidCode,
    /// 400: a close reason longer than a close frame carries.
    #[error("reason is over 123 bytes")]
    InvalidReason,
    /// 400: a connection id that is not a number.
    #[error("connection_id is a number")]
    InvalidConnectionId,
    /// 502: the client is not connected here, and the bus did not take the
    /// control message. Not a refusal: counted as a failed admin order.
    #[error("not connected here, and the control message was not published: {0}")]
    BusUnavailable(String),
}

impl AdminError {
    /// The reason a refusal is counted under; `None` for the bus's failure.
    pub fn refusal(&self) -> Option<AdminRefusal> {
        Some(match self {
            Self::Unauthorized => AdminRefusal::Unauthorized,
            Self::InvalidClientId(_) => AdminRefusal::InvalidClientId,
            Self::NotConnected => AdminRefusal::NotConnected,
            Self::InvalidVia => AdminRefusal::InvalidVia,
            Self::InvalidOrder(_) | Self::FrameNotUtf8 | Self::FrameNotJson => {
                AdminRefusal::InvalidBody
            }
            Self::InvalidCode => AdminRefusal::InvalidCode,
            Self::InvalidReason => AdminRefusal::InvalidReason,
            Self::InvalidConnectionId => AdminRefusal::InvalidConnectionId,
            Self::BusUnavailable(_) => return None,
        })
    }

    /// The error code of the answer's body.
    pub fn code(&self) -> &'static str {
        match self.refusal() {
            Some(reason) => reason.label(),
            None => "bus_unavailable",
        }
    }
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotConnected => StatusCode::NOT_FOUND,
            Self::BusUnavailable(_) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let challenge = matches!(self, Self::Unauthorized).then_some("Bearer");
        error_body::render(self, self.code(), challenge)
    }
}
