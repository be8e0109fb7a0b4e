//! The settings the HTTP surface is given, typed: the app loads and
//! validates the configuration (docs/configuration.md, docs/security.md)
//! and hands over these plain structs.

use std::path::PathBuf;

use actix_web::http::header::HeaderName;
use secrecy::SecretString;

/// Who may open a WebSocket.
#[derive(Debug, Clone, Default)]
pub struct AccessSettings {
    /// `auth = "jwt"`: the keys and claims tokens are checked with; `None`:
    /// the URL names the client (`auth = "none"`).
    pub jwt: Option<JwtSettings>,
    /// Normalized allowed origins ([`normalize_origin`]); empty: any.
    pub allowed_origins: Vec<String>,
    /// The header naming the client's address behind a trusted proxy.
    pub client_ip_header: Option<HeaderName>,
    /// Whether the test-only `/__echo` route answers (`echo_route`; only in
    /// a build with the `test-routes` feature).
    pub echo_route: bool,
}

/// JWT verification: exactly one key source (a secret, a public key file,
/// or a JWKS URL) and the claims required.
#[derive(Debug, Clone, Default)]
pub struct JwtSettings {
    /// HS256 secret (`jwt_secret`).
    pub secret: Option<SecretString>,
    /// RS256 public key file, PEM or JWKS (`jwt_public_key_file`).
    pub public_key_file: Option<PathBuf>,
    /// RS256 keys from a JWKS URL (`jwt_jwks_url`).
    pub jwks_url: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

/// A setting the HTTP surface cannot work with (a key file that is not a
/// key): its name and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct SettingError {
    /// The setting's name (`jwt_public_key_file`).
    pub setting: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl SettingError {
    /// `problem` with `setting`.
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        Self {
            setting,
            problem: problem.into(),
        }
    }
}

/// `origin` as browsers send it (`scheme://host[:port]`, lower case, no
/// trailing slash), or `None` when it is not an origin.
pub fn normalize_origin(origin: &str) -> Option<String> {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = origin.split_once("://")?;
    let valid_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    let valid_rest = !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' ', ','])
        && !rest.starts_with(':');
    (valid_scheme && valid_rest).then_some(origin)
}
