//! `rate_buckets`: token buckets every instance spends from, one row each, so a cap configured
//! once bounds the total however many instances run.

use sqlx::PgPool;

/// Refills the bucket by the time since its last take (up to `burst`) and takes one token if that
/// leaves one, in one statement: concurrent takers queue on the row and each sees what the one
/// before left. The first take creates the bucket full (less the token taken). On refusal nothing
/// is written, so the refill keeps counting from the last take. Whether a token was taken; `burst`
/// must be at least 1.
pub async fn try_take(db: &PgPool, name: &str, per_second: f64, burst: f64) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query_scalar!(
        r#"insert into rate_buckets as b (name, tokens, refilled_at) values ($1, $3::float8 - 1, clock_timestamp())
           on conflict (name) do update
           set tokens = least($3, b.tokens + extract(epoch from clock_timestamp() - b.refilled_at)::float8 * $2) - 1,
               refilled_at = clock_timestamp()
           where least($3, b.tokens + extract(epoch from clock_timestamp() - b.refilled_at)::float8 * $2) >= 1
           returning tokens"#,
        name,
        per_second,
        burst
    )
    .fetch_optional(db)
    .await?;
    Ok(taken.is_some())
}
