//! The credit ledger aggregate: `credit_accounts` (one lock and one version per user),
//! `credit_grants` (what each purchase, period or manual grant has left), `credit_spends` (usage
//! and reservations, each named by its idempotency key) and `credit_ledger` (append-only, every
//! change a row naming its cause; a user's rows sum to available minus overdrawn).
//!
//! Every change goes through one SQL function of the migration `credit_spending`, which takes the
//! account's lock first: a debit is then one statement, so one user's lock is held for one round
//! trip and its commit.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Why credits moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum LedgerKind {
    Purchase,
    Period,
    ManualGrant,
    Usage,
    Reservation,
    ReservationRelease,
    Expiry,
    Refund,
    RefundReversal,
    Dispute,
    DisputeReversal,
}

impl LedgerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purchase => "purchase",
            Self::Period => "period",
            Self::ManualGrant => "manual_grant",
            Self::Usage => "usage",
            Self::Reservation => "reservation",
            Self::ReservationRelease => "reservation_release",
            Self::Expiry => "expiry",
            Self::Refund => "refund",
            Self::RefundReversal => "refund_reversal",
            Self::Dispute => "dispute",
            Self::DisputeReversal => "dispute_reversal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum GrantSource {
    Purchase,
    Period,
    Manual,
}

impl GrantSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purchase => "purchase",
            Self::Period => "period",
            Self::Manual => "manual",
        }
    }

    fn ledger_kind(self) -> LedgerKind {
        match self {
            Self::Purchase => LedgerKind::Purchase,
            Self::Period => LedgerKind::Period,
            Self::Manual => LedgerKind::ManualGrant,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SpendKind {
    Usage,
    Reservation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SpendStatus {
    /// A usage: spent when it was made.
    Spent,
    /// A reservation whose credits are held.
    Held,
    Committed,
    Released,
    /// A reservation that outlived its TTL and released itself.
    Expired,
}

/// How `credit_spend` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SpendOutcome {
    Spent,
    Replayed,
    KeyReused,
    Insufficient,
}

/// How `credit_settle_reservation` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SettleOutcome {
    Settled,
    /// It was settled this way before: the same answer again.
    Already,
    NotFound,
    Expired,
    /// Settled the other way before.
    Committed,
    Released,
    /// More credits than it holds.
    TooMany,
}

/// How `credit_grant` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum GrantOutcome {
    Granted,
    Replayed,
    KeyReused,
    /// The purchase or the period was granted before.
    Exists,
    /// A new manual grant whose expiry has come already: nothing was written.
    Past,
}

pub struct NewSpend<'a> {
    pub user_id: &'a str,
    pub kind: SpendKind,
    pub idempotency_key: &'a str,
    pub request_hash: &'a str,
    pub credits: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub description: Option<&'a str>,
    pub metadata: Option<&'a Value>,
}

pub struct SpendAnswer {
    pub outcome: SpendOutcome,
    pub spend_id: Option<Uuid>,
    pub credits: i64,
    pub status: Option<SpendStatus>,
    pub expires_at: Option<DateTime<Utc>>,
    pub available: i64,
}

/// A usage or a reservation, as one statement (its own transaction). It notifies nobody: the
/// `set_config` marks the transaction as one whose caller wakes the outbox after the commit
/// (`crate::wakeups`; the outbox triggers run at commit and read it then), so concurrent debits
/// commit together instead of one by one under the notification lock.
pub async fn spend(db: &PgPool, spend: &NewSpend<'_>) -> Result<SpendAnswer, sqlx::Error> {
    sqlx::query_as!(
        SpendAnswer,
        r#"select outcome as "outcome!: SpendOutcome", spend_id, credits as "credits!",
                  status as "status: SpendStatus", expires_at, available as "available!"
           from credit_spend($1, $2, $3, $4, $5, $6, $7, $8),
                set_config('entitle.wake_after_commit', 'on', true) as waking_after_commit"#,
        spend.user_id,
        spend.kind as SpendKind,
        spend.idempotency_key,
        spend.request_hash,
        spend.credits,
        spend.expires_at,
        spend.description,
        spend.metadata,
    )
    .fetch_one(db)
    .await
}

pub struct SettleAnswer {
    pub outcome: SettleOutcome,
    pub user_id: Option<String>,
    pub credits: Option<i64>,
    pub spent: Option<i64>,
    pub status: Option<SpendStatus>,
    pub expires_at: Option<DateTime<Utc>>,
    pub settled_at: Option<DateTime<Utc>>,
}

/// Commits (`commit`: spends `credits`, all when `None`) or releases a held reservation.
pub async fn settle_reservation(
    db: &PgPool,
    reservation_id: Uuid,
    commit: bool,
    credits: Option<i64>,
) -> Result<SettleAnswer, sqlx::Error> {
    sqlx::query_as!(
        SettleAnswer,
        r#"select outcome as "outcome!: SettleOutcome", user_id, credits, spent, status as "status: SpendStatus",
                  expires_at, settled_at
           from credit_settle_reservation($1, $2, $3)"#,
        reservation_id,
        commit,
        credits
    )
    .fetch_one(db)
    .await
}

pub struct NewGrant<'a> {
    pub user_id: &'a str,
    pub source: GrantSource,
    pub order_id: Option<Uuid>,
    pub stripe_invoice_id: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub credits: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub stripe_event_id: Option<&'a str>,
}

pub struct GrantAnswer {
    pub outcome: GrantOutcome,
    /// None when `Past`.
    pub grant_id: Option<Uuid>,
    pub granted: i64,
    pub remaining: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A grant, once: by the order for a purchase, by the invoice for a period, by the key for a
/// manual grant (whose replay answers what its first call did, even once it expired). Runs in the
/// caller's transaction (fulfilment grants with the order it marks paid).
pub async fn grant(conn: &mut PgConnection, grant: &NewGrant<'_>) -> Result<GrantAnswer, sqlx::Error> {
    sqlx::query_as!(
        GrantAnswer,
        r#"select outcome as "outcome!: GrantOutcome", grant_id, granted as "granted!",
                  remaining as "remaining!", expires_at
           from credit_grant($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"#,
        grant.user_id,
        grant.source as GrantSource,
        grant.source.ledger_kind() as LedgerKind,
        grant.order_id,
        grant.stripe_invoice_id,
        grant.idempotency_key,
        grant.request_hash,
        grant.reason,
        grant.credits,
        grant.expires_at,
        grant.stripe_event_id,
    )
    .fetch_one(conn)
    .await
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

/// An adjustment of the order's credits (a clawback, or one handed back) caused by `event_id`:
/// taken from what is left of the order's grant, then from the user's other credits, and owed
/// beyond that; handed back to the order's grant, paying what is owed first.
pub async fn adjust_order(
    conn: &mut PgConnection,
    user_id: &str,
    order_id: Uuid,
    kind: LedgerKind,
    delta: i64,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select credit_adjust_order($1, $2, $3, $4, $5)",
        user_id,
        order_id,
        kind as LedgerKind,
        delta,
        event_id
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// A user's credits now. `due` says something passed its time (a reservation's TTL, a grant's
/// expiry) and is not written yet: `expire` first, then read again.
pub struct Balance {
    pub available: i64,
    pub reserved: i64,
    pub overdrawn: i64,
    pub version: i64,
    pub due: bool,
}

pub async fn balance(db: &PgPool, user_id: &str) -> Result<Balance, sqlx::Error> {
    let mut one = balances(db, &[user_id.to_owned()]).await?;
    Ok(one.pop().expect("one answer per user asked"))
}

/// `balance` for many users in one query: one answer per user asked, in their order. The account
/// row's totals are the grants' and holds' as of the last change (migration 20261203000001),
/// right until `due_at`.
pub async fn balances(db: &PgPool, user_ids: &[String]) -> Result<Vec<Balance>, sqlx::Error> {
    sqlx::query_as!(
        Balance,
        r#"select coalesce(a.available, 0) as "available!",
                  coalesce(a.reserved, 0) as "reserved!",
                  coalesce(a.overdrawn, 0) as "overdrawn!",
                  coalesce(a.version, 0) as "version!",
                  coalesce(a.due_at <= now(), false) as "due!"
           from unnest($1::text[]) with ordinality as asked (user_id, n)
           left join credit_accounts a on a.user_id = asked.user_id
           order by asked.n"#,
        user_ids
    )
    .fetch_all(db)
    .await
}

/// Writes everything of the user's that passed its time, under their lock; how many changed.
pub async fn expire(db: &PgPool, user_id: &str) -> Result<i32, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query!("select user_id from credit_lock($1)", user_id)
        .fetch_one(&mut *tx)
        .await?;
    let changed = sqlx::query_scalar!(r#"select credit_expire($1) as "changed!""#, user_id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(changed)
}

/// Users with something past its time, for the periodic sweep.
pub async fn users_due(db: &PgPool, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select user_id as "user_id!" from (
               (select user_id from credit_spends where status = 'held' and expires_at <= now()
                order by expires_at limit $1)
               union
               (select user_id from credit_grants where remaining > 0 and expires_at <= now()
                order by expires_at limit $1)
           ) due"#,
        limit
    )
    .fetch_all(db)
    .await
}

pub struct GrantRow {
    pub id: Uuid,
    pub source: GrantSource,
    pub granted: i64,
    pub remaining: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub order_id: Option<Uuid>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// What the user can spend, grant by grant, in the order it is spent.
pub async fn spendable_grants(db: &PgPool, user_id: &str) -> Result<Vec<GrantRow>, sqlx::Error> {
    sqlx::query_as!(
        GrantRow,
        r#"select id, source as "source: GrantSource", granted, remaining, expires_at, order_id, reason, created_at
           from credit_grants
           where user_id = $1 and remaining > 0 and (expires_at is null or expires_at > now())
           order by expires_at nulls last, created_at, id"#,
        user_id
    )
    .fetch_all(db)
    .await
}

pub struct SpendRow {
    pub id: Uuid,
    pub user_id: String,
    pub kind: SpendKind,
    pub credits: i64,
    pub spent: i64,
    pub status: SpendStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
}

pub async fn find_spend(db: &PgPool, id: Uuid) -> Result<Option<SpendRow>, sqlx::Error> {
    sqlx::query_as!(
        SpendRow,
        r#"select id, user_id, kind as "kind: SpendKind", credits, spent, status as "status: SpendStatus", expires_at,
                  created_at, settled_at
           from credit_spends where id = $1"#,
        id
    )
    .fetch_optional(db)
    .await
}

pub struct LedgerRow {
    pub id: i64,
    pub kind: LedgerKind,
    pub delta: i64,
    pub order_id: Option<Uuid>,
    pub grant_id: Option<Uuid>,
    pub spend_id: Option<Uuid>,
    pub stripe_event_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The user's latest ledger rows, newest first.
pub async fn latest_rows(db: &PgPool, user_id: &str, limit: i64) -> Result<Vec<LedgerRow>, sqlx::Error> {
    sqlx::query_as!(
        LedgerRow,
        r#"select id, kind as "kind: LedgerKind", delta, order_id, grant_id, spend_id, stripe_event_id, created_at
           from credit_ledger where user_id = $1 order by id desc limit $2"#,
        user_id,
        limit
    )
    .fetch_all(db)
    .await
}

/// A page of the user's ledger rows, newest first: those older than the row `before` (by id), or
/// the latest when none. Keyed by id, so a page stays the same while new rows arrive.
pub async fn rows_before(
    db: &PgPool,
    user_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<LedgerRow>, sqlx::Error> {
    sqlx::query_as!(
        LedgerRow,
        r#"select id, kind as "kind: LedgerKind", delta, order_id, grant_id, spend_id, stripe_event_id, created_at
           from credit_ledger where user_id = $1 and ($2::bigint is null or id < $2) order by id desc limit $3"#,
        user_id,
        before,
        limit
    )
    .fetch_all(db)
    .await
}

/// A subscription period's grant and what refunds and disputes have taken of it so far.
pub struct PeriodGrant {
    pub id: Uuid,
    pub stripe_invoice_id: String,
    pub granted: i64,
    pub taken: i64,
}

/// The period grants the order's subscription earned.
pub async fn period_grants_of_order(conn: &mut PgConnection, order_id: Uuid) -> Result<Vec<PeriodGrant>, sqlx::Error> {
    sqlx::query_as!(
        PeriodGrant,
        r#"select g.id, g.stripe_invoice_id as "stripe_invoice_id!", g.granted,
                  coalesce(-(select sum(l.delta) from credit_ledger l
                             where l.grant_id = g.id
                               and l.kind in ('refund', 'refund_reversal', 'dispute', 'dispute_reversal')), 0)::bigint
                      as "taken!"
           from credit_grants g where g.source = 'period' and g.order_id = $1
           order by g.created_at, g.id"#,
        order_id
    )
    .fetch_all(conn)
    .await
}

/// As `adjust_order`, for one grant (a subscription period's).
pub async fn adjust_grant(
    conn: &mut PgConnection,
    user_id: &str,
    grant_id: Uuid,
    kind: LedgerKind,
    delta: i64,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select credit_adjust_grant($1, $2, $3, $4, $5)",
        user_id,
        grant_id,
        kind as LedgerKind,
        delta,
        event_id
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// The credits the order's regular invoice for the period ending at `period_end` granted (0 when
/// none did): what a proration tops up from. Proration invoices' own grants are not counted.
pub async fn period_rate(
    conn: &mut PgConnection,
    order_id: Uuid,
    period_end: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select coalesce(max(g.granted), 0)::bigint as "granted!" from credit_grants g
           where g.order_id = $1 and g.source = 'period' and g.expires_at = $2
             and not exists (select 1 from subscription_payments p
                             where p.stripe_invoice_id = g.stripe_invoice_id
                               and p.billing_reason = 'subscription_update')"#,
        order_id,
        period_end
    )
    .fetch_one(conn)
    .await
}
