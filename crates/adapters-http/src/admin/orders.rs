//! `POST /admin/clients/{id}/disconnect` and `POST /admin/clients/{id}/send`:
//! carried out on this replica's connections of the client, else published
//! to the bus as the control message a backend would send.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use domain::stats::bump;
use domain::{ClientId, Frame};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::{AdminApi, AdminError};

/// Longest close reason a close frame carries (RFC 6455: 123 bytes).
const MAX_REASON_BYTES: usize = 123;

/// `?via=bus`: publish the order to the bus without acting here first, so
/// that it reaches every replica that holds the client (fanout mode: all of
/// them, this one included), not only this one.
#[derive(Deserialize)]
pub(super) struct Via {
    via: Option<String>,
}

impl Via {
    /// Whether the order goes straight to the bus.
    fn bus_only(&self) -> Result<bool, AdminError> {
        match self.via.as_deref() {
            None | Some("here") => Ok(false),
            Some("bus") => Ok(true),
            Some(_) => Err(AdminError::InvalidVia),
        }
    }
}

/// The client an order is about and whether it goes straight to the bus,
/// once the call is authorized.
fn authorized_order(
    req: &HttpRequest,
    api: &AdminApi,
    raw: &str,
    via: &Via,
) -> Result<(ClientId, bool), AdminError> {
    api.authorize(req)?;
    let client = ClientId::parse(raw)?;
    Ok((client, via.bus_only()?))
}

#[derive(Deserialize)]
struct DisconnectBody {
    #[serde(default = "normal_closure")]
    code: u16,
    #[serde(default)]
    reason: String,
    connection_id: Option<String>,
}

fn normal_closure() -> u16 {
    1000
}

/// A disconnect order, checked.
struct Disconnect {
    code: u16,
    reason: String,
    /// Only this connection, when given.
    only: Option<u64>,
}

impl Disconnect {
    /// The order of `body` (empty: close every connection with 1000).
    fn read(body: &[u8]) -> Result<Self, AdminError> {
        let order: DisconnectBody = if body.is_empty() {
            DisconnectBody {
                code: normal_closure(),
                reason: String::new(),
                connection_id: None,
            }
        } else {
            serde_json::from_slice(body)?
        };
        if order.code != 1000 && !(3000..=4999).contains(&order.code) {
            return Err(AdminError::InvalidCode);
        }
        if order.reason.len() > MAX_REASON_BYTES {
            return Err(AdminError::InvalidReason);
        }
        let only = order
            .connection_id
            .as_deref()
            .map(str::parse::<u64>)
            .transpose()
            .map_err(|_| AdminError::InvalidConnectionId)?;
        Ok(Self {
            code: order.code,
            reason: order.reason,
            only,
        })
    }

    /// The control message that carries the order to another replica.
    fn control(&self, client: &ClientId) -> Value {
        let mut control = json!({
            "client_id": client.as_str(),
            "command": domain::control::DISCONNECT,
            "code": self.code,
            "reason": self.reason,
        });
        if let Some(id) = self.only {
            control["connection_id"] = json!(id.to_string());
        }
        control
    }
}

pub(super) async fn disconnect(
    req: HttpRequest,
    id: web::Path<String>,
    via: web::Query<Via>,
    body: web::Bytes,
    api: web::Data<AdminApi>,
) -> Result<HttpResponse, AdminError> {
    let answer = async {
        let (client, bus_only) = authorized_order(&req, &api, &id, &via)?;
        let order = Disconnect::read(&body)?;
        let closed = if bus_only {
            0
        } else {
            api.connections
                .disconnect(&client, order.only, order.code, &order.reason)
        };
        if closed > 0 {
            info!(client_id = %client, connections = closed, code = order.code, reason = %order.reason, "admin API: disconnected");
            bump(&api.stats.control.admin_here, 1);
            return Ok(HttpResponse::Ok().json(json!({"disconnected": closed})));
        }
        forward(&api, &client, &order.control(&client).to_string()).await
    };
    api.counted(answer.await)
}

pub(super) async fn send(
    req: HttpRequest,
    id: web::Path<String>,
    via: web::Query<Via>,
    body: web::Bytes,
    api: web::Data<AdminApi>,
) -> Result<HttpResponse, AdminError> {
    let answer = async {
        let (client, bus_only) = authorized_order(&req, &api, &id, &via)?;
        let text = std::str::from_utf8(&body).map_err(|_| AdminError::FrameNotUtf8)?;
        serde_json::from_str::<Value>(text).map_err(|_| AdminError::FrameNotJson)?;
        let frame: Frame = Arc::from(text);
        let sent = if bus_only {
            0
        } else {
            api.connections.send_frame(&client, &frame)
        };
        if sent > 0 {
            info!(client_id = %client, connections = sent, "admin API: frame sent");
            bump(&api.stats.control.admin_here, 1);
            return Ok(HttpResponse::Ok().json(json!({"sent": sent})));
        }
        // Spliced in as it came: the frame reaches the client byte for byte.
        let control = format!(
            r#"{{"client_id":{},"command":"{}","frame":{text}}}"#,
            json!(client.as_str()),
            domain::control::SEND,
        );
        forward(&api, &client, &control).await
    };
    api.counted(answer.await)
}

/// Publishes `control` for a client that has no connection here: 202 with
/// the message id, 502 when the bus refused it.
async fn forward(
    api: &AdminApi,
    client: &ClientId,
    control: &str,
) -> Result<HttpResponse, AdminError> {
    match api.bus.publish(control, client).await {
        Ok(message_id) => {
            info!(client_id = %client, %message_id, "admin API: control message published");
            bump(&api.stats.control.admin_forwarded, 1);
            Ok(HttpResponse::Accepted().json(json!({"forwarded": true, "message_id": message_id})))
        }
        Err(failed) => {
            warn!(client_id = %client, error = %failed, "admin API: control message not published");
            Err(AdminError::BusUnavailable(failed.0))
        }
    }
}
