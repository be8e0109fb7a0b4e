//! Authentication of WebSocket upgrades (docs/security.md).
//!
//! `auth = "none"` (development): the client id is the one in the URL.
//! `auth = "jwt"`: the request carries a signed JWT — HS256 with the shared
//! `jwt_secret`, or RS256 with the public key(s) of `jwt_public_key_file`
//! (PEM, or a JWKS document) — and the client id is its `sub` claim. `exp` is
//! required; `aud` and `iss` are checked when configured; `nbf` when present.
//! Only the configured algorithm is accepted (never `none`, never HS256
//! against an RSA key).
//!
//! The token is read, in this order, from `Authorization: Bearer <token>`,
//! from `Sec-WebSocket-Protocol: bearer, <token>` (what a browser can send;
//! the server then answers with the `bearer` subprotocol) and from the
//! `token` query parameter. A token is never logged: failures are logged by
//! reason only.
//!
//! A connection lasts until the token's `exp` plus the leeway. An `exp` after
//! [`MAX_EXP`] (the year 9999) is refused as out of range rather than capped:
//! it is no real expiry, and one near 2^63 s would not fit a time at all.
//!
//! Files: `verifier.rs` (the keys and the check of a token), `keys.rs`
//! (reading RS256 keys), `jwks.rs` (keys from a JWKS URL), `crypto.rs` (the
//! ring provider under `jsonwebtoken`), `mint.rs` (development tokens).

pub mod crypto;
pub mod jwks;
mod keys;
mod mint;
mod verifier;

use std::sync::Arc;
use std::time::SystemTime;

use actix_web::http::header::{HeaderMap, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use domain::ClientId;

pub use mint::mint;
pub use verifier::JwtVerifier;

use crate::settings::{JwtSettings, SettingError};

/// The subprotocol a browser offers, followed by the token, to authenticate:
/// `new WebSocket(url, ["bearer", token])`.
pub const BEARER_PROTOCOL: &str = "bearer";

/// The latest `exp` accepted: 9999-12-31T23:59:59Z, the last second a
/// four-digit year writes (and far inside what a `SystemTime` or an
/// `Instant` can hold).
pub const MAX_EXP: u64 = 253_402_300_799;

/// How upgrades are authenticated.
pub enum Authenticator {
    /// The URL names the client; nothing is checked.
    None,
    /// A JWT names the client.
    Jwt(Arc<JwtVerifier>),
}

/// Where a request's token was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer`.
    AuthorizationHeader,
    /// `Sec-WebSocket-Protocol: bearer, <token>`.
    Subprotocol,
    /// `?token=`.
    QueryParameter,
}

/// A verified token's client.
#[derive(Clone)]
pub struct Authenticated {
    /// The `sub` claim.
    pub client_id: ClientId,
    /// Where the token was.
    pub source: TokenSource,
    /// `exp` plus the leeway: when the connection must be closed unless the
    /// client sends a fresh token.
    pub valid_until: SystemTime,
    /// What checks the fresh tokens.
    pub renewer: Arc<JwtVerifier>,
}

/// Why a request is not authenticated (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token anywhere.
    #[error("a token is required: Authorization: Bearer <token>, Sec-WebSocket-Protocol: bearer, <token>, or ?token=<token>")]
    Missing,
    /// A token that does not verify; the text says why, never what it held.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

impl AuthError {
    /// The machine-readable code of the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Invalid(_) => "invalid_token",
        }
    }
}

impl Authenticator {
    /// The authenticator `jwt` asks for (`None`: `auth = "none"`); a key
    /// that cannot be read is a [`SettingError`] naming its setting.
    pub fn new(jwt: Option<&JwtSettings>) -> Result<Self, SettingError> {
        match jwt {
            None => Ok(Self::None),
            Some(jwt) => JwtVerifier::new(jwt).map(|v| Self::Jwt(Arc::new(v))),
        }
    }

    /// With keys from a JWKS URL: fetches them, and keeps them fresh.
    pub async fn start(&self) -> Result<(), String> {
        match self {
            Self::Jwt(verifier) => verifier.start().await,
            Self::None => Ok(()),
        }
    }

    /// Before a request is authenticated: when its token names a key id
    /// the JWKS does not hold, fetches the JWKS again (rate-limited).
    pub async fn refresh_for(&self, headers: &HeaderMap, query_token: Option<&str>) {
        if let (Self::Jwt(verifier), Some((token, _))) = (self, find_token(headers, query_token)) {
            verifier.refresh_for(token).await;
        }
    }

    /// Authenticates a request by its headers and `?token=`; `Ok(None)` when
    /// authentication is off.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Option<Authenticated>, AuthError> {
        let Self::Jwt(verifier) = self else {
            return Ok(None);
        };
        let (token, source) = find_token(headers, query_token).ok_or(AuthError::Missing)?;
        let (client_id, valid_until) = verifier.verify_until(token)?;
        Ok(Some(Authenticated {
            client_id,
            source,
            valid_until,
            renewer: verifier.clone(),
        }))
    }
}

/// The token a request carries, and where it was.
pub fn find_token<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Option<(&'a str, TokenSource)> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty());
    if let Some(token) = bearer {
        return Some((token, TokenSource::AuthorizationHeader));
    }
    if let Some(token) = subprotocol_token(headers) {
        return Some((token, TokenSource::Subprotocol));
    }
    query_token
        .filter(|t| !t.is_empty())
        .map(|t| (t, TokenSource::QueryParameter))
}

/// The entry after `bearer` in `Sec-WebSocket-Protocol`.
fn subprotocol_token(headers: &HeaderMap) -> Option<&str> {
    let mut offered = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    offered.find(|p| p.eq_ignore_ascii_case(BEARER_PROTOCOL))?;
    offered.next().filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_token_is_found_in_header_then_subprotocol_then_query() {
        let all = headers(&[
            ("authorization", "Bearer h.h.h"),
            ("sec-websocket-protocol", "bearer, p.p.p"),
        ]);
        assert_eq!(
            find_token(&all, Some("q.q.q")),
            Some(("h.h.h", TokenSource::AuthorizationHeader))
        );
        let protocol = headers(&[("sec-websocket-protocol", "chat, Bearer,p.p.p")]);
        assert_eq!(
            find_token(&protocol, Some("q.q.q")),
            Some(("p.p.p", TokenSource::Subprotocol))
        );
        let other_scheme = headers(&[("authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(
            find_token(&other_scheme, Some("q.q.q")),
            Some(("q.q.q", TokenSource::QueryParameter))
        );
        assert_eq!(find_token(&other_scheme, None), None);
        assert_eq!(find_token(&HeaderMap::new(), Some("")), None);
        let bearer_only = headers(&[("sec-websocket-protocol", "bearer")]);
        assert_eq!(find_token(&bearer_only, None), None);
    }
}
