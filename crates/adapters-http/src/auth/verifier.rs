//! The verifier of the configured JWTs: its keys (a secret, a public key
//! file, or a JWKS URL kept fresh), the claims it requires, and the check
//! of a token, at an upgrade or when an open connection renews its token.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use domain::ClientId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::ExposeSecret;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::jwks::{self, JwksUrl};
use super::keys::{keys_of_jwks, load_public_keys, VerifyingKey};
use super::{crypto, AuthError, MAX_EXP};
use crate::settings::{JwtSettings, SettingError};

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
    /// The task that keeps the JWKS fresh, once started: stopped with the
    /// verifier.
    refresher: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for JwtVerifier {
    fn drop(&mut self) {
        let refresher = self.refresher.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = refresher.take() {
            task.abort();
        }
    }
}

/// The claims the bridge reads; the others are ignored.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

impl JwtVerifier {
    /// Builds the verifier of the `jwt` settings (a key must be set); a key
    /// that cannot be read is a [`SettingError`] naming its setting.
    pub fn new(jwt: &JwtSettings) -> Result<Self, SettingError> {
        crypto::install();
        let (algorithm, keys) = initial_keys(jwt)?;
        let jwks = jwt
            .jwks_url
            .as_deref()
            .map(JwksUrl::new)
            .transpose()
            .map_err(|e| SettingError::new("jwt_jwks_url", e))?;
        Ok(Self {
            keys: RwLock::new(Arc::new(keys)),
            jwks,
            validation: validation(jwt, algorithm),
            leeway: Duration::from_secs(jwt.leeway_secs),
            refresher: Mutex::new(None),
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

    /// Until when the connection of `client_id` may stay open with `token`,
    /// a fresh token it sent; an error (for the client) when the token does
    /// not verify or names another client. Like an upgrade: a token naming
    /// a key id the JWKS does not hold has the set fetched again first
    /// (rate-limited), so a renewal right after the identity provider
    /// rotated a key in is not refused.
    pub async fn renew(&self, client_id: &ClientId, token: &str) -> Result<SystemTime, String> {
        self.refresh_for(token).await;
        let (sub, until) = self.verify_until(token).map_err(|e| e.to_string())?;
        if &sub != client_id {
            return Err("the token is for another client id".into());
        }
        Ok(until)
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
        let task = tokio::spawn(async move {
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
        let old = self
            .refresher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task);
        if let Some(old) = old {
            old.abort();
        }
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

/// The algorithm and the keys known at start: the secret's, the key file's,
/// or none yet (a JWKS URL, fetched by [`JwtVerifier::start`]).
fn initial_keys(jwt: &JwtSettings) -> Result<(Algorithm, Vec<VerifyingKey>), SettingError> {
    match (&jwt.secret, &jwt.public_key_file) {
        (None, None) if jwt.jwks_url.is_some() => Ok((Algorithm::RS256, Vec::new())),
        (Some(secret), None) => Ok((
            Algorithm::HS256,
            vec![VerifyingKey {
                kid: None,
                key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            }],
        )),
        (None, Some(path)) => Ok((
            Algorithm::RS256,
            load_public_keys(path).map_err(|e| SettingError::new("jwt_public_key_file", e))?,
        )),
        _ => Err(SettingError::new(
            "jwt_secret",
            "auth = \"jwt\" needs exactly one of jwt_secret (HS256) and jwt_public_key_file (RS256)",
        )),
    }
}

/// What a token must hold to verify: only `algorithm`, `exp` and `sub`
/// always, `aud` and `iss` when configured, `nbf` checked when present.
fn validation(jwt: &JwtSettings, algorithm: Algorithm) -> Validation {
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
    validation
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use secrecy::SecretString;

    use super::*;
    use crate::auth::mint;

    fn jwt_settings(secret: &str) -> JwtSettings {
        JwtSettings {
            secret: Some(SecretString::from(secret)),
            leeway_secs: 30,
            ..JwtSettings::default()
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
