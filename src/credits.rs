//! Credits the app spends: the rules of the server API (`/v1/`) over the credit ledger: what a
//! valid request is, what its idempotency key names, and how each answer of the store becomes the
//! domain's. Grants from payments (a purchase, a subscription period) come from fulfilment and the
//! lifecycle through `grant_purchase` and `grant_period`.
//!
//! A request's idempotency key names it for as long as what it made exists: the same key with
//! the same request answers the same again (a replay: the first answer, whatever happened since),
//! with another request `409`. "The same request" is the SHA-256 of its fields in a canonical JSON
//! form.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use crate::store::credit_ledger::{Balance, GrantRow, GrantSource, LedgerRow, SpendStatus};
use crate::{
    batched::Batched,
    db,
    debit_gate::DebitGate,
    domain_error::DomainError,
    holdings,
    store::credit_ledger::{self, GrantOutcome, NewGrant, NewSpend, SettleOutcome, SpendKind, SpendOutcome},
    wakeups::Wakeups,
};

/// Far below where sums of many grants could overflow a bigint.
pub const MAX_CREDITS: i64 = 1_000_000_000_000;
pub const MAX_KEY_LEN: usize = 255;
pub const MAX_TEXT_LEN: usize = 1_000;
/// Serialized; Stripe allows about as much on an object's metadata.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
pub const DEFAULT_RESERVATION_TTL_SECS: i64 = 300;
pub const MAX_RESERVATION_TTL_SECS: i64 = 86_400;

fn invalid(field: &str, rule: &str) -> DomainError {
    DomainError::Invalid {
        code: "invalid_body",
        message: format!("`{field}` {rule}."),
    }
}

/// A user id as the tokens' `sub` may carry it: 1 to 255 bytes, whatever they are (a user who
/// bought credits must be one the server API can name), but for NUL, which no user id stored can
/// hold.
pub fn check_user_id(field: &str, user_id: &str) -> Result<(), DomainError> {
    if !crate::user_id::is_valid(user_id) {
        return Err(invalid(field, "must be 1 to 255 bytes without NUL characters"));
    }
    Ok(())
}

fn check_credits(field: &str, credits: i64, least: i64) -> Result<(), DomainError> {
    if credits < least || credits > MAX_CREDITS {
        let rule = format!("must be a whole number from {least} to {MAX_CREDITS}");
        return Err(invalid(field, &rule));
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), DomainError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(invalid(
            "idempotencyKey",
            "must be 1 to 255 bytes without control characters",
        ));
    }
    Ok(())
}

fn check_text(field: &str, text: Option<&str>, required: bool) -> Result<(), DomainError> {
    match text {
        None if required => Err(invalid(field, "is required")),
        Some(text) if text.trim().is_empty() && required => Err(invalid(field, "must not be empty")),
        Some(text) if text.len() > MAX_TEXT_LEN || text.contains('\0') => {
            Err(invalid(field, "must be at most 1000 bytes without NUL characters"))
        }
        _ => Ok(()),
    }
}

fn check_metadata(metadata: Option<&Value>) -> Result<(), DomainError> {
    match metadata {
        None | Some(Value::Null) => Ok(()),
        Some(value @ Value::Object(_)) => {
            let text = value.to_string();
            if text.len() > MAX_METADATA_BYTES || text.contains("\\u0000") {
                return Err(invalid(
                    "metadata",
                    "must be at most 8 KiB of JSON without NUL characters",
                ));
            }
            Ok(())
        }
        Some(_) => Err(invalid("metadata", "must be a JSON object")),
    }
}

/// The request's fingerprint: its fields as canonical JSON (object keys sorted at every depth).
fn request_hash(fields: Value) -> String {
    fn canonical(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k, canonical(v))).collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
            other => other,
        }
    }
    hex::encode(Sha256::digest(canonical(fields).to_string().as_bytes()))
}

pub struct UsageRequest {
    pub user_id: String,
    pub credits: i64,
    pub idempotency_key: String,
    pub description: Option<String>,
    pub metadata: Option<Value>,
}

pub struct ReservationRequest {
    pub user_id: String,
    pub credits: i64,
    pub idempotency_key: String,
    pub ttl_seconds: Option<i64>,
}

/// A usage or a reservation as made (or as made before, when `replayed`).
pub struct Spent {
    pub id: Uuid,
    pub credits: i64,
    pub status: SpendStatus,
    pub expires_at: Option<DateTime<Utc>>,
    /// What the user could spend right after it (for a replay too: it is the first answer again).
    pub available: i64,
    pub replayed: bool,
}

/// Spends credits at once, or answers 402 with nothing written.
pub async fn record_usage(
    db: &PgPool,
    gate: &DebitGate,
    wakeups: &Wakeups,
    request: UsageRequest,
) -> Result<Spent, DomainError> {
    check_user_id("userId", &request.user_id)?;
    check_credits("credits", request.credits, 1)?;
    check_key(&request.idempotency_key)?;
    check_text("description", request.description.as_deref(), false)?;
    check_metadata(request.metadata.as_ref())?;
    let metadata = request.metadata.filter(|m| !m.is_null());
    let hash = request_hash(json!({
        "userId": request.user_id,
        "credits": request.credits,
        "description": request.description,
        "metadata": metadata,
    }));
    spend(
        db,
        gate,
        wakeups,
        NewSpend {
            user_id: &request.user_id,
            kind: SpendKind::Usage,
            idempotency_key: &request.idempotency_key,
            request_hash: &hash,
            credits: request.credits,
            expires_at: None,
            description: request.description.as_deref(),
            metadata: metadata.as_ref(),
        },
    )
    .await
}

/// Holds credits for a while: no one else can spend them until the reservation is committed,
/// released, or its TTL passes.
pub async fn reserve(
    db: &PgPool,
    gate: &DebitGate,
    wakeups: &Wakeups,
    request: ReservationRequest,
) -> Result<Spent, DomainError> {
    check_user_id("userId", &request.user_id)?;
    check_credits("credits", request.credits, 1)?;
    check_key(&request.idempotency_key)?;
    let ttl = request.ttl_seconds.unwrap_or(DEFAULT_RESERVATION_TTL_SECS);
    if !(1..=MAX_RESERVATION_TTL_SECS).contains(&ttl) {
        return Err(invalid("ttlSeconds", "must be a whole number from 1 to 86400"));
    }
    let hash = request_hash(json!({
        "userId": request.user_id,
        "credits": request.credits,
        "ttlSeconds": ttl,
    }));
    let expires_at = Utc::now() + chrono::Duration::seconds(ttl);
    spend(
        db,
        gate,
        wakeups,
        NewSpend {
            user_id: &request.user_id,
            kind: SpendKind::Reservation,
            idempotency_key: &request.idempotency_key,
            request_hash: &hash,
            credits: request.credits,
            expires_at: Some(expires_at),
            description: None,
            metadata: None,
        },
    )
    .await
}

async fn spend(db: &PgPool, gate: &DebitGate, wakeups: &Wakeups, spend: NewSpend<'_>) -> Result<Spent, DomainError> {
    let _in_flight = gate.enter(spend.user_id).await;
    // One statement keyed by the idempotency key: if the connection broke after it landed, the
    // retry finds the key and answers as a replay.
    let answer = db::retry_idempotent(db, || credit_ledger::spend(db, &spend)).await?;
    if answer.outcome == SpendOutcome::Spent {
        // The statement notified nobody (see `credit_ledger::spend`); the app's webhook of the new
        // balance is written, and its senders are woken here.
        wakeups.after_commit(None, true);
    }
    match answer.outcome {
        SpendOutcome::Insufficient => Err(DomainError::InsufficientCredits {
            available: answer.available,
            requested: spend.credits,
        }),
        SpendOutcome::KeyReused => Err(key_reused()),
        SpendOutcome::Spent | SpendOutcome::Replayed => Ok(Spent {
            id: answer.spend_id.expect("a spend names its row"),
            credits: answer.credits,
            status: answer.status.expect("a spend has a status"),
            expires_at: answer.expires_at,
            available: answer.available,
            replayed: answer.outcome == SpendOutcome::Replayed,
        }),
    }
}

fn key_reused() -> DomainError {
    DomainError::Conflict {
        code: "idempotency_key_reused",
        message: "This idempotency key was already used with a different request.",
    }
}

/// A reservation after a commit or a release.
pub struct Reservation {
    pub id: Uuid,
    pub user_id: String,
    pub credits: i64,
    pub spent: i64,
    pub status: SpendStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub settled_at: Option<DateTime<Utc>>,
}

/// Spends `credits` of the reservation (all of it when `None`) and releases the rest.
pub async fn commit(db: &PgPool, reservation_id: Uuid, credits: Option<i64>) -> Result<Reservation, DomainError> {
    if let Some(credits) = credits {
        check_credits("credits", credits, 0)?;
    }
    settle(db, reservation_id, true, credits).await
}

/// Releases all of the reservation.
pub async fn release(db: &PgPool, reservation_id: Uuid) -> Result<Reservation, DomainError> {
    settle(db, reservation_id, false, None).await
}

async fn settle(db: &PgPool, id: Uuid, commit: bool, credits: Option<i64>) -> Result<Reservation, DomainError> {
    // Settling twice answers the same, so a retry after a broken connection is safe.
    let answer = db::retry_idempotent(db, || credit_ledger::settle_reservation(db, id, commit, credits)).await?;
    let conflict = |code, message| Err(DomainError::Conflict { code, message });
    match answer.outcome {
        SettleOutcome::NotFound => Err(no_such_reservation()),
        SettleOutcome::Expired => conflict(
            "reservation_expired",
            "The reservation outlived its TTL and released its credits.",
        ),
        SettleOutcome::Committed => conflict(
            "reservation_committed",
            "The reservation was already committed (with another amount, if one was given).",
        ),
        SettleOutcome::Released => conflict("reservation_released", "The reservation was already released."),
        SettleOutcome::TooMany => Err(DomainError::Invalid {
            code: "invalid_body",
            message: format!(
                "`credits` must be at most the {} credits reserved.",
                answer.credits.unwrap_or_default()
            ),
        }),
        SettleOutcome::Settled | SettleOutcome::Already => Ok(Reservation {
            id,
            user_id: answer.user_id.unwrap_or_default(),
            credits: answer.credits.unwrap_or_default(),
            spent: answer.spent.unwrap_or_default(),
            status: answer.status.unwrap_or(SpendStatus::Released),
            expires_at: answer.expires_at,
            settled_at: answer.settled_at,
        }),
    }
}

fn no_such_reservation() -> DomainError {
    DomainError::NotFound {
        code: "reservation_not_found",
        message: "No reservation has this id.",
    }
}

pub struct ManualGrantRequest {
    pub user_id: String,
    pub credits: i64,
    pub idempotency_key: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

pub struct Granted {
    pub id: Uuid,
    pub credits: i64,
    pub remaining: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub replayed: bool,
}

/// Promotional or support credits.
pub async fn grant_manual(db: &PgPool, request: ManualGrantRequest) -> Result<Granted, DomainError> {
    check_user_id("userId", &request.user_id)?;
    check_credits("credits", request.credits, 1)?;
    check_key(&request.idempotency_key)?;
    check_text("reason", request.reason.as_deref(), true)?;
    // Whether `expiresAt` is still to come is checked after the key: a replay of a grant whose
    // expiry has come since is still that grant.
    let hash = request_hash(json!({
        "userId": request.user_id,
        "credits": request.credits,
        "expiresAt": request.expires_at.map(|at| at.timestamp_micros()),
        "reason": request.reason,
    }));
    let grant = NewGrant {
        user_id: &request.user_id,
        source: GrantSource::Manual,
        order_id: None,
        stripe_invoice_id: None,
        idempotency_key: Some(&request.idempotency_key),
        request_hash: Some(&hash),
        reason: request.reason.as_deref(),
        credits: request.credits,
        expires_at: request.expires_at,
        stripe_event_id: None,
    };
    let answer = db::retry_idempotent(db, || async {
        let mut conn = db.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let answer = credit_ledger::grant(&mut tx, &grant).await?;
        tx.commit().await?;
        Ok(answer)
    })
    .await?;
    match answer.outcome {
        GrantOutcome::KeyReused | GrantOutcome::Exists => Err(key_reused()),
        GrantOutcome::Past => Err(invalid("expiresAt", "must be in the future")),
        GrantOutcome::Granted | GrantOutcome::Replayed => Ok(Granted {
            id: answer.grant_id.expect("a grant names its row"),
            credits: answer.granted,
            remaining: answer.remaining,
            expires_at: answer.expires_at,
            replayed: answer.outcome == GrantOutcome::Replayed,
        }),
    }
}

/// A paid order's credits, once, in fulfilment's transaction; they expire `expire_after_days`
/// after now when the plan said so when the order was placed.
pub async fn grant_purchase(
    conn: &mut PgConnection,
    user_id: &str,
    order_id: Uuid,
    credits: i64,
    expire_after_days: Option<i32>,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    let grant = NewGrant {
        user_id,
        source: GrantSource::Purchase,
        order_id: Some(order_id),
        stripe_invoice_id: None,
        idempotency_key: None,
        request_hash: None,
        reason: None,
        credits,
        expires_at: expire_after_days.map(|days| Utc::now() + chrono::Duration::days(i64::from(days))),
        stripe_event_id: Some(event_id),
    };
    credit_ledger::grant(conn, &grant).await?;
    Ok(())
}

/// A subscription period's credits, once per paid invoice, expiring at the period's end.
pub async fn grant_period(
    conn: &mut PgConnection,
    user_id: &str,
    order_id: Uuid,
    invoice_id: &str,
    credits: i64,
    period_end: Option<DateTime<Utc>>,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    let grant = NewGrant {
        user_id,
        source: GrantSource::Period,
        order_id: Some(order_id),
        stripe_invoice_id: Some(invoice_id),
        idempotency_key: None,
        request_hash: None,
        reason: None,
        credits,
        expires_at: period_end,
        stripe_event_id: Some(event_id),
    };
    credit_ledger::grant(conn, &grant).await?;
    Ok(())
}

/// The user's credits now, with anything past its time written first (a reservation's TTL, a
/// grant's expiry), so what is read is what can be spent. A read unless something is due.
pub async fn balance(db: &PgPool, user_id: &str) -> Result<Balance, sqlx::Error> {
    let balance = db::retry_idempotent(db, || credit_ledger::balance(db, user_id)).await?;
    written_through(db, user_id, balance).await
}

/// `balance` as read, or, when something in it fell due, read again once that is written.
async fn written_through(db: &PgPool, user_id: &str, balance: Balance) -> Result<Balance, sqlx::Error> {
    if !balance.due {
        return Ok(balance);
    }
    db::retry_idempotent(db, || credit_ledger::expire(db, user_id)).await?;
    db::retry_idempotent(db, || credit_ledger::balance(db, user_id)).await
}

/// `balance` for the hot path (`/v1/check`): the reads of many callers at once share one query
/// (see `batched`).
#[derive(Clone)]
pub struct BalanceReader {
    db: PgPool,
    batched: Batched<String, Balance>,
}

impl BalanceReader {
    pub fn start(db: PgPool) -> Self {
        let pool = db.clone();
        let batched = Batched::start(move |user_ids: Vec<String>| {
            let db = pool.clone();
            async move { db::retry_idempotent(&db, || credit_ledger::balances(&db, &user_ids)).await }
        });
        Self { db, batched }
    }

    pub async fn read(&self, user_id: &str) -> Result<Balance, sqlx::Error> {
        match self.batched.ask(user_id.to_owned()).await {
            Some(balance) => written_through(&self.db, user_id, balance).await,
            // The batch failed: alone, so any error is this read's own.
            None => balance(&self.db, user_id).await,
        }
    }
}

pub struct CheckAnswer {
    pub allowed: bool,
    pub available: i64,
    /// The entitlement asked about, and whether it grants access now.
    pub entitlement: Option<(String, bool)>,
}

/// Whether the user may do something that needs `credits` and/or `entitlement`; writes nothing
/// (unless an expiry fell due, which `balance` writes first).
pub async fn check(
    db: &PgPool,
    balances: &BalanceReader,
    user_id: &str,
    credits: Option<i64>,
    entitlement: Option<&str>,
    grace: std::time::Duration,
) -> Result<CheckAnswer, DomainError> {
    check_user_id("userId", user_id)?;
    if credits.is_none() && entitlement.is_none() {
        return Err(DomainError::Invalid {
            code: "invalid_body",
            message: "Name `credits`, `entitlement` or both to check.".into(),
        });
    }
    if let Some(credits) = credits {
        check_credits("credits", credits, 0)?;
    }
    if entitlement.is_some_and(|key| key.is_empty() || key.len() > 255 || key.contains('\0')) {
        return Err(invalid("entitlement", "must be a key of 1 to 255 bytes"));
    }
    let balance = balances.read(user_id).await?;
    let entitlement = match entitlement {
        None => None,
        Some(key) => {
            let held = holdings::entitlement(db, user_id, key, grace).await?;
            Some((key.to_owned(), held.is_some_and(|held| held.active)))
        }
    };
    let enough = credits.is_none_or(|needed| balance.available >= needed);
    let entitled = entitlement.as_ref().is_none_or(|(_, active)| *active);
    Ok(CheckAnswer {
        allowed: enough && entitled,
        available: balance.available,
        entitlement,
    })
}

/// The grants the user can spend, in the order they are spent.
pub async fn spendable_grants(db: &PgPool, user_id: &str) -> Result<Vec<GrantRow>, sqlx::Error> {
    db::retry_idempotent(db, || credit_ledger::spendable_grants(db, user_id)).await
}

/// The user's latest ledger rows, newest first.
pub async fn latest_ledger_rows(db: &PgPool, user_id: &str, limit: i64) -> Result<Vec<LedgerRow>, sqlx::Error> {
    db::retry_idempotent(db, || credit_ledger::latest_rows(db, user_id, limit)).await
}

/// Writes what passed its time for every user with something due (the periodic sweep; a user's
/// own reads and writes do it for them as they go). Returns how many users it touched.
pub async fn expire_due(db: &PgPool) -> Result<usize, sqlx::Error> {
    let users = credit_ledger::users_due(db, 500).await?;
    for user in &users {
        credit_ledger::expire(db, user).await?;
    }
    Ok(users.len())
}

/// One scheduled sweep (see `jobs`): writes expiries as they fall due even for users nobody asks
/// about, so the ledger records them near their time; whether it succeeded. A `entitle` operator
/// command or a user's own request may expire the same user at the same moment: each user is taken
/// under their lock and what one wrote the next finds done.
pub async fn scheduled_sweep(db: &PgPool) -> bool {
    match expire_due(db).await {
        Ok(0) => true,
        Ok(users) => {
            tracing::info!(users, "credits expired");
            true
        }
        Err(err) => {
            tracing::error!(error = ?err, "credit expiry sweep failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_hash_ignores_key_order_and_sees_every_value() {
        let a = request_hash(json!({"userId": "u", "metadata": {"a": 1, "b": [1, {"y": 2, "x": 1}]}}));
        let b = request_hash(json!({"metadata": {"b": [1, {"x": 1, "y": 2}], "a": 1}, "userId": "u"}));
        assert_eq!(a, b);
        let c = request_hash(json!({"userId": "u", "metadata": {"a": 2, "b": [1, {"y": 2, "x": 1}]}}));
        assert_ne!(a, c);
    }

    #[test]
    fn input_rules_name_the_field() {
        let err = check_credits("credits", 0, 1).unwrap_err().to_string();
        assert!(err.contains("`credits`"), "{err}");
        assert!(check_user_id("userId", "").is_err());
        assert!(check_user_id("userId", &"u".repeat(256)).is_err());
        assert!(check_user_id("userId", "a\u{0}b").is_err());
        assert!(check_user_id("userId", "user_123").is_ok());
        assert!(check_user_id("userId", "tab\tand\u{7f}").is_ok());
        assert!(check_key(&"k".repeat(256)).is_err());
        assert!(check_metadata(Some(&json!([1]))).is_err());
        assert!(check_metadata(Some(&json!({"a": "\u{0}"}))).is_err());
        assert!(check_metadata(Some(&json!({"a": 1}))).is_ok());
    }
}
