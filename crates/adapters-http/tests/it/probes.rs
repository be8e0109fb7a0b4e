//! `/health`, `/ready` and `/metrics`.

use actix_web::http::header::{ACCEPT, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::test::{read_body, read_body_json, TestRequest};
use adapters_http::metrics::OPENMETRICS_TEXT;
use adapters_http::AccessSettings;
use serde_json::{json, Value};

use crate::support::{handshake, Bridge};

async fn get_json(bridge: &Bridge, uri: &str) -> (StatusCode, Value) {
    let response = bridge.call(TestRequest::get().uri(uri)).await;
    let status = response.status();
    (status, read_body_json(response).await)
}

#[actix_web::test]
async fn ready_follows_the_broker_and_the_shutdown_health_does_not() {
    let bridge = Bridge::new(AccessSettings::default());
    assert_eq!(
        get_json(&bridge, "/ready").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
    *bridge.broker.not_ready.lock().unwrap() = Some("command source unavailable");
    assert_eq!(
        get_json(&bridge, "/ready").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "reason": "command source unavailable"})
        )
    );
    *bridge.broker.not_ready.lock().unwrap() = None;
    bridge.closing.cancel();
    let shutting_down = json!({
        "status": "not_ready",
        "reason": "shutting down: the command consumer has stopped"
    });
    assert_eq!(
        get_json(&bridge, "/ready").await,
        (StatusCode::SERVICE_UNAVAILABLE, shutting_down)
    );
    assert_eq!(
        get_json(&bridge, "/health").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
}

#[actix_web::test]
async fn metrics_show_the_connections_the_readiness_and_the_refusals() {
    let bridge = Bridge::new(AccessSettings::default());
    bridge.call(handshake("/ws/alice")).await;
    bridge.call(handshake("/ws")).await;
    *bridge.broker.not_ready.lock().unwrap() = Some("starting");
    let response = bridge
        .call(
            TestRequest::get()
                .uri("/metrics")
                .insert_header((ACCEPT, "application/openmetrics-text")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get(CONTENT_TYPE).unwrap(),
        OPENMETRICS_TEXT
    );
    let text = String::from_utf8(read_body(response).await.to_vec()).unwrap();
    for line in [
        "wsbridge_open_connections 1\n",
        "wsbridge_ready 0\n",
        "wsbridge_upgrades_refused_total{reason=\"missing_client_id\"} 1\n",
        "wsbridge_admin_requests_refused_total{reason=\"unauthorized\"} 0\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
}
