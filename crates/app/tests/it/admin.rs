//! The admin API (docs/control-plane.md): off by default, never without its token; with
//! it, an operator lists the clients connected here (paginated), sees one
//! client's connections, closes them with a code and reason, and writes a
//! frame to a client directly.

use std::time::Duration;

use app::config::Secret;
use serde_json::{json, Value};

use crate::support::{
    client_id, connect, expect_close, next_frame, next_json, Env, Next, PATIENCE,
};

/// A port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) const TOKEN: &str = "admin-token-0123456789-abcdefghijklmnop";

/// A call to the admin API: (status, JSON body).
pub(crate) async fn call(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_inspects_messages_and_disconnects_clients() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            s.admin_port = free_port();
            s.admin_token = Some(Secret::new(TOKEN));
        })
        .await;
    let port = bridge.admin_port.expect("the admin API is on");
    let (alice, bob) = (client_id("a-alice"), client_id("b-bob"));
    let mut alice1 = bridge.connect(&alice).await;
    let mut alice2 = connect(&bridge.ws_url(&format!("/ws/{alice}?ack=true"))).await;
    let mut bob1 = bridge.connect(&bob).await;

    // Without the token, or with another: 401, nothing done.
    assert_eq!(call(port, "GET", "/admin/clients", None, None).await.0, 401);
    assert_eq!(
        call(port, "GET", "/admin/clients", Some("wrong"), None)
            .await
            .0,
        401
    );
    let (status, _) = call(
        port,
        "POST",
        &format!("/admin/clients/{bob}/disconnect"),
        Some("wrong"),
        None,
    )
    .await;
    assert_eq!(status, 401);

    // Listing, one page at a time.
    let (status, page) = call(port, "GET", "/admin/clients?limit=1", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["clients"],
        json!([{"client_id": alice, "connections": 2}])
    );
    let next = page["next"].as_str().expect("a cursor").to_owned();
    let (_, page) = call(
        port,
        "GET",
        &format!("/admin/clients?limit=1&after={next}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        page["clients"],
        json!([{"client_id": bob, "connections": 1}])
    );
    assert_eq!(page["next"], Value::Null);

    // One client's connections.
    let (status, shown) = call(
        port,
        "GET",
        &format!("/admin/clients/{alice}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    let connections = shown["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 2, "{shown}");
    let modes: Vec<_> = connections.iter().map(|c| c["ack_mode"].clone()).collect();
    assert!(
        modes.contains(&json!(true)) && modes.contains(&json!(false)),
        "{shown}"
    );
    assert!(
        connections
            .iter()
            .all(|c| c["remote_address"] == "127.0.0.1"),
        "{shown}"
    );
    assert_eq!(
        call(port, "GET", "/admin/clients/nobody-here", Some(TOKEN), None)
            .await
            .0,
        404
    );

    // A frame straight to a client's sockets.
    let frame = json!({"notice": "maintenance at 02:00"});
    let (status, sent) = call(
        port,
        "POST",
        &format!("/admin/clients/{alice}/send"),
        Some(TOKEN),
        Some(frame.clone()),
    )
    .await;
    assert_eq!((status, sent), (200, json!({"sent": 2})));
    assert_eq!(next_json(&mut alice1).await, frame);
    assert_eq!(next_json(&mut alice2).await, frame);

    // Bad orders are refused.
    let (status, _) = call(
        port,
        "POST",
        &format!("/admin/clients/{bob}/disconnect"),
        Some(TOKEN),
        Some(json!({"code": 1006})),
    )
    .await;
    assert_eq!(status, 400);

    // One connection, then the whole client, with the code and reason asked.
    let alice1_id = connections
        .iter()
        .find(|c| c["ack_mode"] == json!(false))
        .map(|c| c["connection_id"].as_str().unwrap().to_owned())
        .unwrap();
    let (status, done) = call(
        port,
        "POST",
        &format!("/admin/clients/{alice}/disconnect"),
        Some(TOKEN),
        Some(json!({"code": 4001, "reason": "session revoked", "connection_id": alice1_id})),
    )
    .await;
    assert_eq!((status, done), (200, json!({"disconnected": 1})));
    expect_close(&mut alice1, 4001, "session revoked").await;
    let (status, _) = call(
        port,
        "POST",
        &format!("/admin/clients/{bob}/disconnect"),
        Some(TOKEN),
        Some(json!({"code": 4000, "reason": "bye"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        matches!(next_frame(&mut bob1, PATIENCE).await, Some(Next::Close(Some(c))) if u16::from(c.code) == 4000)
    );
    // The send and the two disconnects; refused orders are not counted.
    assert_eq!(bridge.stats.control.snapshot().admin_here, 3);
    // alice2 was not touched.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, page) = call(port, "GET", "/admin/clients", Some(TOKEN), None).await;
    assert_eq!(
        page["clients"],
        json!([{"client_id": alice, "connections": 1}])
    );
    bridge.stop().await;
}

#[tokio::test]
async fn the_admin_api_is_off_by_default_and_never_without_a_token() {
    let env = Env::new(5).await;
    let bridge = env.bridge(|_| {}).await;
    assert_eq!(bridge.admin_port, None);
    bridge.stop().await;

    let mut settings = env.settings();
    settings.admin_port = free_port();
    let error = app::config::Config::new(settings).expect_err("an admin port without a token");
    assert!(error.to_string().contains("admin_token"), "{error}");
}

/// `wsbridge admin …` against `port` with `token`: (exit code, stdout, stderr).
pub(crate) async fn admin_cli(port: u16, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(crate::cli::BIN)
        .arg("admin")
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(args)
        .env("BRIDGE_ADMIN_TOKEN", token)
        .env_remove("BRIDGE_ADMIN_PORT")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_subcommands_call_the_api() {
    let env = Env::new(5).await;
    let bridge = env
        .bridge(|s| {
            s.admin_port = free_port();
            s.admin_token = Some(Secret::new(TOKEN));
        })
        .await;
    let port = bridge.admin_port.unwrap();
    let dave = client_id("dave");
    let mut ws = bridge.connect(&dave).await;

    let (code, out, err) = admin_cli(port, TOKEN, &["list"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        listed["clients"],
        json!([{"client_id": dave, "connections": 1}])
    );

    let (code, _, err) = admin_cli(port, TOKEN, &["send", &dave, r#"{"hello": "dave"}"#]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(next_json(&mut ws).await, json!({"hello": "dave"}));

    let (code, out, _) = admin_cli(
        port,
        TOKEN,
        &["disconnect", &dave, "--code", "4003", "--reason", "cli"],
    )
    .await;
    assert_eq!((code, out.trim()), (0, r#"{"disconnected":1}"#));
    assert!(
        matches!(next_frame(&mut ws, PATIENCE).await, Some(Next::Close(Some(c))) if u16::from(c.code) == 4003)
    );

    // A wrong token: exit 1, the API's refusal on stderr.
    let (code, _, err) = admin_cli(port, "not-the-token", &["list"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");
    bridge.stop().await;
}
