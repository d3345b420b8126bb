//! `stripe_customers`: the one Stripe customer of each user. Rows are inserted with
//! `on conflict do nothing`, so of two checkouts racing to store a user's first customer the first
//! to commit wins and both then read the same row; a customer Stripe no longer has is replaced
//! in place, only if it is still the stored one.

use sqlx::PgConnection;

/// The user's customer id, if one is stored.
pub async fn find(conn: &mut PgConnection, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "select stripe_customer_id from stripe_customers where user_id = $1",
        user_id
    )
    .fetch_optional(conn)
    .await
}

/// Stores `customer_id` as the user's unless the user (or the customer) already has a row; either
/// way the caller reads the row back with `find`.
pub async fn insert_if_absent(
    conn: &mut PgConnection,
    user_id: &str,
    customer_id: &str,
    livemode: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into stripe_customers (user_id, stripe_customer_id, livemode)
         values ($1, $2, $3)
         on conflict do nothing",
        user_id,
        customer_id,
        livemode
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes the customer a completed session of the user's already named (one from before customers
/// were stored): the newest order's, a subscription's first, as subscriptions are what the billing
/// portal is for. Inserts nothing when no order names a customer.
pub async fn adopt_from_orders(conn: &mut PgConnection, user_id: &str, livemode: bool) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into stripe_customers (user_id, stripe_customer_id, livemode)
         select user_id, stripe_customer_id, $2
         from orders
         where user_id = $1 and stripe_customer_id is not null
         order by stripe_subscription_id is not null desc, created_at desc
         limit 1
         on conflict do nothing",
        user_id,
        livemode
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores `new` as the user's customer in place of `gone`, unless another checkout replaced it
/// first; either way the caller reads the row back with `find`. The row is kept, not deleted, so
/// the old customer is not taken again from the user's orders.
pub async fn replace(
    conn: &mut PgConnection,
    user_id: &str,
    gone: &str,
    new: &str,
    livemode: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update stripe_customers set stripe_customer_id = $3, livemode = $4
         where user_id = $1 and stripe_customer_id = $2",
        user_id,
        gone,
        new,
        livemode
    )
    .execute(conn)
    .await?;
    Ok(())
}
