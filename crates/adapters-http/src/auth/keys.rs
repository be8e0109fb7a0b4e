//! The RS256 keys tokens are verified with, read from a file (a PEM public
//! key, a JWKS document or a single JWK) or from a fetched JWKS document.

use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;

/// One key tokens may be signed with, and its key id.
pub(super) struct VerifyingKey {
    pub(super) kid: Option<String>,
    pub(super) key: DecodingKey,
}

/// The RSA signing keys of a JWKS document (or of a single JWK) that `from`
/// (a file or a URL) holds.
pub(super) fn keys_of_jwks(text: &str, from: &str) -> Result<Vec<VerifyingKey>, String> {
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

/// Reads the RS256 public key(s) of `path`: a PEM public key, or a JWKS
/// document (`{"keys": [...]}`) or a single JWK, of which the RSA signing
/// keys are kept.
pub(super) fn load_public_keys(path: &Path) -> Result<Vec<VerifyingKey>, String> {
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
