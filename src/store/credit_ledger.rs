//! `credit_ledger`: append-only; a balance is the sum of a user's rows. Every row names the event
//! that caused it; the unique keys make an order's purchase grant, and each event's adjustment of
//! one kind, happen at most once.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Why credits moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LedgerKind {
    Purchase,
    Refund,
    RefundReversal,
    Dispute,
    DisputeReversal,
}

/// What an order has given: its purchase, and what it still gives after every adjustment.
pub struct OrderCredits {
    pub purchased: i64,
    pub held: i64,
}

pub async fn order_credits(conn: &mut PgConnection, order_id: Uuid) -> Result<OrderCredits, sqlx::Error> {
    sqlx::query_as!(
        OrderCredits,
        r#"select coalesce(sum(delta) filter (where kind = 'purchase'), 0)::bigint as "purchased!",
                  coalesce(sum(delta), 0)::bigint as "held!"
           from credit_ledger where order_id = $1"#,
        order_id
    )
    .fetch_one(conn)
    .await
}

/// An order's purchase, once: a second grant by any path finds the row and adds nothing.
pub async fn grant_purchase_once(
    conn: &mut PgConnection,
    user_id: &str,
    order_id: Uuid,
    credits: i64,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into credit_ledger (user_id, order_id, kind, delta, stripe_event_id)
         values ($1, $2, 'purchase', $3, $4)
         on conflict do nothing",
        user_id,
        order_id,
        credits,
        event_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// An adjustment of the order's credits (a clawback, or one handed back) caused by `event_id`.
pub async fn adjust(
    conn: &mut PgConnection,
    user_id: &str,
    order_id: Uuid,
    kind: LedgerKind,
    delta: i64,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into credit_ledger (user_id, order_id, kind, delta, stripe_event_id)
         values ($1, $2, $3, $4, $5)",
        user_id,
        order_id,
        kind as LedgerKind,
        delta,
        event_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A user's balance: every row they have, so negative when a clawback took back credits already spent.
pub async fn user_balance(db: &PgPool, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select coalesce(sum(delta), 0)::bigint as "balance!" from credit_ledger where user_id = $1"#,
        user_id
    )
    .fetch_one(db)
    .await
}
