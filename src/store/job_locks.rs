//! Session-level advisory locks that make a periodic job run on one instance at a time. Taken on a
//! connection of the job's own, outside the pool: the lock lives exactly as long as that
//! connection, so an instance that dies mid-run (or drops the run) lets the next one take it, and
//! no pooled connection is ever handed on still holding a lock.

use sqlx::PgConnection;

/// Takes the lock if no other session holds it; never waits.
pub async fn try_lock(conn: &mut PgConnection, key: i64) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "locked!""#, key)
        .fetch_one(conn)
        .await
}

pub async fn unlock(conn: &mut PgConnection, key: i64) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!(r#"select pg_advisory_unlock($1) as "unlocked!""#, key)
        .fetch_one(conn)
        .await?;
    Ok(())
}
