//! Development tokens (`wsbridge token`): HS256, signed with the
//! configured secret, with the audience and issuer the bridge checks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use domain::ClientId;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{crypto, MAX_EXP};

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
    secret: &SecretString,
    sub: &ClientId,
    ttl: Duration,
    audience: Option<&str>,
    issuer: Option<&str>,
) -> Result<String, String> {
    crypto::install();
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
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .map_err(|e| e.to_string())
}
