//! `POST /dev/token`: signs in as any user id, for the demo shop. Mounted only in emulator mode,
//! where nothing real can be bought; with a real Stripe key the route does not exist.

use axum::{Json, extract::State};
use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use crate::{
    error::AppError,
    extract::AppJson,
    openapi::{JsonBodyErrors, NotFound, Unavailable},
    state::AppState,
};

const TOKEN_LIFETIME_SECS: i64 = 12 * 60 * 60;

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevTokenRequest {
    /// 1-64 letters, digits or `-_.@`.
    #[schema(example = "alice", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._@-]+$")]
    user_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevTokenResponse {
    /// An HS256 user token, for `Authorization: Bearer`.
    token: String,
    user_id: String,
    /// Unix seconds.
    expires_at: i64,
}

#[utoipa::path(
    post,
    path = "/dev/token",
    tag = "dev",
    request_body = DevTokenRequest,
    responses(
        (status = 200, description = "A token for that user (emulator mode only).", body = DevTokenResponse),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
        JsonBodyErrors,
    )
)]

pub async fn dev_token(
    State(state): State<AppState>,
    AppJson(request): AppJson<DevTokenRequest>,
) -> Result<Json<DevTokenResponse>, AppError> {
    let user_id = request.user_id.trim();
    if user_id.is_empty()
        || user_id.len() > 64
        || !user_id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        return Err(AppError::bad_request(
            "invalid_user_id",
            "userId must be 1-64 letters, digits or - _ . @",
        ));
    }
    let expires_at = chrono::Utc::now().timestamp() + TOKEN_LIFETIME_SECS;
    // Emulator mode, the only one this route exists in, always has a secret.
    let secret = state.config.jwt_secret.as_ref().ok_or(AppError::NotFound {
        code: "not_found",
        message: "No such route.",
    })?;
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    let token = jsonwebtoken::encode(&Header::default(), &json!({ "sub": user_id, "exp": expires_at }), &key)
        .expect("HS256 signing with an in-memory key cannot fail");
    Ok(Json(DevTokenResponse {
        token,
        user_id: user_id.to_owned(),
        expires_at,
    }))
}
