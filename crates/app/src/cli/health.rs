//! `wsbridge health`: GET a bridge's `/health` (or any plain-HTTP URL) and
//! exit 0 on 200, 1 on anything else, saying what it got — the container's
//! `HEALTHCHECK`, with no curl in the image. A few lines of HTTP/1.1 over a
//! TCP stream: the probe needs the status line and nothing else.

use std::time::Duration;

use anyhow::anyhow;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Failure;
use crate::config::Server;

/// The most of an answer read: the status line, the headers and the start
/// of the body (a `/ready` refusal says why in it).
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// The most of the body quoted in a failure.
const MAX_QUOTED_BODY: usize = 200;

/// `http://HOST:PORT/health` for the configured listener: on loopback when
/// the bridge listens on every interface, else on the address it listens on.
pub(crate) fn default_url(server: &Server) -> String {
    let host = match server.host.trim() {
        "" | "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" | "[::]" => "[::1]".to_owned(),
        ipv6 if ipv6.contains(':') && !ipv6.starts_with('[') => format!("[{ipv6}]"),
        host => host.to_owned(),
    };
    format!("http://{host}:{}/health", server.port)
}

/// GETs `url`; prints one line and succeeds on 200, fails (exit 1) naming
/// what came back otherwise, or (exit 2) when `url` is not a plain-HTTP URL.
pub(crate) async fn run(url: &str, timeout: Duration) -> Result<(), Failure> {
    let target = Target::parse(url).map_err(Failure::Usage)?;
    let answer = tokio::time::timeout(timeout, get(&target))
        .await
        .map_err(|_| {
            Failure::Runtime(anyhow!(
                "unhealthy: no answer from {url} within {} s",
                timeout.as_secs()
            ))
        })?
        .map_err(|e| Failure::Runtime(anyhow!("unhealthy: {url}: {e}")))?;
    if answer.status == 200 {
        println!("healthy: {url} answered {}", answer.status_line);
        return Ok(());
    }
    let body = if answer.body.is_empty() {
        String::new()
    } else {
        format!(": {}", answer.body)
    };
    Err(Failure::Runtime(anyhow!(
        "unhealthy: {url} answered {}{body}",
        answer.status_line
    )))
}

/// Where a URL points: what to connect to, the `Host` header, the path.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port`, as `TcpStream::connect` takes it.
    address: String,
    /// The authority as given, for the `Host` header.
    authority: String,
    /// The path and query, `/` at least.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("--url {url:?}: a plain http:// URL, e.g. http://127.0.0.1:8000/health")
        })?;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let path = path.split('#').next().unwrap_or_default();
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        if authority.is_empty() || authority.contains(['@', ' ']) {
            return Err(format!(
                "--url {url:?}: no host, or not a plain host[:port]"
            ));
        }
        let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        });
        let address = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Self {
            address,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// What came back.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// `200 OK`, `503 Service Unavailable`.
    status_line: String,
    /// The start of the body, on one line.
    body: String,
}

async fn get(target: &Target) -> Result<Answer, String> {
    let mut stream = TcpStream::connect(&target.address)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.address))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: wsbridge-health\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n",
        target.path, target.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.len() < MAX_ANSWER_BYTES {
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    parse_answer(&answer)
}

fn parse_answer(bytes: &[u8]) -> Result<Answer, String> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let not_http = || {
        let quoted: String = first.chars().take(80).collect();
        format!("not an HTTP answer: {quoted:?}")
    };
    let (version, status_line) = first.split_once(' ').ok_or_else(not_http)?;
    if !version.starts_with("HTTP/") {
        return Err(not_http());
    }
    let status: u16 = status_line
        .split(' ')
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(not_http)?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = if chunked {
        String::new()
    } else {
        let one_line: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        one_line.chars().take(MAX_QUOTED_BODY).collect()
    };
    Ok(Answer {
        status,
        status_line: status_line.trim().to_owned(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, port: u16) -> Server {
        Server {
            host: host.to_owned(),
            port,
            workers: 0,
            handshake_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            echo_route: false,
            admin: None,
        }
    }

    #[test]
    fn the_default_url_reaches_the_configured_listener() {
        for (host, url) in [
            ("0.0.0.0", "http://127.0.0.1:8000/health"),
            ("127.0.0.1", "http://127.0.0.1:8000/health"),
            ("10.0.0.5", "http://10.0.0.5:8000/health"),
            ("::", "http://[::1]:8000/health"),
            ("::1", "http://[::1]:8000/health"),
            ("localhost", "http://localhost:8000/health"),
        ] {
            assert_eq!(default_url(&server(host, 8000)), url, "{host}");
        }
    }

    #[test]
    fn urls_give_the_address_the_host_header_and_the_path() {
        let parsed = |url: &str| Target::parse(url).unwrap();
        assert_eq!(
            parsed("http://127.0.0.1:8000/health"),
            Target {
                address: "127.0.0.1:8000".into(),
                authority: "127.0.0.1:8000".into(),
                path: "/health".into(),
            }
        );
        assert_eq!(parsed("http://example.test").address, "example.test:80");
        assert_eq!(parsed("http://example.test").path, "/");
        assert_eq!(parsed("http://[::1]:9/ready?x=1#f").address, "[::1]:9");
        assert_eq!(parsed("http://[::1]:9/ready?x=1#f").path, "/ready?x=1");
        assert_eq!(parsed("http://[::1]").address, "[::1]:80");
        assert_eq!(parsed("http://h:1?q").path, "/?q");
        for bad in [
            "https://h/health",
            "127.0.0.1:8000",
            "http://",
            "http://u@h/",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_give_the_status_and_the_start_of_the_body() {
        let ok = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\n{\"status\":\"ok\"}")
            .unwrap();
        assert_eq!((ok.status, ok.status_line.as_str()), (200, "200 OK"));
        let refused = parse_answer(
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 9\r\n\r\n{\"a\":\n1}",
        )
        .unwrap();
        assert_eq!(refused.status, 503);
        assert_eq!(refused.status_line, "503 Service Unavailable");
        assert_eq!(refused.body, "{\"a\": 1}");
        let chunked = parse_answer(
            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((chunked.status, chunked.body.as_str()), (500, ""));
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n").is_err());
        assert!(parse_answer(b"").is_err());
    }
}
