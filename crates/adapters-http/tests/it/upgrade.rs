//! Admission of upgrades: each check in its order, the answer of each
//! refusal, each refusal counted, and what an admitted upgrade hands the
//! WebSocket side.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use actix_web::http::header::{HeaderName, WWW_AUTHENTICATE};
use actix_web::http::StatusCode;
use adapters_http::auth::mint;
use adapters_http::{AccessSettings, ConnectionLimit, JwtSettings};
use domain::{shard_of, ClientId, ShardAssignment, ShardRange};
use secrecy::SecretString;

use crate::support::{handshake, Bridge, Refuse};

const SECRET: &str = "a-test-secret-of-thirty-two-bytes!!";

fn jwt() -> AccessSettings {
    AccessSettings {
        jwt: Some(JwtSettings {
            secret: Some(SecretString::from(SECRET)),
            leeway_secs: 30,
            ..JwtSettings::default()
        }),
        ..AccessSettings::default()
    }
}

fn token_for(client: &str) -> String {
    let client = ClientId::parse(client).unwrap();
    let secret = SecretString::from(SECRET);
    mint(&secret, &client, Duration::from_secs(600), None, None).unwrap()
}

#[actix_web::test]
async fn each_check_refuses_in_its_order_and_every_refusal_is_counted() {
    let alice = ClientId::parse("alice").unwrap();
    let elsewhere = (shard_of(&alice, 2) + 1) % 2;
    let shards = ShardAssignment {
        shards: 2,
        owned: ShardRange::new(elsewhere, elsewhere + 1, 2).unwrap(),
    };
    let bridge = Bridge::new(AccessSettings {
        allowed_origins: vec!["https://app.example".into()],
        ..AccessSettings::default()
    })
    .sharded(shards);
    let evil = handshake("/ws/alice").insert_header(("Origin", "https://evil.example"));
    assert_eq!(
        bridge.refusal(evil).await,
        (403, "origin_not_allowed".into())
    );
    assert_eq!(
        bridge.refusal(handshake("/ws?client_id=a%01b")).await,
        (400, "invalid_client_id".into())
    );
    assert_eq!(
        bridge.refusal(handshake("/ws")).await,
        (400, "missing_client_id".into())
    );
    let allowed = handshake("/ws/alice").insert_header(("Origin", "https://app.example"));
    assert_eq!(
        bridge.refusal(allowed).await,
        (421, "misdirected_client".into())
    );
    bridge.closing.cancel();
    let shutting_down = format!("/ws/{}", other_than(&shards));
    assert_eq!(
        bridge.refusal(handshake(&shutting_down)).await,
        (503, "shutting_down".into())
    );
    assert!(bridge.sessions.started.lock().unwrap().is_empty());
    assert_eq!(
        bridge.upgrade_refusals(),
        [
            ("origin_not_allowed", 1),
            ("misdirected_client", 1),
            ("invalid_client_id", 1),
            ("missing_client_id", 1),
            ("shutting_down", 1),
        ]
    );
}

/// A client id of a shard `shards` owns.
fn other_than(shards: &ShardAssignment) -> String {
    (0..)
        .map(|n| format!("client-{n}"))
        .find(|id| shards.locate(&ClientId::parse(id.as_str()).unwrap()).1)
        .unwrap()
}

#[actix_web::test]
async fn a_limit_the_sessions_report_is_answered_and_counted() {
    let bridge = Bridge::new(AccessSettings::default());
    for (limit, status, code) in [
        (ConnectionLimit::PerClient, 429, "too_many_connections"),
        (
            ConnectionLimit::PerAddress,
            429,
            "too_many_connections_from_address",
        ),
        (ConnectionLimit::Total, 503, "server_at_capacity"),
    ] {
        *bridge.sessions.refuse.lock().unwrap() = Some(Refuse::Limit(limit));
        assert_eq!(
            bridge.refusal(handshake("/ws/alice")).await,
            (status, code.into())
        );
    }
    assert_eq!(
        bridge.upgrade_refusals(),
        [
            ("too_many_connections", 1),
            ("too_many_connections_from_address", 1),
            ("server_at_capacity", 1),
        ]
    );
}

#[actix_web::test]
async fn a_request_that_is_no_handshake_is_answered_as_actix_answers_it_and_counted() {
    let bridge = Bridge::new(AccessSettings::default());
    *bridge.sessions.refuse.lock().unwrap() = Some(Refuse::Handshake);
    let response = bridge.call(handshake("/ws/alice")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bridge.upgrade_refusals(), [("invalid_handshake", 1)]);
}

#[actix_web::test]
async fn an_admitted_upgrade_hands_the_sessions_who_is_connecting() {
    let bridge = Bridge::new(AccessSettings {
        client_ip_header: Some(HeaderName::from_static("x-forwarded-for")),
        ..AccessSettings::default()
    });
    let request = handshake("/ws/alice?ack=true")
        .insert_header(("X-Forwarded-For", "10.0.0.1, 10.0.0.2"))
        .peer_addr("192.0.2.7:5000".parse().unwrap());
    let response = bridge.call(request).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let request = handshake("/ws?client_id=bob").peer_addr("192.0.2.7:5000".parse().unwrap());
    bridge.call(request).await;

    let started = bridge.sessions.started.lock().unwrap();
    let [alice, bob] = started.as_slice() else {
        panic!("two sessions expected, {} started", started.len());
    };
    assert_eq!(alice.client_id.as_str(), "alice");
    assert_eq!(alice.ip, Some("10.0.0.2".parse::<IpAddr>().unwrap()));
    assert!(alice.acknowledging && !alice.echo);
    assert!(alice.protocol.is_none() && alice.credential.is_none());
    assert_eq!(bob.client_id.as_str(), "bob");
    assert_eq!(bob.ip, Some("192.0.2.7".parse::<IpAddr>().unwrap()));
    assert!(!bob.acknowledging);
    assert_eq!(bridge.upgrade_refusals(), []);
}

#[actix_web::test]
async fn with_jwt_the_token_names_the_client_and_lasts_until_its_expiry() {
    let bridge = Bridge::new(jwt());
    let response = bridge.call(handshake("/ws/alice")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers().get(WWW_AUTHENTICATE).unwrap(), "Bearer");
    assert_eq!(
        bridge
            .refusal(handshake("/ws/alice").insert_header(("Authorization", "Bearer x.y.z")))
            .await,
        (401, "invalid_token".into())
    );
    let bobs = format!("Bearer {}", token_for("bob"));
    assert_eq!(
        bridge
            .refusal(handshake("/ws/alice").insert_header(("Authorization", bobs)))
            .await,
        (403, "client_id_mismatch".into())
    );

    let offer = format!("bearer, {}", token_for("alice"));
    let response = bridge
        .call(handshake("/ws").insert_header(("Sec-WebSocket-Protocol", offer)))
        .await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let started = bridge.sessions.started.lock().unwrap();
    let alice = &started[0];
    assert_eq!(alice.client_id.as_str(), "alice");
    assert_eq!(alice.protocol, Some("bearer"));
    let until = alice.credential.as_ref().unwrap().valid_until;
    let left = until.duration_since(SystemTime::now()).unwrap();
    // 600 s of token plus 30 s of leeway, less the test's own time.
    assert!(
        left > Duration::from_secs(600) && left <= Duration::from_secs(630),
        "{left:?}"
    );
    assert_eq!(
        bridge.upgrade_refusals(),
        [("unauthenticated", 2), ("client_id_mismatch", 1)]
    );
}
