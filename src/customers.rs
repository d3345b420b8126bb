//! One Stripe customer per user. The first checkout makes it (or takes the one an earlier completed
//! session named) and every later Checkout Session is sent it, so Stripe keeps every payment and
//! subscription of the user under one customer, and the billing portal shows them all.

use sqlx::PgPool;

use crate::{
    db,
    domain_error::DomainError,
    store::stripe_customers,
    stripe::{StripeApi, billing_portal::create_portal_session, customers::create_customer},
};

/// The user's customer, made at Stripe when they have none yet. Two first checkouts at once both
/// ask Stripe with the user's one idempotency key and get one customer; the first to store it wins
/// and both read the stored one. No connection is held while Stripe answers.
pub async fn customer_for_checkout(
    db: &PgPool,
    stripe: &StripeApi,
    user_id: &str,
    livemode: bool,
) -> Result<String, DomainError> {
    if let Some(customer) = stored_customer(db, user_id, livemode).await? {
        return Ok(customer);
    }
    make_customer(db, stripe, user_id, livemode, None).await
}

/// Stripe no longer has the user's stored customer `gone` (it was deleted in the Dashboard): a new
/// one is made and stored in its place, so the user can check out again instead of meeting a 502
/// on every attempt. Checkouts racing to replace it ask Stripe with one key and store one customer.
pub async fn replace_customer(
    db: &PgPool,
    stripe: &StripeApi,
    user_id: &str,
    livemode: bool,
    gone: &str,
) -> Result<String, DomainError> {
    tracing::warn!(
        user_id,
        customer_id = gone,
        "stripe has no such customer any more (deleted?); making a new one"
    );
    make_customer(db, stripe, user_id, livemode, Some(gone)).await
}

async fn make_customer(
    db: &PgPool,
    stripe: &StripeApi,
    user_id: &str,
    livemode: bool,
    replacing: Option<&str>,
) -> Result<String, DomainError> {
    let created = match create_customer(stripe, user_id, replacing).await {
        Ok(created) => created,
        Err(err) => {
            // A concurrent first checkout holding the user's key is answered before this one's
            // retries: the customer it stored meanwhile serves this checkout too.
            if let Some(customer) = stored_customer(db, user_id, livemode).await?
                && Some(customer.as_str()) != replacing
            {
                return Ok(customer);
            }
            return Err(err.into());
        }
    };
    let stored = db::retry_idempotent(db, || async {
        let mut conn = db.acquire().await?;
        match replacing {
            None => stripe_customers::insert_if_absent(&mut conn, user_id, &created.id, created.livemode).await?,
            Some(gone) => stripe_customers::replace(&mut conn, user_id, gone, &created.id, created.livemode).await?,
        }
        stripe_customers::find(&mut conn, user_id).await
    })
    .await?;
    tracing::info!(user_id, customer_id = %created.id, "stripe customer created");
    // None only if another user's row holds this customer, which the per-user key rules out:
    // sending it would show one user's billing to another, so the checkout stops instead.
    stored.ok_or(DomainError::Conflict {
        code: "billing_account_conflict",
        message: "Your billing account could not be set up. Please contact support.",
    })
}

/// A portal session for the user's customer: its URL, which returns to `return_url`. A user who
/// never checked out has no customer and so nothing to manage.
pub async fn open_billing_portal(
    db: &PgPool,
    stripe: &StripeApi,
    user_id: &str,
    livemode: bool,
    return_url: &str,
) -> Result<String, DomainError> {
    let customer = stored_customer(db, user_id, livemode)
        .await?
        .ok_or(DomainError::NotFound {
            code: "no_billing_account",
            message: "You have no billing account yet: one is made with your first purchase.",
        })?;
    Ok(create_portal_session(stripe, &customer, return_url).await?)
}

/// The stored customer, or the one the user's completed sessions named, stored now (`livemode` is
/// the service's mode: an order keeps no mode of its own).
async fn stored_customer(db: &PgPool, user_id: &str, livemode: bool) -> Result<Option<String>, sqlx::Error> {
    db::retry_idempotent(db, || async {
        let mut conn = db.acquire().await?;
        if let Some(customer) = stripe_customers::find(&mut conn, user_id).await? {
            return Ok(Some(customer));
        }
        stripe_customers::adopt_from_orders(&mut conn, user_id, livemode).await?;
        stripe_customers::find(&mut conn, user_id).await
    })
    .await
}
