//! The admin API's answers and counts, against fakes of its ports (the
//! whole bridge's admin API is tested end to end in the app's suite).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::WWW_AUTHENTICATE;
use actix_web::http::StatusCode;
use actix_web::test::{init_service, read_body_json, TestRequest};
use actix_web::{web, App};
use async_trait::async_trait;
use domain::{ClientId, Frame};
use serde_json::{json, Value};

use super::*;
use crate::ports::{ConnectionDetails, NotPublished};
use crate::ErrorBody;

const TOKEN: &str = "admin-token-for-tests";

/// Connections of `connected` only; records the orders given.
#[derive(Default)]
struct FakeConnections {
    connected: Option<ClientId>,
    orders: Mutex<Vec<String>>,
}

impl Connections for FakeConnections {
    fn clients(&self, _: Option<&str>, _: usize) -> (Vec<(ClientId, usize)>, Option<String>) {
        (
            self.connected.iter().map(|c| (c.clone(), 1)).collect(),
            None,
        )
    }

    fn connections_of(&self, client_id: &ClientId) -> Vec<ConnectionDetails> {
        self.here(client_id)
            .then_some(ConnectionDetails {
                id: 7,
                ip: None,
                since: SystemTime::UNIX_EPOCH,
                acknowledging: true,
                queued: 2,
            })
            .into_iter()
            .collect()
    }

    fn disconnect(
        &self,
        client_id: &ClientId,
        only: Option<u64>,
        code: u16,
        reason: &str,
    ) -> usize {
        let order = format!("disconnect {client_id} {only:?} {code} {reason}");
        self.orders.lock().unwrap().push(order);
        usize::from(self.here(client_id))
    }

    fn send_frame(&self, client_id: &ClientId, frame: &Frame) -> usize {
        self.orders
            .lock()
            .unwrap()
            .push(format!("send {client_id} {frame}"));
        usize::from(self.here(client_id))
    }
}

impl FakeConnections {
    fn here(&self, client_id: &ClientId) -> bool {
        self.connected.as_ref() == Some(client_id)
    }
}

/// A bus that takes every control message (recording it), or refuses all.
struct FakeBus {
    refuse: bool,
    published: Mutex<Vec<String>>,
}

#[async_trait]
impl ControlBus for FakeBus {
    async fn publish(&self, control: &str, _: &ClientId) -> Result<String, NotPublished> {
        if self.refuse {
            return Err(NotPublished("the broker is away".into()));
        }
        self.published.lock().unwrap().push(control.to_owned());
        Ok("m-1".into())
    }
}

struct Harness {
    connections: Arc<FakeConnections>,
    bus: Arc<FakeBus>,
    stats: Arc<Stats>,
    refused: Arc<Refusals>,
}

impl Harness {
    fn new(connected: Option<&str>, bus_refuses: bool) -> Self {
        Self {
            connections: Arc::new(FakeConnections {
                connected: connected.map(|c| ClientId::parse(c).unwrap()),
                ..FakeConnections::default()
            }),
            bus: Arc::new(FakeBus {
                refuse: bus_refuses,
                published: Mutex::new(Vec::new()),
            }),
            stats: Arc::new(Stats::default()),
            refused: Arc::new(Refusals::default()),
        }
    }

    /// Answers `request` (with the admin token unless `token` is false).
    async fn call(&self, request: TestRequest, token: bool) -> ServiceResponse {
        let api = AdminApi {
            connections: self.connections.clone(),
            token: SecretString::from(TOKEN),
            bus: self.bus.clone(),
            stats: self.stats.clone(),
            refused: self.refused.clone(),
        };
        let app = init_service(App::new().app_data(web::Data::new(api)).configure(routes)).await;
        let request = if token {
            request.insert_header(("Authorization", format!("Bearer {TOKEN}")))
        } else {
            request
        };
        app.call(request.to_request()).await.unwrap()
    }

    /// The refusals counted, without the zeros.
    fn refusals(&self) -> Vec<(&'static str, u64)> {
        let counts = self.refused.admin();
        counts.into_iter().filter(|(_, n)| *n > 0).collect()
    }
}

async fn error_of(response: ServiceResponse) -> (StatusCode, ErrorBody) {
    let status = response.status();
    (status, read_body_json(response).await)
}

#[actix_web::test]
async fn a_call_without_the_admin_token_is_refused_and_counted() {
    let harness = Harness::new(Some("alice"), false);
    let response = harness
        .call(TestRequest::get().uri("/admin/clients"), false)
        .await;
    assert_eq!(response.headers().get(WWW_AUTHENTICATE).unwrap(), "Bearer");
    let (status, body) = error_of(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body,
        ErrorBody::new(
            "unauthorized",
            "Authorization: Bearer <admin_token> required"
        )
    );
    assert_eq!(harness.refusals(), [("unauthorized", 1)]);
}

#[actix_web::test]
async fn every_malformed_order_is_refused_with_its_reason_and_counted() {
    let harness = Harness::new(Some("alice"), false);
    let disconnect = |body: Value| {
        TestRequest::post()
            .uri("/admin/clients/alice/disconnect")
            .set_json(body)
    };
    for (request, code) in [
        (disconnect(json!({"code": 1006})), "invalid_code"),
        (
            disconnect(json!({"reason": "r".repeat(124)})),
            "invalid_reason",
        ),
        (
            disconnect(json!({"connection_id": "x"})),
            "invalid_connection_id",
        ),
        (disconnect(json!({"code": "loud"})), "invalid_body"),
        (
            TestRequest::post()
                .uri("/admin/clients/alice/send")
                .set_payload("not json"),
            "invalid_body",
        ),
        (
            TestRequest::post().uri("/admin/clients/alice/send?via=elsewhere"),
            "invalid_via",
        ),
    ] {
        let (status, body) = error_of(harness.call(request, true).await).await;
        assert_eq!(
            (status, body.error.code.as_str()),
            (StatusCode::BAD_REQUEST, code)
        );
        assert!(!body.error.message.is_empty(), "{body:?}");
    }
    assert!(harness.connections.orders.lock().unwrap().is_empty());
    assert_eq!(
        harness.refusals(),
        [
            ("invalid_via", 1),
            ("invalid_body", 2),
            ("invalid_code", 1),
            ("invalid_reason", 1),
            ("invalid_connection_id", 1),
        ]
    );
}

#[actix_web::test]
async fn a_client_not_connected_here_is_a_404_when_shown_and_forwarded_when_ordered() {
    let harness = Harness::new(None, false);
    let (status, body) = error_of(
        harness
            .call(TestRequest::get().uri("/admin/clients/bob"), true)
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body,
        ErrorBody::new("not_connected", "no connection of this client here")
    );

    let response = harness
        .call(
            TestRequest::post()
                .uri("/admin/clients/bob/disconnect")
                .set_json(json!({"code": 4001, "reason": "bye", "connection_id": "9"})),
            true,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answer: Value = read_body_json(response).await;
    assert_eq!(answer, json!({"forwarded": true, "message_id": "m-1"}));
    let published: Value = serde_json::from_str(&harness.bus.published.lock().unwrap()[0]).unwrap();
    assert_eq!(
        published,
        json!({"client_id": "bob", "command": "$disconnect", "code": 4001, "reason": "bye",
               "connection_id": "9"})
    );
    assert_eq!(
        harness.connections.orders.lock().unwrap().as_slice(),
        ["disconnect bob Some(9) 4001 bye"]
    );
    assert_eq!(harness.stats.control.snapshot().admin_forwarded, 1);
    assert_eq!(harness.refusals(), [("not_connected", 1)]);
}

#[actix_web::test]
async fn a_frame_for_a_client_here_is_sent_here() {
    let harness = Harness::new(Some("alice"), false);
    let response = harness
        .call(
            TestRequest::post()
                .uri("/admin/clients/alice/send")
                .set_payload(r#"{"n": 1}"#),
            true,
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = read_body_json(response).await;
    assert_eq!(answer, json!({"sent": 1}));
    assert_eq!(
        harness.connections.orders.lock().unwrap().as_slice(),
        [r#"send alice {"n": 1}"#]
    );
    assert!(harness.bus.published.lock().unwrap().is_empty());
    assert_eq!(harness.stats.control.snapshot().admin_here, 1);
}

#[actix_web::test]
async fn a_bus_that_refuses_is_a_failed_order_not_a_refusal() {
    let harness = Harness::new(None, true);
    let (status, body) = error_of(
        harness
            .call(
                TestRequest::post()
                    .uri("/admin/clients/bob/send?via=bus")
                    .set_payload(r#"{"n": 1}"#),
                true,
            )
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body,
        ErrorBody::new(
            "bus_unavailable",
            "not connected here, and the control message was not published: the broker is away"
        )
    );
    // ?via=bus: not even tried here.
    assert!(harness.connections.orders.lock().unwrap().is_empty());
    assert_eq!(harness.stats.control.snapshot().admin_failed, 1);
    assert_eq!(harness.refusals(), []);
}

#[test]
fn the_admin_token_is_compared_whole() {
    assert!(same_secret(TOKEN, TOKEN));
    assert!(!same_secret("", TOKEN));
    assert!(!same_secret(&TOKEN[..TOKEN.len() - 1], TOKEN));
}
