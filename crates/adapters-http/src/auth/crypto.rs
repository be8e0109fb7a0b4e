//! The cryptography behind `jsonwebtoken`, on `ring`.
//!
//! `jsonwebtoken` 10 leaves the choice of a crypto backend to its user:
//! aws-lc-rs or the RustCrypto crates, or a provider of one's own. ring is
//! already compiled into the binary (rustls, for the AWS SDK), so this
//! provider uses it and neither of the other stacks is built. It implements
//! what the bridge accepts (HS256/384/512, RS256/384/512, PS256/384/512);
//! any other algorithm is refused with an error, never a panic.

use std::sync::Once;

use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::jwk::{EllipticCurve, ThumbprintHash};
use jsonwebtoken::signature::{self, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::{digest, hmac, rand, rsa, signature as sig};

/// Installs the ring provider as `jsonwebtoken`'s process default; every
/// encode or decode must come after it. Idempotent.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when a provider is installed already: then that one serves.
        let _ = PROVIDER.install_default();
    });
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    jwk_utils: JwkUtils {
        extract_rsa_public_key_components,
        extract_ec_public_key_coordinates,
        compute_digest,
    },
};

fn hmac_algorithm(algorithm: Algorithm) -> Option<hmac::Algorithm> {
    match algorithm {
        Algorithm::HS256 => Some(hmac::HMAC_SHA256),
        Algorithm::HS384 => Some(hmac::HMAC_SHA384),
        Algorithm::HS512 => Some(hmac::HMAC_SHA512),
        _ => None,
    }
}

type RsaSigning = &'static dyn sig::RsaEncoding;
type RsaVerifying = &'static sig::RsaParameters;

fn rsa_algorithms(algorithm: Algorithm) -> Option<(RsaSigning, RsaVerifying)> {
    match algorithm {
        Algorithm::RS256 => Some((&sig::RSA_PKCS1_SHA256, &sig::RSA_PKCS1_2048_8192_SHA256)),
        Algorithm::RS384 => Some((&sig::RSA_PKCS1_SHA384, &sig::RSA_PKCS1_2048_8192_SHA384)),
        Algorithm::RS512 => Some((&sig::RSA_PKCS1_SHA512, &sig::RSA_PKCS1_2048_8192_SHA512)),
        Algorithm::PS256 => Some((&sig::RSA_PSS_SHA256, &sig::RSA_PSS_2048_8192_SHA256)),
        Algorithm::PS384 => Some((&sig::RSA_PSS_SHA384, &sig::RSA_PSS_2048_8192_SHA384)),
        Algorithm::PS512 => Some((&sig::RSA_PSS_SHA512, &sig::RSA_PSS_2048_8192_SHA512)),
        _ => None,
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    let algorithm = *algorithm;
    if let Some(hmac_algorithm) = hmac_algorithm(algorithm) {
        let key = hmac::Key::new(hmac_algorithm, key.try_get_hmac_secret()?);
        return Ok(Box::new(HmacSigner { key, algorithm }));
    }
    if let Some((encoding, _)) = rsa_algorithms(algorithm) {
        if key.family() != AlgorithmFamily::Rsa {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        let pair = sig::RsaKeyPair::from_der(key.inner())
            .map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
        return Ok(Box::new(RsaSigner {
            pair,
            encoding,
            algorithm,
        }));
    }
    Err(ErrorKind::InvalidAlgorithm.into())
}

fn new_verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    let algorithm = *algorithm;
    if let Some(hmac_algorithm) = hmac_algorithm(algorithm) {
        let key = hmac::Key::new(hmac_algorithm, key.try_get_hmac_secret()?);
        return Ok(Box::new(HmacVerifier { key, algorithm }));
    }
    if let Some((_, parameters)) = rsa_algorithms(algorithm) {
        // A key of another family is never used for RSA (nor the reverse,
        // above): no algorithm confusion.
        if key.family() != AlgorithmFamily::Rsa {
            return Err(ErrorKind::InvalidKeyFormat.into());
        }
        return Ok(Box::new(RsaVerifier {
            key: key.clone(),
            parameters,
            algorithm,
        }));
    }
    Err(ErrorKind::InvalidAlgorithm.into())
}

struct HmacSigner {
    key: hmac::Key,
    algorithm: Algorithm,
}

impl Signer<Vec<u8>> for HmacSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(hmac::sign(&self.key, message).as_ref().to_vec())
    }
}

impl JwtSigner for HmacSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

struct HmacVerifier {
    key: hmac::Key,
    algorithm: Algorithm,
}

impl Verifier<Vec<u8>> for HmacVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        // Constant-time comparison.
        hmac::verify(&self.key, message, signature).map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for HmacVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

struct RsaSigner {
    pair: sig::RsaKeyPair,
    encoding: RsaSigning,
    algorithm: Algorithm,
}

impl Signer<Vec<u8>> for RsaSigner {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                self.encoding,
                &rand::SystemRandom::new(),
                message,
                &mut signature,
            )
            .map_err(|_| signature::Error::new())?;
        Ok(signature)
    }
}

impl JwtSigner for RsaSigner {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

struct RsaVerifier {
    key: DecodingKey,
    parameters: RsaVerifying,
    algorithm: Algorithm,
}

impl Verifier<Vec<u8>> for RsaVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        match self.key.kind() {
            DecodingKeyKind::SecretOrDer(der) => {
                sig::UnparsedPublicKey::new(self.parameters, der).verify(message, signature)
            }
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                sig::RsaPublicKeyComponents { n, e }.verify(self.parameters, message, signature)
            }
        }
        .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn extract_rsa_public_key_components(der: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let pair =
        sig::RsaKeyPair::from_der(der).map_err(|e| ErrorKind::InvalidRsaKey(e.to_string()))?;
    let components: rsa::PublicKeyComponents<Vec<u8>> = pair.public().into();
    Ok((components.n, components.e))
}

fn extract_ec_public_key_coordinates(
    _der: &[u8],
    _algorithm: Algorithm,
) -> Result<(EllipticCurve, Vec<u8>, Vec<u8>), Error> {
    Err(ErrorKind::InvalidEcdsaKey.into())
}

fn compute_digest(data: &[u8], hash: ThumbprintHash) -> Vec<u8> {
    let algorithm = match hash {
        ThumbprintHash::SHA256 => &digest::SHA256,
        ThumbprintHash::SHA384 => &digest::SHA384,
        ThumbprintHash::SHA512 => &digest::SHA512,
    };
    digest::digest(algorithm, data).as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{decode, encode, Header, Validation};
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn hs256_round_trips_and_a_wrong_secret_or_family_is_refused() {
        install();
        let claims = json!({"sub": "c1", "exp": 4_000_000_000u64});
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        let validation = Validation::new(Algorithm::HS256);
        let ok = decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            &validation,
        )
        .unwrap();
        assert_eq!(ok.claims, claims);
        let wrong = decode::<Value>(
            &token,
            &DecodingKey::from_secret(b"another secret, just as long!!!!"),
            &validation,
        )
        .unwrap_err();
        assert_eq!(wrong.kind(), &ErrorKind::InvalidSignature);
        // An RSA key is never taken as an HMAC secret.
        let rsa_key = DecodingKey::from_rsa_raw_components(&[1, 2, 3], &[1, 0, 1]);
        assert!(new_verifier(&Algorithm::HS256, &rsa_key).is_err());
        assert!(new_verifier(&Algorithm::RS256, &DecodingKey::from_secret(b"x")).is_err());
        // Algorithms without an implementation are refused, not a panic.
        assert!(new_verifier(&Algorithm::EdDSA, &DecodingKey::from_secret(b"x")).is_err());
        assert!(new_signer(&Algorithm::ES256, &EncodingKey::from_secret(b"x")).is_err());
    }

    #[test]
    fn digests_are_the_standard_ones() {
        // SHA-256("abc")
        assert_eq!(
            compute_digest(b"abc", ThumbprintHash::SHA256)[..4],
            [0xba, 0x78, 0x16, 0xbf]
        );
        assert_eq!(compute_digest(b"abc", ThumbprintHash::SHA512).len(), 64);
    }
}
