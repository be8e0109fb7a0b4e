//! Keys from a JWKS URL (`jwt_jwks_url`, docs/control-plane.md): fetched when the bridge
//! starts, fetched again when the answer's `Cache-Control: max-age` runs
//! out (bounded to [`MIN_MAX_AGE`]..[`MAX_MAX_AGE`]), and at once when a
//! token names a key id the set does not have — at most once per
//! [`MIN_REFRESH`], so forged kids cannot make the bridge hammer its
//! identity provider. A refresh that fails keeps the keys already known.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Refresh interval when the answer has no usable max-age.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// Shortest refresh interval, whatever the answer says.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// Longest refresh interval, whatever the answer says.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Fewest seconds between two fetches asked for by unknown key ids.
pub const MIN_REFRESH: Duration = Duration::from_secs(30);
/// Longest one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS document accepted.
const MAX_BYTES: usize = 1024 * 1024;

/// Where the keys come from.
pub struct JwksUrl {
    uri: Uri,
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// When an unknown key id last made it fetch out of turn.
    last_forced: Mutex<Option<Instant>>,
}

impl JwksUrl {
    /// A source for `url` (`https://`, or `http://` on a loopback host).
    pub fn new(url: &str) -> Result<Self, String> {
        let uri = check_url(url)?;
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .map_err(|e| format!("TLS roots: {e}"))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self {
            uri,
            client: Client::builder(TokioExecutor::new()).build(https),
            last_forced: Mutex::new(None),
        })
    }

    /// Fetches the document: its text, and how long it may be kept.
    pub async fn fetch(&self) -> Result<(String, Duration), String> {
        let request = http::Request::get(self.uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let answer = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("GET {}: {e}", self.uri))?;
            let status = response.status();
            let max_age = max_age(
                response
                    .headers()
                    .get(http::header::CACHE_CONTROL)
                    .and_then(|v| v.to_str().ok()),
            );
            let body = http_body_util::Limited::new(response.into_body(), MAX_BYTES)
                .collect()
                .await
                .map_err(|e| format!("GET {}: {e}", self.uri))?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("GET {}: HTTP {status}", self.uri));
            }
            let text = String::from_utf8(body.to_vec())
                .map_err(|_| format!("GET {}: the answer is not UTF-8", self.uri))?;
            Ok((text, max_age))
        };
        tokio::time::timeout(FETCH_TIMEOUT, answer)
            .await
            .map_err(|_| format!("GET {}: no answer within {FETCH_TIMEOUT:?}", self.uri))?
    }

    /// Whether a fetch for an unknown key id may go out now; if so, the
    /// next one may only after [`MIN_REFRESH`].
    pub fn claim_forced_refresh(&self) -> bool {
        let mut last = self.last_forced.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// The URL, for logs.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// `url` parsed, when it is `https`, or `http` to a loopback host (tests,
/// a sidecar).
pub fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => Ok(uri),
        Some("http") if matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") => Ok(uri),
        _ => Err(format!(
            "{url:?} must be an https:// URL (http:// only to a loopback host)"
        )),
    }
}

/// How long a document may be kept, from its `Cache-Control`.
fn max_age(cache_control: Option<&str>) -> Duration {
    cache_control
        .into_iter()
        .flat_map(|v| v.split(','))
        .filter_map(|directive| directive.trim().strip_prefix("max-age="))
        .find_map(|secs| secs.trim().parse::<u64>().ok())
        .map_or(DEFAULT_MAX_AGE, |secs| {
            Duration::from_secs(secs).clamp(MIN_MAX_AGE, MAX_MAX_AGE)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_and_bounded() {
        assert_eq!(max_age(None), DEFAULT_MAX_AGE);
        assert_eq!(
            max_age(Some("public, max-age=600")),
            Duration::from_secs(600)
        );
        assert_eq!(max_age(Some("max-age=5")), MIN_MAX_AGE);
        assert_eq!(max_age(Some("max-age=9999999")), MAX_MAX_AGE);
        assert_eq!(max_age(Some("no-cache")), DEFAULT_MAX_AGE);
    }

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        let ok = |u: &str| check_url(u).is_ok();
        assert!(ok("https://idp.example/.well-known/jwks.json"));
        assert!(ok("http://127.0.0.1:8080/jwks"));
        assert!(ok("http://localhost/jwks"));
        assert!(!ok("http://idp.example/jwks"));
        assert!(!ok("ftp://idp.example/jwks"));
    }
}
