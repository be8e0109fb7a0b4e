//! `amqps://` (RabbitMQ over TLS, as Amazon MQ and CloudAMQP serve it):
//! the bridge connects through a TLS endpoint in front of the local
//! RabbitMQ (`testkit::TlsProxy`, with a CA made for the test), trusting
//! that CA through `amqp_ca_file`: a Command arrives and a client message
//! is published over it. Trusting another CA, it does not connect: `/ready`
//! says the command source is unavailable, and the adapter's reason (the
//! log's) that it is the broker's certificate.

use app::broker::Connection;
use serde_json::json;
use testkit::TlsProxy;

use crate::brokers::rabbit::RabbitEnv;
use crate::brokers::start_bridge;
use crate::faults::wait_for_ready;
use crate::support::{client_id, command, next_json, send_text, TempDir, PATIENCE};

/// `amqp://user:password@host:port/vhost` → the same user and vhost over
/// TLS at `localhost:port` (the name the proxy's certificate holds).
fn over_tls(plain: &str, port: u16) -> String {
    let rest = plain
        .strip_prefix("amqp://")
        .unwrap_or_else(|| panic!("not an amqp:// URL: {plain}"));
    let (userinfo, hostpath) = rest
        .split_once('@')
        .unwrap_or_else(|| panic!("the test broker URL names no user: {plain}"));
    let path = hostpath.find('/').map_or("", |i| &hostpath[i..]);
    format!("amqps://{userinfo}@localhost:{port}{path}")
}

/// `host:port` of a plain URL.
fn address_of(plain: &str) -> String {
    let rest = plain.strip_prefix("amqp://").unwrap();
    let hostpath = rest.split_once('@').map_or(rest, |(_, h)| h);
    let authority = hostpath.split('/').next().unwrap();
    if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5672")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_client_messages_travel_over_amqps_with_a_private_ca() {
    let env = RabbitEnv::new().await;
    let plain = env.settings().amqp_url.unwrap();
    let tls = TlsProxy::start(&address_of(&plain));
    let dir = TempDir::new("amqps-ca");
    dir.write("ca.pem", tls.ca_pem());

    let mut settings = env.settings();
    settings.amqp_url = Some(over_tls(&plain, tls.port()));
    settings.amqp_ca_file = Some(dir.path().join("ca.pem"));
    let bridge = start_bridge(settings, Connection::Amqp).await;
    wait_for_ready(bridge.port, 200, PATIENCE).await;

    let client = client_id("amqps");
    let mut ws = bridge.connect(&client).await;
    let mut observer = env.events_observer().await;
    env.send_command(&command(&client, "over-tls").to_string(), false)
        .await;
    assert_eq!(next_json(&mut ws).await["command"], "over-tls");
    send_text(&mut ws, r#"{"action": "tls-hello", "id": "t1"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "t1"}));
    let events = observer.events(1, PATIENCE).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].body["action"], "tls-hello");
    assert_eq!(events[0].body["client_id"], client.as_str());

    // Both of the bridge's connections (source and sink) came through TLS.
    let (completed, failed) = tls.handshakes();
    assert!(
        completed >= 2 && failed == 0,
        "{completed} handshakes, {failed} failed"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_from_an_untrusted_ca_keeps_the_bridge_not_ready_saying_why() {
    let env = RabbitEnv::new().await;
    let plain = env.settings().amqp_url.unwrap();
    let broker = TlsProxy::start(&address_of(&plain));
    // The CA of another endpoint: not the one that signed the broker's.
    let other = TlsProxy::start(&address_of(&plain));
    let dir = TempDir::new("amqps-wrong-ca");
    dir.write("ca.pem", other.ca_pem());

    let mut settings = env.settings();
    settings.amqp_url = Some(over_tls(&plain, broker.port()));
    settings.amqp_ca_file = Some(dir.path().join("ca.pem"));
    let bridge = start_bridge(settings, Connection::Amqp).await;
    wait_for_ready(bridge.port, 503, PATIENCE).await;
    // Past the first attempt: the reason is the refused certificate.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let reason = loop {
        let reason = bridge.broker.not_ready_reason().unwrap_or_default();
        if reason.contains("certificate") || tokio::time::Instant::now() > deadline {
            break reason;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        reason.contains("certificate") && reason.contains("amqp_ca_file"),
        "{reason}"
    );
    let body: serde_json::Value = reqwest::get(bridge.http("/ready"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body,
        json!({"status": "not_ready", "reason": "command source unavailable"})
    );
    let (completed, failed) = broker.handshakes();
    assert!(
        completed == 0 && failed >= 1,
        "{completed} handshakes, {failed} failed"
    );
    bridge.stop().await;
}

#[test]
fn test_urls_keep_user_and_vhost() {
    assert_eq!(
        over_tls("amqp://guest:guest@127.0.0.1:5672/%2f", 4000),
        "amqps://guest:guest@localhost:4000/%2f"
    );
    assert_eq!(
        address_of("amqp://guest:guest@127.0.0.1:5672/%2f"),
        "127.0.0.1:5672"
    );
    assert_eq!(address_of("amqp://u:p@rabbit/x"), "rabbit:5672");
}
