//! Who is calling. A user: the app's auth issues bearer tokens; we only verify them: HS256 ones
//! with `AUTH_JWT_SECRET`, RS256/ES256 (and kin) ones with an identity provider's keys from
//! `AUTH_JWKS_URL` (src/jwks.rs); `exp` is required, `iss` and `aud` checked when configured. The app's backend: an API key from
//! `ENTITLE_API_KEYS`, on the `/v1/` routes only. Neither is accepted where the other belongs.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::request::Parts,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::{
    config::UserAuth,
    error::AppError,
    jwks::{ALGORITHMS, Jwks},
};

/// The authenticated user, taken from the token's `sub` (or `AUTH_USER_CLAIM`).
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: String,
}

/// The keys and rules user tokens are checked with; cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier(Arc<Verifier>);

struct Verifier {
    /// `AUTH_JWT_SECRET`, for HS256 tokens.
    shared: Option<DecodingKey>,
    /// `AUTH_JWKS_URL`'s keys, for the asymmetric algorithms.
    jwks: Option<Jwks>,
    /// The rules every token meets, whatever its algorithm (which each check sets).
    rules: Validation,
    user_claim: String,
}

impl TokenVerifier {
    pub fn new(secret: Option<&str>, auth: &UserAuth) -> Self {
        Self(Arc::new(Verifier {
            shared: secret.map(|secret| DecodingKey::from_secret(secret.as_bytes())),
            jwks: auth.jwks.clone().map(Jwks::new),
            rules: token_validation(auth),
            user_claim: auth.user_claim.clone(),
        }))
    }

    /// The user a token names, when it is signed by one of our keys with the algorithm that key
    /// is for, unexpired, and meets the issuer and audience rules. The algorithm in the token's
    /// header only picks which key to try: HS256 the shared secret, the others a JWKS key by
    /// `kid` whose type and `alg` allow it, so neither `alg: none` nor a public key used as an
    /// HMAC secret ever verifies.
    pub async fn verify(&self, token: &str) -> Option<AuthUser> {
        let verifier = &self.0;
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = match header.alg {
            Algorithm::HS256 => verifier.shared.clone()?,
            alg if ALGORITHMS.contains(&alg) => {
                let key = verifier.jwks.as_ref()?.key(header.kid.as_deref()?).await?;
                key.algorithms.contains(&alg).then_some(key.key)?
            }
            _ => return None,
        };
        let mut validation = verifier.rules.clone();
        validation.algorithms = vec![header.alg];
        let claims = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation)
            .ok()?
            .claims;
        let user_id = claims.get(&verifier.user_claim)?.as_str()?;
        crate::user_id::is_valid(user_id).then(|| AuthUser {
            user_id: user_id.to_owned(),
        })
    }
}

fn token_validation(auth: &UserAuth) -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    let mut required = vec!["exp"];
    // Tokens come from auth on synchronised clocks: an expired token is expired.
    validation.leeway = 0;
    // A token that is not valid yet is not valid.
    validation.validate_nbf = true;
    if let Some(issuer) = &auth.issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    match auth.audiences.is_empty() {
        // Providers put their own `aud` in every token; without a rule there is nothing to match.
        true => validation.validate_aud = false,
        false => {
            validation.set_audience(&auth.audiences);
            required.push("aud");
        }
    }
    validation.set_required_spec_claims(&required);
    validation
}

impl<S> FromRequestParts<S> for AuthUser
where
    TokenVerifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)?;
        TokenVerifier::from_ref(state)
            .verify(token)
            .await
            .ok_or(AppError::Unauthorized)
    }
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Result<&str, AppError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .ok_or(AppError::Unauthorized)?;
    let (scheme, token) = header.split_once(' ').ok_or(AppError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AppError::Unauthorized);
    }
    Ok(token.trim())
}

/// Whether the request carries `Authorization: Bearer <expected>`, compared in constant time (as
/// digests, so the length does not show either). For single-secret routes such as `/metrics`.
pub fn bearer_matches(headers: &axum::http::HeaderMap, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(candidate) = bearer_token(headers) else {
        return false;
    };
    digest(candidate).ct_eq(&digest(expected)).into()
}

/// The app's backend, authenticated by one of the API keys.
#[derive(Debug, Clone, Copy)]
pub struct ApiCaller;

/// The API keys, kept as SHA-256 digests: every candidate is hashed and compared with each in
/// constant time, so neither a key's bytes nor its length show in how long a refusal takes.
#[derive(Clone)]
pub struct ApiKeys(Arc<Vec<[u8; 32]>>);

impl ApiKeys {
    pub fn new<'a>(keys: impl IntoIterator<Item = &'a str>) -> Self {
        Self(Arc::new(keys.into_iter().map(digest).collect()))
    }

    pub fn accepts(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        let candidate = digest(candidate);
        // Every key is compared, whichever matches.
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, key| found | key.ct_eq(&candidate))
            .into()
    }
}

fn digest(key: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes()).into()
}

impl<S> FromRequestParts<S> for ApiCaller
where
    ApiKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)?;
        match ApiKeys::from_ref(state).accepts(token) {
            true => Ok(Self),
            false => Err(AppError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ApiKeys;

    #[test]
    fn an_api_key_matches_only_itself() {
        let keys = ApiKeys::new(["k".repeat(32).as_str(), "second-key-for-rotation-0123456789"]);
        assert!(keys.accepts(&"k".repeat(32)));
        assert!(keys.accepts("second-key-for-rotation-0123456789"));
        assert!(!keys.accepts(&"k".repeat(31)));
        assert!(!keys.accepts(&"k".repeat(33)));
        assert!(!keys.accepts(""));
        assert!(!ApiKeys::new([]).accepts(""));
    }
}
