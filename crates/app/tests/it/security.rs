//! Security and abuse limits end to end (docs/security.md): JWT
//! authentication (HS256, RS256 from PEM and JWKS), the origin allow-list,
//! connection limits, the message rate limit, binary frames, the handshake
//! timeout, the test-only echo route, `wsbridge token`, and secrets kept out
//! of the logs. Every refusal is checked for its status or close code AND
//! for nothing having been delivered or published.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use app::config::{AuthMode, Secret, Settings, Sources, UndeliverablePolicy};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::support::{
    assert_silent, client_id, next_frame, next_json, next_text, send_text, wait_until, Bridge, Env,
    Next, TempDir, Ws, PATIENCE, QUIET,
};

/// The HS256 secret of the test bridges (40 bytes).
const SECRET: &str = "test-secret-0123456789-abcdefghijklmnopq";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures")
        .join(name)
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    i64::try_from(secs).unwrap()
}

/// Claims for `sub`, valid for an hour.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iat": now(), "exp": now() + 3600})
}

fn sign(claims: &Value, header: Header, key: &EncodingKey) -> String {
    adapters_http::auth::crypto::install();
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value, secret: &str) -> String {
    sign(
        claims,
        Header::new(Algorithm::HS256),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn rs256(claims: &Value, private_key: &str, kid: Option<&str>) -> String {
    let pem = std::fs::read(fixture(private_key)).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    sign(claims, header, &EncodingKey::from_rsa_pem(&pem).unwrap())
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// An unsigned token (`alg: none`).
fn alg_none(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(claims.to_string().as_bytes())
    )
}

/// `token` with its payload replaced by `claims`, the signature kept.
fn tampered(token: &str, claims: &Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    )
}

/// What an upgrade attempt got.
enum Attempt {
    Upgraded(Box<Ws>, HeaderMap),
    Refused(u16, Value, HeaderMap),
}

async fn attempt(url: &str, headers: &[(&str, &str)]) -> Attempt {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let Ok(connected) =
        tokio::time::timeout(PATIENCE, tokio_tungstenite::connect_async(request)).await
    else {
        panic!("{url}: timed out");
    };
    match connected {
        Ok((ws, response)) => Attempt::Upgraded(Box::new(ws), response.headers().clone()),
        Err(WsError::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let body = serde_json::from_slice(&body).unwrap_or_else(|e| {
                panic!("{url}: not JSON ({e}): {}", String::from_utf8_lossy(&body))
            });
            Attempt::Refused(response.status().as_u16(), body, response.headers().clone())
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

/// Asserts a refusal with `status` and error `code`; returns its headers.
pub(crate) async fn assert_refused(
    url: &str,
    headers: &[(&str, &str)],
    status: u16,
    code: &str,
) -> HeaderMap {
    match attempt(url, headers).await {
        Attempt::Upgraded(..) => panic!("{url} {headers:?}: upgraded, expected {status} {code}"),
        Attempt::Refused(got, body, headers) => {
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{url}: {body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{body}"
            );
            headers
        }
    }
}

async fn assert_upgraded(url: &str, headers: &[(&str, &str)]) -> (Ws, HeaderMap) {
    match attempt(url, headers).await {
        Attempt::Upgraded(ws, headers) => (*ws, headers),
        Attempt::Refused(status, body, _) => panic!("{url}: refused with {status}: {body}"),
    }
}

/// `wsbridge_open_connections` from `/metrics`.
async fn open_connections(bridge: &Bridge) -> u64 {
    let text = reqwest::get(bridge.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("wsbridge_open_connections "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wsbridge_open_connections in:\n{text}"))
}

fn jwt(settings: &mut Settings) {
    settings.auth = AuthMode::Jwt;
    settings.jwt_secret = Some(Secret::new(SECRET));
    settings.undeliverable = Some(UndeliverablePolicy::Drop);
}

/// Sends a Command for `victim` and waits until the bridge has dropped it as
/// undeliverable: proof that no connection of `victim` is registered.
async fn assert_undeliverable(env: &Env, bridge: &Bridge, victim: &str) {
    let before = bridge.stats.downlink.snapshot();
    env.aws
        .send(
            &env.infra.command_queue_url,
            &crate::support::command(victim, "must-not-arrive").to_string(),
        )
        .await;
    let stats = bridge.stats.clone();
    wait_until(
        "the Command for the refused client to be undeliverable",
        || {
            let undeliverable = stats.downlink.snapshot().undeliverable;
            async move { undeliverable > before.undeliverable }
        },
    )
    .await;
    assert_eq!(
        bridge.stats.downlink.snapshot().forwarded,
        before.forwarded,
        "a Command reached a refused client"
    );
}

// ---------------------------------------------------------------------------
// JWT

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_tokens_that_do_not_verify_are_refused_before_the_upgrade() {
    let env = Env::new(5).await;
    let bridge = env.bridge(jwt).await;
    bridge.wait_until_polling().await;
    let victim = client_id("victim");
    let url = bridge.ws_url(&format!("/ws/{victim}"));
    let with = |token: &str| format!("{url}?token={token}");

    // No token at all.
    let headers = assert_refused(&url, &[], 401, "missing_token").await;
    assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
    // Expired beyond the leeway, not valid yet, without exp.
    let expired = json!({"sub": victim, "exp": now() - 3600});
    let headers = assert_refused(&with(&hs256(&expired, SECRET)), &[], 401, "invalid_token").await;
    assert!(headers
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("invalid_token"));
    let early = json!({"sub": victim, "exp": now() + 3600, "nbf": now() + 1800});
    assert_refused(&with(&hs256(&early, SECRET)), &[], 401, "invalid_token").await;
    let no_exp = json!({"sub": victim});
    assert_refused(&with(&hs256(&no_exp, SECRET)), &[], 401, "invalid_token").await;
    // A malformed exp (a string, which some libraries skip) is refused too.
    let string_exp = json!({"sub": victim, "exp": "99999999999"});
    assert_refused(
        &with(&hs256(&string_exp, SECRET)),
        &[],
        401,
        "invalid_token",
    )
    .await;
    // Forged with another secret, unsigned, tampered with.
    let forged = hs256(&claims(&victim), "another-secret-of-the-same-length-000000");
    assert_refused(&with(&forged), &[], 401, "invalid_token").await;
    assert_refused(
        &with(&alg_none(&claims(&victim))),
        &[],
        401,
        "invalid_token",
    )
    .await;
    let mallory = hs256(&claims("mallory"), SECRET);
    assert_refused(
        &with(&tampered(&mallory, &claims(&victim))),
        &[],
        401,
        "invalid_token",
    )
    .await;
    assert_refused(&with("not-a-jwt"), &[], 401, "invalid_token").await;
    // A sub that is no client id.
    let empty_sub = json!({"sub": "", "exp": now() + 60});
    assert_refused(
        &format!(
            "{}?token={}",
            bridge.ws_url("/ws"),
            hs256(&empty_sub, SECRET)
        ),
        &[],
        401,
        "invalid_token",
    )
    .await;
    // A valid token, but for another client than the URL's: 403, by every route and source.
    let alice = client_id("alice");
    let alices = hs256(&claims(&alice), SECRET);
    assert_refused(&with(&alices), &[], 403, "client_id_mismatch").await;
    let bearer = format!("Bearer {alices}");
    assert_refused(
        &url,
        &[("authorization", &bearer)],
        403,
        "client_id_mismatch",
    )
    .await;
    let query_url = bridge.ws_url(&format!("/ws?client_id={victim}&token={alices}"));
    assert_refused(&query_url, &[], 403, "client_id_mismatch").await;

    // Nothing was registered: no connection, and a Command for the victim
    // finds nobody.
    assert_eq!(open_connections(&bridge).await, 0);
    assert_undeliverable(&env, &bridge, &victim).await;
    assert_eq!(bridge.stats.uplink.snapshot().published, 0);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_connects_from_each_source_and_the_client_id_is_its_sub() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env.bridge(jwt).await;
    bridge.wait_until_polling().await;
    let alice = client_id("alice");
    let token = hs256(&claims(&alice), SECRET);

    // Authorization header, URL naming the same client.
    let bearer = format!("Bearer {token}");
    let (mut by_header, _) = assert_upgraded(
        &bridge.ws_url(&format!("/ws/{alice}")),
        &[("authorization", &bearer)],
    )
    .await;
    // Query parameter, no client id in the URL: it is the token's sub.
    let (mut by_query, _) =
        assert_upgraded(&bridge.ws_url(&format!("/ws?token={token}")), &[]).await;
    // Subprotocol, as a browser sends it: the server answers `bearer`.
    let offer = format!("bearer, {token}");
    let (mut by_protocol, headers) =
        assert_upgraded(&bridge.ws_url("/ws"), &[("sec-websocket-protocol", &offer)]).await;
    assert_eq!(headers.get("sec-websocket-protocol").unwrap(), "bearer");
    assert_eq!(open_connections(&bridge).await, 3);

    // A Command for the sub reaches all three.
    let sent = crate::support::command(&alice, "for-alice");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    for ws in [&mut by_header, &mut by_query, &mut by_protocol] {
        assert_eq!(next_json(ws).await, sent);
    }
    // What they publish carries the sub as client_id.
    send_text(
        &mut by_query,
        r#"{"action":"hello","id":"1","client_id":"mallory"}"#,
    )
    .await;
    assert_eq!(next_json(&mut by_query).await, json!({"ack": "1"}));
    let got = env.aws.receive_at_least(&observer.url, 1, PATIENCE).await;
    let published: Value = serde_json::from_str(&got[0].payload()).unwrap();
    assert_eq!(published["client_id"], json!(alice));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_from_a_pem_refuses_other_keys_and_algorithm_confusion() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            jwt(s);
            s.jwt_secret = None;
            s.jwt_public_key_file = Some(fixture("rsa-public.pem"));
            s.jwt_audience = Some("wsbridge".into());
            s.jwt_issuer = Some("https://issuer.example".into());
        })
        .await;
    bridge.wait_until_polling().await;
    let victim = client_id("victim");
    let url = bridge.ws_url("/ws");
    let with = |token: &str| format!("{url}?token={token}");
    let mut good = claims(&victim);
    good["aud"] = json!("wsbridge");
    good["iss"] = json!("https://issuer.example");

    // Signed by another key.
    assert_refused(
        &with(&rs256(&good, "other-rsa-private.pem", None)),
        &[],
        401,
        "invalid_token",
    )
    .await;
    // HS256 "signed" with the public key as the secret: the classic confusion.
    let public_pem = std::fs::read_to_string(fixture("rsa-public.pem")).unwrap();
    assert_refused(&with(&hs256(&good, &public_pem)), &[], 401, "invalid_token").await;
    // Right key, wrong or missing audience or issuer.
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    assert_refused(
        &with(&rs256(&wrong_aud, "rsa-private.pem", None)),
        &[],
        401,
        "invalid_token",
    )
    .await;
    let mut no_iss = good.clone();
    no_iss.as_object_mut().unwrap().remove("iss");
    assert_refused(
        &with(&rs256(&no_iss, "rsa-private.pem", None)),
        &[],
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(open_connections(&bridge).await, 0);
    assert_undeliverable(&env, &bridge, &victim).await;

    // The right token connects.
    let (mut ws, _) = assert_upgraded(&with(&rs256(&good, "rsa-private.pem", None)), &[]).await;
    let sent = crate::support::command(&victim, "now-you-may");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    assert_eq!(next_json(&mut ws).await, sent);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_from_a_jwks_picks_the_key_by_kid() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            jwt(s);
            s.jwt_secret = None;
            s.jwt_public_key_file = Some(fixture("jwks.json"));
        })
        .await;
    let id = client_id("jwks");
    let url = bridge.ws_url("/ws");
    let with = |token: &str| format!("{url}?token={token}");
    // Named key, and no kid at all: accepted.
    let (_a, _) = assert_upgraded(
        &with(&rs256(&claims(&id), "rsa-private.pem", Some("test-key"))),
        &[],
    )
    .await;
    let (_b, _) = assert_upgraded(&with(&rs256(&claims(&id), "rsa-private.pem", None)), &[]).await;
    // Signed by one key of the set but claiming the other's kid: refused.
    assert_refused(
        &with(&rs256(
            &claims(&id),
            "other-rsa-private.pem",
            Some("test-key"),
        )),
        &[],
        401,
        "invalid_token",
    )
    .await;
    // The HMAC key of the set is never used: an HS256 token is refused.
    assert_refused(
        &with(&hs256(&claims(&id), "not used for RS256 at all, ever")),
        &[],
        401,
        "invalid_token",
    )
    .await;
    assert_eq!(open_connections(&bridge).await, 2);
    bridge.stop().await;
}

// ---------------------------------------------------------------------------
// Configuration of the security settings

fn load(dir: &TempDir, env: &[(&str, &str)]) -> Result<Settings, app::config::ConfigError> {
    Settings::load(&Sources {
        config_dir: dir.path().to_path_buf(),
        profile: None,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        overrides: Vec::new(),
    })
}

fn assert_problem(result: Result<Settings, app::config::ConfigError>, field: &str) {
    match result {
        Ok(_) => panic!("expected a problem with {field}"),
        Err(e) => assert!(
            e.problems
                .iter()
                .any(|p| p.starts_with(&format!("{field}:"))),
            "no problem naming {field}: {e}"
        ),
    }
}

#[test]
fn security_settings_are_validated_and_the_secret_never_shown() {
    let dir = TempDir::new("cfg-security");
    assert_problem(load(&dir, &[("BRIDGE_AUTH", "jwt")]), "jwt_secret");
    assert_problem(
        load(
            &dir,
            &[("BRIDGE_AUTH", "jwt"), ("BRIDGE_JWT_SECRET", "too-short")],
        ),
        "jwt_secret",
    );
    assert_problem(
        load(
            &dir,
            &[
                ("BRIDGE_AUTH", "jwt"),
                ("BRIDGE_JWT_SECRET", SECRET),
                ("BRIDGE_JWT_PUBLIC_KEY_FILE", "/nonexistent.pem"),
            ],
        ),
        "jwt_public_key_file",
    );
    assert_problem(
        load(
            &dir,
            &[("BRIDGE_ALLOWED_ORIGINS", "https://ok.example,not an origin")],
        ),
        "allowed_origins",
    );
    assert_problem(
        load(&dir, &[("BRIDGE_MAX_CONNECTIONS_PER_IP", "0")]),
        "max_connections_per_ip",
    );

    // A comma-separated list of origins; a secret made of digits stays text.
    let digits = "0".repeat(8) + &"1234".repeat(8);
    let settings = load(
        &dir,
        &[
            ("BRIDGE_AUTH", "jwt"),
            ("BRIDGE_JWT_SECRET", &digits),
            (
                "BRIDGE_ALLOWED_ORIGINS",
                "https://a.example, http://b.example:8080/",
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        settings.allowed_origins,
        ["https://a.example", "http://b.example:8080/"]
    );
    assert_eq!(settings.jwt_secret.as_ref().unwrap().expose(), digits);
    // Never in Debug or in a serialization.
    let shown = format!("{settings:?} {}", serde_json::to_string(&settings).unwrap());
    assert!(!shown.contains(&digits), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");

    // A key file that is not a key is a configuration error naming the field.
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::write(&not_a_key, "hello").unwrap();
    let settings = Settings {
        auth: AuthMode::Jwt,
        jwt_public_key_file: Some(not_a_key),
        ..Settings::default()
    };
    let config = app::config::Config::new(settings).expect("valid settings");
    match app::http_adapter::access(&config) {
        Ok(_) => panic!("a file that is not a key was accepted"),
        Err(e) => assert!(e.problems[0].starts_with("jwt_public_key_file:"), "{e}"),
    }
}

// ---------------------------------------------------------------------------
// Origin allow-list

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_from_an_origin_not_allowed_is_refused_with_403() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            s.allowed_origins = vec!["https://app.example".into()];
            s.undeliverable = Some(UndeliverablePolicy::Drop);
        })
        .await;
    bridge.wait_until_polling().await;
    let victim = client_id("victim");
    let url = bridge.ws_url(&format!("/ws/{victim}"));
    for evil in [
        "https://evil.example",
        "http://app.example",
        "https://app.example.evil.example",
        "null",
    ] {
        assert_refused(&url, &[("origin", evil)], 403, "origin_not_allowed").await;
    }
    assert_eq!(open_connections(&bridge).await, 0);
    assert_undeliverable(&env, &bridge, &victim).await;
    let metrics = reqwest::get(bridge.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wsbridge_upgrades_refused_total{reason=\"origin_not_allowed\"} 4\n"),
        "{metrics}"
    );

    // The allowed origin (any case), and a client that sends none, connect.
    let (_page, _) = assert_upgraded(&url, &[("origin", "https://APP.example")]).await;
    let (_tool, _) = assert_upgraded(&url, &[]).await;
    assert_eq!(open_connections(&bridge).await, 2);
    bridge.stop().await;
}

// ---------------------------------------------------------------------------
// Connection limits

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limits_are_refused_and_never_registered() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            s.max_connections_per_client = 1;
            s.max_connections_per_ip = 3;
            s.max_connections = 100;
        })
        .await;
    bridge.wait_until_polling().await;
    let alice = client_id("alice");
    let mut first = bridge.connect(&alice).await;
    assert_refused(
        &bridge.ws_url(&format!("/ws/{alice}")),
        &[],
        429,
        "too_many_connections",
    )
    .await;
    let _b = bridge.connect(&client_id("b")).await;
    let _c = bridge.connect(&client_id("c")).await;
    let over = client_id("d");
    assert_refused(
        &bridge.ws_url(&format!("/ws/{over}")),
        &[],
        429,
        "too_many_connections_from_address",
    )
    .await;
    assert_eq!(open_connections(&bridge).await, 3);

    // A Command for alice goes to her one connection only.
    let queued_before = bridge.stats.downlink.snapshot().frames_queued;
    let sent = crate::support::command(&alice, "one-copy");
    env.aws
        .send(&env.infra.command_queue_url, &sent.to_string())
        .await;
    assert_eq!(next_json(&mut first).await, sent);
    // The counter moves just after the hand-off the client already saw.
    let stats = bridge.stats.clone();
    wait_until("the hand-off to be counted", || {
        let queued = stats.downlink.snapshot().frames_queued;
        async move { queued > queued_before }
    })
    .await;
    assert_eq!(
        bridge.stats.downlink.snapshot().frames_queued,
        queued_before + 1,
        "one connection, one frame"
    );
    bridge.stop().await;

    // In total: 503.
    let bridge = env.bridge(|s| s.max_connections = 1).await;
    let _only = bridge.connect(&client_id("only")).await;
    assert_refused(
        &bridge.ws_url(&format!("/ws/{}", client_id("late"))),
        &[],
        503,
        "server_at_capacity",
    )
    .await;
    assert_eq!(open_connections(&bridge).await, 1);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_per_address_limit_counts_the_forwarded_address() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            s.max_connections_per_ip = 1;
            s.client_ip_header = Some("X-Forwarded-For".into());
        })
        .await;
    let url = |id: &str| bridge.ws_url(&format!("/ws/{}", client_id(id)));
    // The last entry is the one the proxy appended.
    let (_one, _) =
        assert_upgraded(&url("one"), &[("x-forwarded-for", "10.9.9.9, 203.0.113.5")]).await;
    assert_refused(
        &url("two"),
        &[("x-forwarded-for", "203.0.113.5")],
        429,
        "too_many_connections_from_address",
    )
    .await;
    let (_three, _) = assert_upgraded(&url("three"), &[("x-forwarded-for", "203.0.113.6")]).await;
    assert_eq!(open_connections(&bridge).await, 2);
    bridge.stop().await;
}

// ---------------------------------------------------------------------------
// Message rate, binary frames

async fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match next_frame(ws, PATIENCE).await {
            Some(Next::Text(_)) => {}
            Some(Next::Close(frame)) => return frame.map(|f| f.code),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_messages_are_refused_unpublished_and_abuse_closes_with_1008() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env
        .bridge(|s| {
            s.message_rate_per_sec = 1;
            s.message_burst = 2;
            s.rate_limit_strikes = 3;
        })
        .await;
    // Each connection has its own bucket of 2. Messages are sent back to
    // back: tokens are taken as they are read, long before a second passes.
    let mut polite = bridge.connect(&client_id("polite")).await;
    for n in 0..3 {
        send_text(
            &mut polite,
            &json!({"action": "go", "id": format!("m{n}")}).to_string(),
        )
        .await;
    }
    assert_eq!(next_json(&mut polite).await, json!({"ack": "m0"}));
    assert_eq!(next_json(&mut polite).await, json!({"ack": "m1"}));
    let refused = next_json(&mut polite).await;
    assert_eq!(refused["error"]["code"], "rate_limited", "{refused}");
    assert_eq!(refused["id"], "m2", "{refused}");

    // A flood: 2 pass, the third refusal closes the connection.
    let mut flood = bridge.connect(&client_id("flood")).await;
    for n in 0..10 {
        let text = json!({"action": "go", "id": format!("f{n}")}).to_string();
        if flood.send(Message::text(text)).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut flood).await, Some(CloseCode::Policy));

    let got = env.aws.receive_at_least(&observer.url, 4, PATIENCE).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|m| {
            serde_json::from_str::<Value>(&m.payload()).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["f0", "f1", "m0", "m1"]);
    assert!(env.aws.receive_all(&observer.url, QUIET).await.is_empty());
    // The polite client is still connected and served.
    assert_silent(&mut polite, Duration::from_millis(100)).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_frame_closes_with_1003_and_is_not_published() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    let mut ws = bridge.connect(&client_id("bin")).await;
    ws.send(Message::binary(br#"{"action":"bin"}"#.to_vec()))
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, Some(CloseCode::Unsupported));
    assert!(env.aws.receive_all(&observer.url, QUIET).await.is_empty());
    assert_eq!(bridge.stats.uplink.snapshot().published, 0);
    wait_until("the connection is gone", || {
        let bridge = &bridge;
        async move { open_connections(bridge).await == 0 }
    })
    .await;
    bridge.stop().await;
}

// ---------------------------------------------------------------------------
// Handshake timeout, echo route

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_handshake_is_cut_off() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|s| s.handshake_timeout_ms = 500).await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", bridge.port))
        .await
        .unwrap();
    // Half a request head, then nothing.
    tcp.write_all(b"GET /ws/slow HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the server kept the slow client")
        .unwrap();
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "cut off after {waited:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(open_connections(&bridge).await, 0);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_route_exists_only_when_configured_and_publishes_nothing() {
    let env = Env::new(5).await;
    let observer = env.events_observer().await;
    let bridge = env.bridge(|_| {}).await;
    assert_refused(&bridge.ws_url("/__echo?client_id=e"), &[], 404, "not_found").await;
    bridge.stop().await;

    let bridge = env.bridge(|s| s.echo_route = true).await;
    let (mut ws, _) = assert_upgraded(&bridge.ws_url("/__echo?client_id=echo"), &[]).await;
    send_text(&mut ws, r#"{"action":"not-published","id":"1"}"#).await;
    assert_eq!(
        next_text(&mut ws).await,
        r#"{"action":"not-published","id":"1"}"#
    );
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    match tokio::time::timeout(PATIENCE, ws.next()).await.unwrap() {
        Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], [1u8, 2, 3]),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    assert_silent(&mut ws, Duration::from_millis(300)).await;
    assert!(env.aws.receive_all(&observer.url, QUIET).await.is_empty());
    assert_eq!(bridge.stats.uplink.snapshot().published, 0);
    bridge.stop().await;
}

// ---------------------------------------------------------------------------
// The binary: `wsbridge token`, and no secret in the logs

const BIN: &str = env!("CARGO_BIN_EXE_wsbridge");

fn wsbridge(dir: &TempDir) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("BRIDGE_") || name.starts_with("AWS_") || name == "RUST_LOG" {
            command.env_remove(name.as_ref());
        }
    }
    // Text lines, which the log checks read (a pipe would get JSON).
    command.env("BRIDGE_LOG_FORMAT", "text");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wsbridge_token_mints_a_token_the_bridge_accepts() {
    let dir = TempDir::new("cli-token");
    let mut command = wsbridge(&dir);
    command
        .env("BRIDGE_JWT_SECRET", SECRET)
        .args(["token", "--sub", "client123", "--ttl", "15m"]);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let settings = Settings {
        auth: AuthMode::Jwt,
        jwt_secret: Some(Secret::new(SECRET)),
        ..Settings::default()
    };
    let config = app::config::Config::new(settings).expect("valid settings");
    let verifier =
        adapters_http::auth::JwtVerifier::new(&app::http_adapter::jwt_settings(&config.access.jwt))
            .unwrap();
    assert_eq!(verifier.verify(&token).unwrap().as_str(), "client123");
    let payload: Value =
        serde_json::from_slice(&base64_decode(token.split('.').nth(1).unwrap())).unwrap();
    let ttl = payload["exp"].as_i64().unwrap() - now();
    assert!((890..=900).contains(&ttl), "exp is {ttl} s away");

    // Without a secret: a configuration error naming it, exit 2.
    let mut command = wsbridge(&dir);
    command.args(["token", "--sub", "client123"]);
    let output = tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("jwt_secret"), "{stderr}");
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes() {
        let value = ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        bits = bits << 6 | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_the_secret_never_reach_the_logs_even_at_debug() {
    let env = Env::new(5).await;
    let dir = TempDir::new("cli-no-secrets");
    let mut command = wsbridge(&dir);
    for (name, value) in testkit::moto().env_vars() {
        command.env(name, value);
    }
    command
        .env("RUST_LOG", "debug")
        .env("BRIDGE_PORT", "0")
        .env("BRIDGE_AUTH", "jwt")
        .env("BRIDGE_JWT_SECRET", SECRET)
        .env("BRIDGE_RECEIVE_WAIT_SECS", "1")
        .env("BRIDGE_COMMAND_QUEUE_URL", &env.infra.command_queue_url)
        .env("BRIDGE_EVENTS_TOPIC_ARN", &env.infra.events_topic_arn)
        .arg("serve");
    let mut child = command.spawn().expect("spawning wsbridge serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    let port = loop {
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("wsbridge did not say it serves")
            .unwrap()
            .unwrap_or_else(|| panic!("wsbridge exited:\n{}", log.join("\n")));
        let port = line
            .contains("wsbridge serving")
            .then(|| {
                line.split("port=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u16>()
                    .ok()
            })
            .flatten();
        log.push(line);
        if let Some(port) = port {
            break port;
        }
    };
    let collector = tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line);
        }
        log
    });

    let alice = client_id("alice");
    let good = hs256(&claims(&alice), SECRET);
    let forged = hs256(&claims(&alice), "another-secret-of-the-same-length-000000");
    let expired = hs256(&json!({"sub": alice, "exp": now() - 3600}), SECRET);
    let ws_url = |path: &str| format!("ws://127.0.0.1:{port}{path}");
    // Accepted, from the query string and from the subprotocol, used, closed.
    let (mut ws, _) = assert_upgraded(&ws_url(&format!("/ws?token={good}")), &[]).await;
    send_text(&mut ws, r#"{"action":"logged","id":"1"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "1"}));
    ws.close(None).await.unwrap();
    let offer = format!("bearer, {good}");
    let (ws, _) = assert_upgraded(&ws_url("/ws"), &[("sec-websocket-protocol", &offer)]).await;
    drop(ws);
    // Refused, from each source.
    assert_refused(
        &ws_url(&format!("/ws/{alice}?token={forged}")),
        &[],
        401,
        "invalid_token",
    )
    .await;
    assert_refused(
        &ws_url(&format!("/ws?client_id=other&token={good}")),
        &[],
        403,
        "client_id_mismatch",
    )
    .await;
    let bearer = format!("Bearer {expired}");
    assert_refused(
        &ws_url("/ws"),
        &[("authorization", &bearer)],
        401,
        "invalid_token",
    )
    .await;
    // A plain HTTP request with a token in its query string.
    let _ = reqwest::get(format!("http://127.0.0.1:{port}/ws?token={good}"))
        .await
        .unwrap();

    // Let the sessions log their end before the bridge stops.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    let log = collector.await.unwrap().join("\n");
    assert!(status.success(), "{log}");

    // The run logged at debug: connections and refusals are in there...
    assert!(log.contains("connection opened"), "{log}");
    assert!(log.contains("upgrade refused"), "{log}");
    assert!(log.contains("DEBUG"), "{log}");
    // ...but no token, no signature, no secret.
    for (what, secret) in [
        ("the valid token", good.as_str()),
        ("its signature", good.rsplit('.').next().unwrap()),
        ("the forged token", forged.as_str()),
        ("the expired token", expired.as_str()),
        ("the secret", SECRET),
    ] {
        assert!(!log.contains(secret), "{what} is in the log:\n{log}");
    }
}

// ---------------------------------------------------------------------------
// Token lifecycle (docs/control-plane.md)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_token_expiring_after_the_year_9999_is_refused_and_the_bridge_serves_on() {
    let env = Env::new(5).await;
    let bridge = env.bridge(jwt).await;
    let id = client_id("far-future");
    let url = bridge.ws_url("/ws");
    for exp in [253_402_300_800_u64, 1 << 63, u64::MAX] {
        let token = hs256(&json!({"sub": id, "exp": exp}), SECRET);
        let _ = assert_refused(&format!("{url}?token={token}"), &[], 401, "invalid_token").await;
        // Also as a renewal of an open connection.
        let (mut ws, _) =
            assert_upgraded(&format!("{url}?token={}", hs256(&claims(&id), SECRET)), &[]).await;
        send_text(&mut ws, &json!({"auth": token}).to_string()).await;
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["error"]["code"], "invalid_token", "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("exp")),
            "{reply}"
        );
        send_text(&mut ws, r#"{"action":"a","id":"1"}"#).await;
        assert_eq!(next_json(&mut ws).await, json!({"ack": "1"}));
    }
    assert_eq!(get_status(&bridge.http("/health")).await, 200);
    bridge.stop().await;
}

async fn get_status(url: &str) -> u16 {
    reqwest::get(url).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wsbridge_token_refuses_an_absurd_ttl_with_exit_2() {
    let dir = TempDir::new("cli-token-ttl");
    for ttl in ["18446744073709551615", "367d"] {
        let mut command = wsbridge(&dir);
        command.env("BRIDGE_JWT_SECRET", SECRET).args([
            "token",
            "--sub",
            "client123",
            "--ttl",
            ttl,
        ]);
        let output = tokio::time::timeout(PATIENCE, command.output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{ttl}: {output:?}");
        assert!(
            output.stdout.is_empty(),
            "{ttl}: a token was printed: {output:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--ttl") && stderr.contains("at most 366d"),
            "{ttl}: {stderr}"
        );
    }
}

/// A JWT bridge with no clock-skew allowance, so a token's `exp` is exact.
fn jwt_without_leeway(settings: &mut Settings) {
    jwt(settings);
    settings.jwt_leeway_secs = 0;
}

/// The next close frame within `within`, as (code, reason).
async fn closed_within(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    match next_frame(ws, within).await {
        Some(Next::Close(Some(frame))) => Some((u16::from(frame.code), frame.reason.to_string())),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_when_its_token_expires() {
    let env = Env::new(5).await;
    let bridge = env.bridge(jwt_without_leeway).await;
    let alice = client_id("alice");
    let token = hs256(&json!({"sub": alice, "exp": now() + 2}), SECRET);
    let mut ws = crate::support::connect(&bridge.ws_url(&format!("/ws?token={token}"))).await;
    // Open and served until then.
    send_text(&mut ws, r#"{"action":"a","id":"1"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "1"}));
    let closed = closed_within(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(closed, Some((1008, "token_expired".to_owned())));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_token_for_the_same_client_keeps_the_connection_open() {
    let env = Env::new(5).await;
    let bridge = env.bridge(jwt_without_leeway).await;
    let alice = client_id("alice");
    let token = hs256(&json!({"sub": alice, "exp": now() + 2}), SECRET);
    let mut ws = crate::support::connect(&bridge.ws_url(&format!("/ws?token={token}"))).await;

    // Refused renewals change nothing: another client's token, a forged one.
    let other = hs256(
        &json!({"sub": client_id("mallory"), "exp": now() + 600}),
        SECRET,
    );
    send_text(&mut ws, &json!({"auth": other}).to_string()).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], "invalid_token", "{reply}");
    let forged = hs256(
        &json!({"sub": alice, "exp": now() + 600}),
        "another-secret-of-the-same-length-000000",
    );
    send_text(&mut ws, &json!({"auth": forged}).to_string()).await;
    assert_eq!(next_json(&mut ws).await["error"]["code"], "invalid_token");

    let fresh = hs256(&json!({"sub": alice, "exp": now() + 600}), SECRET);
    send_text(&mut ws, &json!({"auth": fresh}).to_string()).await;
    assert_eq!(next_json(&mut ws).await, json!({"auth": "ok"}));
    // Past the first token's expiry: still open and served.
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_text(&mut ws, r#"{"action":"still-here","id":"2"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "2"}));
    bridge.stop().await;
}

#[tokio::test]
async fn an_auth_frame_without_authentication_is_refused_and_the_connection_stays() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    let mut ws = bridge.connect(&client_id("plain")).await;
    send_text(&mut ws, r#"{"auth":"a.b.c"}"#).await;
    let reply = next_json(&mut ws).await;
    assert_eq!(reply["error"]["code"], "unexpected_auth", "{reply}");
    send_text(&mut ws, r#"{"action":"a","id":"1"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "1"}));
    bridge.stop().await;
}

// ---------------------------------------------------------------------------
// Keys from a JWKS URL (docs/control-plane.md, Token lifecycle)

/// A JWKS endpoint on loopback that serves whatever `document` holds
/// (`None`: HTTP 500), with a long max-age, and counts its requests.
struct JwksServer {
    url: String,
    document: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksServer {
    async fn start(document: Option<String>) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/jwks.json",
            listener.local_addr().unwrap().port()
        );
        let document = std::sync::Arc::new(std::sync::Mutex::new(document));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (doc, count) = (document.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let body = doc.lock().unwrap().clone();
                tokio::spawn(async move {
                    let mut head = vec![0u8; 4096];
                    let _ = socket.read(&mut head).await;
                    let answer = match body {
                        Some(body) => format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             cache-control: public, max-age=3600\r\ncontent-length: {}\r\n\
                             connection: close\r\n\r\n{body}",
                            body.len()
                        ),
                        None => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\
                                 connection: close\r\n\r\n"
                            .to_owned(),
                    };
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        Self {
            url,
            document,
            requests,
        }
    }

    fn serve(&self, document: Option<String>) {
        *self.document.lock().unwrap() = document;
    }

    fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The fixture JWKS with only the keys named.
fn jwks_with(kids: &[&str]) -> String {
    let all: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).unwrap()).unwrap();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap_or_default()))
        .cloned()
        .collect();
    json!({ "keys": keys }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_jwks_url_are_fetched_again_for_a_rotated_in_kid() {
    let jwks = JwksServer::start(Some(jwks_with(&["test-key"]))).await;
    let env = Env::new(5).await;
    let url = jwks.url.clone();
    let bridge = env
        .bridge(|s| {
            jwt(s);
            s.jwt_secret = None;
            s.jwt_jwks_url = Some(url);
        })
        .await;
    assert_eq!(jwks.requests(), 1, "fetched once at start");
    let id = client_id("rotated");
    let ws_url = bridge.ws_url("/ws");
    let with = |token: &str| format!("{ws_url}?token={token}");
    let current = rs256(&claims(&id), "rsa-private.pem", Some("test-key"));
    let (_a, _) = assert_upgraded(&with(&current), &[]).await;
    assert_eq!(jwks.requests(), 1, "a known kid needs no fetch");

    // The identity provider rotates a key in: the first token naming it
    // makes the bridge fetch the set again, and is accepted.
    jwks.serve(Some(jwks_with(&["test-key", "other-key"])));
    let rotated = rs256(&claims(&id), "other-rsa-private.pem", Some("other-key"));
    let (_b, _) = assert_upgraded(&with(&rotated), &[]).await;
    assert_eq!(jwks.requests(), 2);

    // Forged kids cannot make it hammer the provider: within the minimum
    // interval no fetch goes out (the token is judged by the keys known:
    // here it verifies under other-key, which signed it), and the keys it
    // knows keep working while the provider fails.
    jwks.serve(None);
    let unknown = rs256(&claims(&id), "other-rsa-private.pem", Some("no-such-key"));
    for _ in 0..3 {
        let _ = assert_upgraded(&with(&unknown), &[]).await;
    }
    assert_eq!(jwks.requests(), 2, "rate-limited");
    let (_c, _) = assert_upgraded(&with(&current), &[]).await;
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_with_a_rotated_in_kid_fetches_the_jwks_again_and_is_accepted() {
    let jwks = JwksServer::start(Some(jwks_with(&["test-key"]))).await;
    let env = Env::new(5).await;
    let url = jwks.url.clone();
    let bridge = env
        .bridge(|s| {
            jwt(s);
            s.jwt_secret = None;
            s.jwt_jwks_url = Some(url);
        })
        .await;
    assert_eq!(jwks.requests(), 1, "fetched once at start");
    let id = client_id("renewing");
    let current = rs256(&claims(&id), "rsa-private.pem", Some("test-key"));
    let (mut ws, _) =
        assert_upgraded(&format!("{}?token={current}", bridge.ws_url("/ws")), &[]).await;

    // The identity provider rotates a key in (the set's max-age is an
    // hour): the renewal naming it has the bridge fetch the set at once.
    jwks.serve(Some(jwks_with(&["test-key", "other-key"])));
    let rotated = rs256(&claims(&id), "other-rsa-private.pem", Some("other-key"));
    send_text(&mut ws, &json!({"auth": rotated}).to_string()).await;
    assert_eq!(next_json(&mut ws).await, json!({"auth": "ok"}));
    assert_eq!(jwks.requests(), 2);

    // Rate-limited like the upgrade path: forged kids fetch nothing more.
    let forged = rs256(&claims(&id), "other-rsa-private.pem", Some("no-such-key"));
    for _ in 0..3 {
        send_text(&mut ws, &json!({"auth": forged}).to_string()).await;
        let _ = next_json(&mut ws).await;
    }
    assert_eq!(jwks.requests(), 2, "rate-limited");
    send_text(&mut ws, r#"{"action":"a","id":"1"}"#).await;
    assert_eq!(next_json(&mut ws).await, json!({"ack": "1"}));
    bridge.stop().await;
}

#[tokio::test]
async fn a_jwks_url_that_cannot_be_fetched_at_start_stops_the_bridge_naming_it() {
    let jwks = JwksServer::start(None).await;
    let env = Env::new(5).await;
    let mut settings = env.settings();
    jwt(&mut settings);
    settings.jwt_secret = None;
    settings.jwt_jwks_url = Some(jwks.url.clone());
    let error = match app::startup::Application::build(
        app::config::Config::new(settings).unwrap(),
        adapters_aws::sdk::Clients::from_config(&env.aws.config),
    )
    .await
    {
        Ok(_) => panic!("the bridge started without its keys"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        error.contains("jwt_jwks_url") && error.contains("500"),
        "{error}"
    );
}
