//! `wsbridge admin …`: the admin API from the command line. Calls
//! `http://127.0.0.1:<admin_port>` (or `--url`) with the configured
//! `admin_token` (BRIDGE_ADMIN_TOKEN) and prints the JSON answer; exit 1
//! when the API refuses (the answer's error on stderr).

use bytes::Bytes;
use clap::Subcommand;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::Failure;
use crate::config::{Config, ENV_PREFIX};

/// What to ask the admin API.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// List the client ids connected, with their connection counts.
    ///
    /// Example: wsbridge admin list --limit 50
    List {
        /// Start after this client id (the previous page's `next`).
        #[arg(long)]
        after: Option<String>,
        /// Most client ids to list (1..=1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one client's connections.
    ///
    /// Example: wsbridge admin show client123
    Show {
        /// The client id.
        client_id: String,
    },
    /// Close a client's connections (or one) with a code and reason.
    ///
    /// Example: wsbridge admin disconnect client123 --code 4000 --reason "session revoked"
    Disconnect {
        /// The client id.
        client_id: String,
        /// Close code: 1000 or 3000-4999.
        #[arg(long, default_value_t = 1000)]
        code: u16,
        /// Close reason (at most 123 bytes).
        #[arg(long, default_value = "")]
        reason: String,
        /// Only this connection.
        #[arg(long)]
        connection_id: Option<String>,
        /// Publish the order to the bus at once (every replica that holds
        /// the client carries it out), instead of acting here first.
        #[arg(long)]
        via_bus: bool,
    },
    /// Write a JSON frame to a client's connections, as it is.
    ///
    /// Example: wsbridge admin send client123 '{"notice": "maintenance at 02:00"}'
    Send {
        /// The client id.
        client_id: String,
        /// The frame (JSON).
        frame: String,
        /// Publish it to the bus at once (every replica that holds the
        /// client writes it), instead of writing it here first.
        #[arg(long)]
        via_bus: bool,
    },
}

/// The query that sends an order to the bus at once, when asked.
fn via(bus: bool) -> &'static str {
    if bus {
        "?via=bus"
    } else {
        ""
    }
}

/// Calls the admin API; prints its answer.
pub(crate) async fn run(
    config: &Config,
    url: Option<&str>,
    command: AdminCommand,
) -> Result<(), Failure> {
    let token = match &config.server.admin {
        Some(admin) => admin.token.expose().to_owned(),
        None => std::env::var(format!("{ENV_PREFIX}ADMIN_TOKEN")).map_err(|_| {
            Failure::Usage(format!(
                "admin_token: not set ({ENV_PREFIX}ADMIN_TOKEN): the admin API needs it"
            ))
        })?,
    };
    let base = match url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => match &config.server.admin {
            Some(admin) => format!("http://127.0.0.1:{}", admin.port),
            None => {
                return Err(Failure::Usage(format!(
                    "admin_port: not set ({ENV_PREFIX}ADMIN_PORT), and no --url"
                )))
            }
        },
    };
    let (method, path, body) = match command {
        AdminCommand::List { after, limit } => {
            let mut path = format!("/admin/clients?limit={limit}");
            if let Some(after) = after {
                path.push_str(&format!("&after={after}"));
            }
            (Method::GET, path, None)
        }
        AdminCommand::Show { client_id } => {
            (Method::GET, format!("/admin/clients/{client_id}"), None)
        }
        AdminCommand::Disconnect {
            client_id,
            code,
            reason,
            connection_id,
            via_bus,
        } => (
            Method::POST,
            format!("/admin/clients/{client_id}/disconnect{}", via(via_bus)),
            Some(
                json!({"code": code, "reason": reason, "connection_id": connection_id}).to_string(),
            ),
        ),
        AdminCommand::Send {
            client_id,
            frame,
            via_bus,
        } => {
            serde_json::from_str::<Value>(&frame)
                .map_err(|e| Failure::Usage(format!("the frame is not JSON: {e}")))?;
            (
                Method::POST,
                format!("/admin/clients/{client_id}/send{}", via(via_bus)),
                Some(frame),
            )
        }
    };
    let (status, answer) = call(&base, method, &path, &token, body)
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("admin API at {base}: {e}")))?;
    if status.is_success() {
        println!("{answer}");
        Ok(())
    } else {
        Err(Failure::Runtime(anyhow::anyhow!(
            "admin API answered {status}: {answer}"
        )))
    }
}

async fn call(
    base: &str,
    method: Method,
    path: &str,
    token: &str,
    body: Option<String>,
) -> Result<(StatusCode, String), String> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .map_err(|e| format!("TLS roots: {e}"))?
        .https_or_http()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let request = Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
