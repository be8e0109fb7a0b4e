//! `wsbridge token`: a development token (HS256, signed with the configured
//! jwt_secret) for a client id, with the configured audience and issuer.

use std::time::Duration;

use domain::ClientId;
use secrecy::SecretString;

use super::Failure;
use crate::config::{Config, ConfigError, ENV_PREFIX};

/// Mints and prints the token.
pub(crate) fn run(config: &Config, sub: &str, ttl: Duration) -> Result<(), Failure> {
    let jwt = &config.access.jwt;
    let secret = jwt.secret.as_ref().ok_or_else(|| {
        Failure::from(ConfigError {
            problems: vec![format!(
                "jwt_secret: not set (config file, or {ENV_PREFIX}JWT_SECRET); \
                 `wsbridge token` signs with it"
            )],
        })
    })?;
    let sub = ClientId::parse(sub).map_err(|e| Failure::Usage(format!("--sub: {e}")))?;
    let token = adapters_http::auth::mint(
        &SecretString::from(secret.expose()),
        &sub,
        ttl,
        jwt.audience.as_deref(),
        jwt.issuer.as_deref(),
    )
    .map_err(|e| Failure::Usage(format!("cannot sign the token: {e}")))?;
    println!("{token}");
    Ok(())
}

/// The longest `--ttl`: a development token, not a credential for good.
pub(crate) const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 86_400);

/// Parses a `--ttl` ([`parse_ttl`]) of at most [`MAX_TOKEN_TTL`].
pub(crate) fn parse_token_ttl(text: &str) -> Result<Duration, String> {
    let ttl = parse_ttl(text)?;
    if ttl > MAX_TOKEN_TTL {
        return Err(format!(
            "{:?} is longer than a development token may last (at most {}d)",
            text.trim(),
            MAX_TOKEN_TTL.as_secs() / 86_400
        ));
    }
    Ok(ttl)
}

/// Parses `90`, `90s`, `15m`, `2h` or `1d`.
pub(crate) fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 15m, 2h or 1d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    match number.checked_mul(scale) {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{text:?} is not a positive duration")),
    }
}
