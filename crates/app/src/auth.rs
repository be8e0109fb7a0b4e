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

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{HeaderMap, AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use adapters_ws::{Renewal, TokenRenewer};
use domain::ClientId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::config::{Access, AuthMode, ConfigError, Jwt, Secret};
use crate::jwks::{self, JwksUrl};
use crate::jwt_crypto;

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

impl TokenRenewer for JwtVerifier {
    /// Like an upgrade: a token naming a key id the JWKS does not hold has
    /// the set fetched again first (rate-limited), so a renewal right after
    /// the identity provider rotated a key in is not refused.
    fn renew<'a>(&'a self, client_id: &'a ClientId, token: &'a str) -> Renewal<'a> {
        Box::pin(async move {
            self.refresh_for(token).await;
            let (sub, until) = self.verify_until(token).map_err(|e| e.to_string())?;
            if &sub != client_id {
                return Err("the token is for another client id".into());
            }
            Ok(until)
        })
    }
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

    /// The authenticator `access` asks for; a key that cannot be read is
    /// a [`ConfigError`] naming `jwt_public_key_file`.
    pub fn new(access: &Access) -> Result<Self, ConfigError> {
        match access.auth {
            AuthMode::None => Ok(Self::None),
            AuthMode::Jwt => JwtVerifier::new(&access.jwt).map(|v| Self::Jwt(Arc::new(v))),
        }
    }
}

/// A verifier of the configured JWTs.
pub struct JwtVerifier {
    /// The keys tokens may be signed with (replaced when a JWKS URL is
    /// fetched again).
    keys: RwLock<Arc<Vec<VerifyingKey>>>,
    /// Where the keys come from, when they are fetched.
    jwks: Option<JwksUrl>,
    validation: Validation,
    /// Accepted clock skew: a connection lasts until `exp` plus this.
    leeway: Duration,
}

struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
}

/// The claims the bridge reads; the others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl JwtVerifier {
    /// Builds the verifier of the `jwt` settings (a key must be set).
    pub fn new(jwt: &Jwt) -> Result<Self, ConfigError> {
        jwt_crypto::install();
        let problem = |field: &str, what: String| ConfigError {
            problems: vec![format!("{field}: {what}")],
        };
        let (algorithm, keys) = match (&jwt.secret, &jwt.public_key_file) {
            (None, None) if jwt.jwks_url.is_some() => (Algorithm::RS256, Vec::new()),
            (Some(secret), None) => (
                Algorithm::HS256,
                vec![VerifyingKey {
                    kid: None,
                    key: DecodingKey::from_secret(secret.expose().as_bytes()),
                }],
            ),
            (None, Some(path)) => (
                Algorithm::RS256,
                load_public_keys(path).map_err(|e| problem("jwt_public_key_file", e))?,
            ),
            _ => {
                return Err(problem(
                    "jwt_secret",
                    "auth = \"jwt\" needs exactly one of jwt_secret (HS256) and jwt_public_key_file (RS256)".into(),
                ))
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.algorithms = vec![algorithm];
        validation.leeway = jwt.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &jwt.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &jwt.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        if jwt.audience.is_none() || jwt.issuer.is_none() {
            warn!(
                audience_checked = jwt.audience.is_some(),
                issuer_checked = jwt.issuer.is_some(),
                "JWT audience or issuer not checked: any token signed with this key is \
                 accepted whoever it was issued for (set jwt_audience and jwt_issuer)"
            );
        }
        let jwks = jwt
            .jwks_url
            .as_deref()
            .map(JwksUrl::new)
            .transpose()
            .map_err(|e| problem("jwt_jwks_url", e))?;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            jwks,
            validation,
            leeway: Duration::from_secs(jwt.leeway_secs),
        })
    }

    /// Verifies `token`; returns its `sub` as a client id.
    pub fn verify(&self, token: &str) -> Result<ClientId, AuthError> {
        self.verify_until(token).map(|(client_id, _)| client_id)
    }

    /// Verifies `token`; returns its `sub` as a client id and until when a
    /// connection opened with it may stay open (`exp` plus the leeway).
    pub fn verify_until(&self, token: &str) -> Result<(ClientId, SystemTime), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.kind()))?;
        let mut last = AuthError::Invalid("no key matches the token's kid");
        let keys = self.current_keys();
        for candidate in candidates(&keys, header.kid.as_deref()) {
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, &self.validation) {
                Ok(data) => {
                    let until = valid_until(data.claims.exp, self.leeway).ok_or(
                        AuthError::Invalid("the token's exp is out of range (after the year 9999)"),
                    )?;
                    return ClientId::parse(data.claims.sub)
                        .map(|client_id| (client_id, until))
                        .map_err(|_| AuthError::Invalid("sub is not a valid client id"));
                }
                // Another key of the set may have signed it.
                Err(e) if *e.kind() == ErrorKind::InvalidSignature => last = invalid(e.kind()),
                Err(e) => return Err(invalid(e.kind())),
            }
        }
        Err(last)
    }

    fn current_keys(&self) -> Arc<Vec<VerifyingKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// With a JWKS URL: fetches the keys (an error when that fails: the
    /// bridge cannot verify anything without them) and keeps them fresh in
    /// the background for as long as the verifier lives.
    pub async fn start(self: &Arc<Self>) -> Result<(), String> {
        let Some(jwks) = &self.jwks else {
            return Ok(());
        };
        let max_age = self.refresh(jwks).await?;
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = max_age;
            loop {
                tokio::time::sleep(wait).await;
                let Some(verifier) = weak.upgrade() else {
                    return;
                };
                let Some(jwks) = &verifier.jwks else { return };
                wait = match verifier.refresh(jwks).await {
                    Ok(max_age) => max_age,
                    Err(error) => {
                        warn!(%error, "JWKS refresh failed, keeping the keys known");
                        jwks::MIN_REFRESH
                    }
                };
            }
        });
        Ok(())
    }

    /// When `token` names a key id the set does not have, fetches the set
    /// again first (at most once per `jwks::MIN_REFRESH`): a key the
    /// identity provider has just rotated in is known before the token is
    /// verified.
    pub async fn refresh_for(&self, token: &str) {
        let Some(jwks) = &self.jwks else { return };
        let Some(kid) = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid) else {
            return;
        };
        let known = self
            .current_keys()
            .iter()
            .any(|k| k.kid.as_deref() == Some(kid.as_str()));
        if known || !jwks.claim_forced_refresh() {
            return;
        }
        debug!(%kid, "token names an unknown key id, fetching the JWKS again");
        if let Err(error) = self.refresh(jwks).await {
            warn!(%error, "JWKS refresh failed, keeping the keys known");
        }
    }

    /// Fetches the set and replaces the keys; returns how long to keep them.
    async fn refresh(&self, jwks: &JwksUrl) -> Result<Duration, String> {
        let (text, max_age) = jwks.fetch().await?;
        let keys = keys_of_jwks(&text, &jwks.uri().to_string())?;
        debug!(keys = keys.len(), ?max_age, "JWKS fetched");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        Ok(max_age)
    }
}

/// `exp` plus `leeway` as a time, or `None` when `exp` is after [`MAX_EXP`].
fn valid_until(exp: u64, leeway: Duration) -> Option<SystemTime> {
    if exp > MAX_EXP {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_secs(exp).checked_add(leeway)?)
}

/// The keys to try: the one named by `kid`, else every key.
fn candidates<'a>(
    keys: &'a [VerifyingKey],
    kid: Option<&'a str>,
) -> impl Iterator<Item = &'a VerifyingKey> {
    let named = kid.filter(|kid| keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
    keys.iter()
        .filter(move |k| named.is_none() || k.kid.as_deref() == named)
}

/// A client-facing reason for a verification failure (never token content).
fn invalid(kind: &ErrorKind) -> AuthError {
    AuthError::Invalid(match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
        ErrorKind::InvalidSignature => "the signature does not verify",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "the token's algorithm is not accepted"
        }
        ErrorKind::InvalidAudience => "the token's audience (aud) is not accepted",
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "the token has no exp claim",
            "sub" => "the token has no sub claim",
            "aud" => "the token has no aud claim",
            "iss" => "the token has no iss claim",
            _ => "the token lacks a required claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "a claim of the token has the wrong type",
        ErrorKind::InvalidToken
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "the token is malformed",
        _ => "the token was refused",
    })
}

/// Reads the RS256 public key(s) of `path`: a PEM public key, or a JWKS
/// document (`{"keys": [...]}`) or a single JWK, of which the RSA signing
/// keys are kept.
/// The RSA signing keys of a JWKS document (or of a single JWK) that `from`
/// (a file or a URL) holds.
fn keys_of_jwks(text: &str, from: &str) -> Result<Vec<VerifyingKey>, String> {
    let jwks: JwkSet = match serde_json::from_str::<JwkSet>(text) {
        Ok(set) => set,
        Err(_) => serde_json::from_str::<Jwk>(text)
            .map(|jwk| JwkSet { keys: vec![jwk] })
            .map_err(|e| format!("{from} is neither a JWKS nor a JWK: {e}"))?,
    };
    let keys: Vec<VerifyingKey> = jwks
        .keys
        .iter()
        .filter(|jwk| usable_for_rs256(jwk))
        .map(|jwk| {
            DecodingKey::from_jwk(jwk)
                .map(|key| VerifyingKey {
                    kid: jwk.common.key_id.clone(),
                    key,
                })
                .map_err(|e| format!("a key of {from} is not usable: {e}"))
        })
        .collect::<Result<_, _>>()?;
    if keys.is_empty() {
        return Err(format!("{from} holds no RSA signing key for RS256"));
    }
    Ok(keys)
}

fn load_public_keys(path: &Path) -> Result<Vec<VerifyingKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        keys_of_jwks(trimmed, &path.display().to_string())
    } else {
        let key = DecodingKey::from_rsa_pem(text.as_bytes()).map_err(|e| {
            format!(
                "{} is not an RSA public key in PEM (or a JWKS): {e}",
                path.display()
            )
        })?;
        Ok(vec![VerifyingKey { kid: None, key }])
    }
}

fn usable_for_rs256(jwk: &Jwk) -> bool {
    matches!(jwk.algorithm, AlgorithmParameters::RSA(_))
        && !matches!(
            jwk.common.public_key_use,
            Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
        )
        && matches!(jwk.common.key_algorithm, None | Some(KeyAlgorithm::RS256))
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

impl Authenticator {
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

/// The claims of a development token.
#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// Signs an HS256 token for `sub`, valid for `ttl`, with the audience and
/// issuer the bridge checks (`wsbridge token`); an error when it would
/// expire after [`MAX_EXP`] or cannot be signed.
pub fn mint(
    secret: &Secret,
    sub: &ClientId,
    ttl: Duration,
    audience: Option<&str>,
    issuer: Option<&str>,
) -> Result<String, String> {
    jwt_crypto::install();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = MintedClaims {
        sub: sub.as_str(),
        iat: now,
        exp: now
            .checked_add(ttl.as_secs())
            .filter(|&exp| exp <= MAX_EXP)
            .ok_or_else(|| {
                format!(
                    "a ttl of {} s would expire after the year 9999",
                    ttl.as_secs()
                )
            })?,
        aud: audience,
        iss: issuer,
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| e.to_string())
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

    fn jwt_settings(secret: &str) -> Jwt {
        Jwt {
            secret: Some(Secret::new(secret)),
            public_key_file: None,
            jwks_url: None,
            audience: None,
            issuer: None,
            leeway_secs: 30,
        }
    }

    #[test]
    fn a_minted_token_verifies_and_names_its_sub() {
        let secret = "s".repeat(32);
        let settings = jwt_settings(&secret);
        let verifier = JwtVerifier::new(&settings).unwrap();
        let alice = ClientId::parse("alice").unwrap();
        let token = mint(
            settings.secret.as_ref().unwrap(),
            &alice,
            Duration::from_secs(60),
            None,
            None,
        )
        .unwrap();
        assert_eq!(verifier.verify(&token), Ok(alice));
        assert_eq!(
            verifier.verify("not.a.token"),
            Err(AuthError::Invalid("the token is malformed"))
        );
    }

    #[test]
    fn an_exp_beyond_the_year_9999_is_refused_and_never_overflows() {
        let settings = jwt_settings(&"s".repeat(32));
        let verifier = JwtVerifier::new(&settings).unwrap();
        let key = EncodingKey::from_secret("s".repeat(32).as_bytes());
        let token = |exp: u64| {
            let claims = serde_json::json!({"sub": "alice", "exp": exp});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        for exp in [MAX_EXP + 1, 1 << 63, u64::MAX - 29, u64::MAX] {
            assert_eq!(
                verifier.verify(&token(exp)),
                Err(AuthError::Invalid(
                    "the token's exp is out of range (after the year 9999)"
                )),
                "exp {exp}"
            );
        }
        let (_, until) = verifier.verify_until(&token(MAX_EXP)).unwrap();
        assert_eq!(
            until,
            UNIX_EPOCH + Duration::from_secs(MAX_EXP) + Duration::from_secs(30)
        );
        let alice = ClientId::parse("alice").unwrap();
        let secret = settings.secret.as_ref().unwrap();
        assert!(mint(secret, &alice, Duration::from_secs(u64::MAX), None, None).is_err());
    }
}
