//! The signing keys of an identity provider (Clerk, Auth0, Supabase, Firebase, …), read from its
//! JWKS URL and kept in memory. A token names its key by `kid`; a key we do not hold sends us back
//! to the URL (the provider rotated), but at most once per `min_refetch`, so a flood of tokens with
//! made-up `kid`s costs the provider one request per interval, not one per token. Keys are also
//! refetched when older than `max_age`; if the provider does not answer, the keys we have stay in
//! use (a provider's outage should not sign everyone out).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};

/// The asymmetric algorithms we verify; never an HMAC one, whose "public" key would be the secret.
pub const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
];

#[derive(Debug, Clone)]
pub struct JwksSettings {
    pub url: String,
    /// The shortest time between two fetches caused by unknown `kid`s.
    pub min_refetch: Duration,
    /// Keys older than this are fetched again on the next token.
    pub max_age: Duration,
}

/// A usable key: what to verify with, and the algorithms it may verify.
#[derive(Clone)]
pub struct SigningKey {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

pub struct Jwks {
    settings: JwksSettings,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    /// Held while fetching, so concurrent misses cause one fetch; the time of the last attempt.
    fetching: Mutex<Option<Instant>>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, SigningKey>,
    fetched_at: Option<Instant>,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<serde_json::Value>,
}

impl Jwks {
    pub fn new(settings: JwksSettings) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("a client with a timeout only always builds");
        Self {
            settings,
            http,
            keys: RwLock::new(Keys::default()),
            fetching: Mutex::new(None),
        }
    }

    /// The key named `kid`, fetching the set when we do not hold it (within the rate limit) or hold
    /// it for longer than `max_age`.
    pub async fn key(&self, kid: &str) -> Option<SigningKey> {
        {
            let keys = self.keys.read().await;
            let fresh = keys.fetched_at.is_some_and(|at| at.elapsed() < self.settings.max_age);
            if let Some(key) = keys.by_kid.get(kid).filter(|_| fresh) {
                return Some(key.clone());
            }
        }
        self.refresh().await;
        self.keys.read().await.by_kid.get(kid).cloned()
    }

    /// Fetches the set unless one was fetched (or tried) within `min_refetch`; one at a time.
    async fn refresh(&self) {
        let mut last_attempt = self.fetching.lock().await;
        if last_attempt.is_some_and(|at| at.elapsed() < self.settings.min_refetch) {
            return;
        }
        *last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(by_kid) => {
                tracing::info!(keys = by_kid.len(), "fetched the JWKS signing keys");
                *self.keys.write().await = Keys {
                    by_kid,
                    fetched_at: Some(Instant::now()),
                };
            }
            // The keys held stay in use; the next miss after `min_refetch` tries again.
            Err(err) => tracing::warn!(url = %self.settings.url, error = %err, "cannot fetch the JWKS"),
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, SigningKey>, String> {
        let response = self
            .http
            .get(&self.settings.url)
            .send()
            .await
            .map_err(|err| format!("no answer: {err}"))?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let set: KeySet = response.json().await.map_err(|err| format!("not a JWK set: {err}"))?;
        // One key we cannot use (a new key type, an encryption key) must not hide the others.
        Ok(set
            .keys
            .into_iter()
            .filter_map(|value| serde_json::from_value::<Jwk>(value).ok())
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, usable(&jwk)?)))
            .collect())
    }
}

/// A JWK we may verify signatures with: a signing key (not `use: enc`), RSA or EC, and, when it
/// names its algorithm, one of ours.
fn usable(jwk: &Jwk) -> Option<SigningKey> {
    if matches!(jwk.common.public_key_use, Some(ref usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    let family: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &ALGORITHMS[..4],
        AlgorithmParameters::EllipticCurve(_) => &ALGORITHMS[4..],
        // `oct` keys are shared secrets, never published; anything else we do not verify.
        _ => return None,
    };
    let algorithms = match jwk.common.key_algorithm {
        None => family.to_vec(),
        Some(named) => {
            // Compared as JWK algorithms: encryption ones (`RSA-OAEP`) are in neither list.
            let named = family.iter().copied().find(|alg| KeyAlgorithm::from(*alg) == named)?;
            vec![named]
        }
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(SigningKey { key, algorithms })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    const EC: (&str, &str) = (
        "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    );

    #[test]
    fn ec_and_rsa_signing_keys_are_usable_with_their_own_algorithms_only() {
        let ec = usable(&jwk(serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": EC.0, "y": EC.1, "kid": "a", "use": "sig", "alg": "ES256"
        })))
        .unwrap();
        assert_eq!(ec.algorithms, vec![Algorithm::ES256]);
        let unnamed = usable(&jwk(serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": EC.0, "y": EC.1, "kid": "b"
        })))
        .unwrap();
        assert_eq!(unnamed.algorithms, vec![Algorithm::ES256, Algorithm::ES384]);
        let rsa = usable(&jwk(serde_json::json!({
            "kty": "RSA", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw", "e": "AQAB", "kid": "c", "alg": "RS256"
        })))
        .unwrap();
        assert_eq!(rsa.algorithms, vec![Algorithm::RS256]);
    }

    #[test]
    fn shared_secrets_encryption_keys_and_mismatched_algorithms_are_refused() {
        assert!(
            usable(&jwk(
                serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h", "alg": "HS256"})
            ))
            .is_none()
        );
        assert!(
            usable(&jwk(serde_json::json!({
                "kty": "EC", "crv": "P-256", "x": EC.0, "y": EC.1, "kid": "e", "use": "enc"
            })))
            .is_none()
        );
        // An EC key that claims an RSA or HMAC algorithm: a confusion attempt, not a key.
        for alg in ["RS256", "HS256"] {
            assert!(
                usable(&jwk(serde_json::json!({
                    "kty": "EC", "crv": "P-256", "x": EC.0, "y": EC.1, "kid": "e", "alg": alg
                })))
                .is_none(),
                "{alg}"
            );
        }
    }
}
