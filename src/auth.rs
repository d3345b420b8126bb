//! Who is calling. A user: the app's own auth issues HS256 bearer tokens; we only verify them: the
//! signature with `AUTH_JWT_SECRET`, the algorithm (HS256 only, so `alg: none` and key-confusion
//! tokens fail) and `exp`, which is required. The app's backend: an API key from
//! `ENTITLE_API_KEYS`, on the `/v1/` routes only. Neither is accepted where the other belongs.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    http::request::Parts,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::error::AppError;

/// The authenticated user, taken from the token's `sub`.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user_id: String,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
}

/// The key and rules user tokens are checked with; cheap to clone.
#[derive(Clone)]
pub struct TokenVerifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
}

impl TokenVerifier {
    pub fn new(secret: &str) -> Self {
        Self {
            key: Arc::new(DecodingKey::from_secret(secret.as_bytes())),
            validation: Arc::new(token_validation()),
        }
    }

    pub fn verify(&self, token: &str) -> Option<AuthUser> {
        verify_bearer_token(token, &self.key, &self.validation)
    }
}

pub fn token_validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    // Tokens come from our own auth, on synchronised clocks: an expired token is expired.
    validation.leeway = 0;
    // A token that is not valid yet is not valid.
    validation.validate_nbf = true;
    validation
}

pub fn verify_bearer_token(token: &str, key: &DecodingKey, validation: &Validation) -> Option<AuthUser> {
    let claims = jsonwebtoken::decode::<Claims>(token, key, validation).ok()?.claims;
    let user_id = claims.sub;
    if !crate::user_id::is_valid(&user_id) {
        return None;
    }
    Some(AuthUser { user_id })
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
