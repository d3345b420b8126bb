//! Opening a purchase. The order is written first, so every Checkout Session Stripe knows of has an
//! order here to fulfil; only then is Stripe asked for the session. What the order costs and grants
//! is fixed here, from the catalog as it is now.

use std::time::Duration;

use sqlx::PgPool;
use stripe::StripeError;
use uuid::Uuid;

use crate::{
    catalog::{Plan, PlanKind, find_active_plan},
    checkout_limits::CheckoutLimiter,
    customers::{customer_for_checkout, replace_customer},
    db,
    domain_error::DomainError,
    entitlement,
    fulfillment::end_pending_order,
    orders::OrderStatus,
    store::{entitlements, orders},
    stripe::{
        CheckoutRequest, CreatedSession, ProviderError, create_checkout_session, expire_checkout_session, failure,
    },
    subscription_checkout::{checkout_in_progress, close_open_checkout, is_open_checkout_conflict},
};

/// What opening a checkout needs from the running service.
pub struct CheckoutContext<'a> {
    pub db: &'a PgPool,
    pub stripe: &'a crate::stripe::StripeApi,
    pub limiter: &'a CheckoutLimiter,
    /// Where Stripe sends the buyer back.
    pub app_base_url: &'a str,
    pub entitlement_grace: Duration,
    /// `AUTOMATIC_TAX`: every session asks Stripe Tax for the tax.
    pub automatic_tax: bool,
    /// The Stripe mode's `livemode`, stored with a customer taken from an earlier order.
    pub livemode: bool,
}

pub struct OpenedCheckout {
    pub order_id: Uuid,
    /// Stripe's hosted page for the session.
    pub checkout_url: String,
}

/// Opens a checkout of `plan_id` for `user_id`: the pending order, then Stripe's session.
pub async fn open_checkout(
    ctx: &CheckoutContext<'_>,
    user_id: &str,
    plan_id: &str,
) -> Result<OpenedCheckout, DomainError> {
    // The plan is read first on the connection the order is then written on: once that read
    // answered, the connection is alive.
    let (mut conn, plan) = db::retry_idempotent(ctx.db, || async {
        let mut conn = ctx.db.acquire().await?;
        let plan = find_active_plan(&mut conn, plan_id).await?;
        Ok((conn, plan))
    })
    .await?;
    let plan = plan.ok_or(DomainError::NotFound {
        code: "plan_not_found",
        message: "No active plan has that id.",
    })?;
    if plan.kind == PlanKind::Subscription
        && holds_live_subscription(&mut conn, user_id, plan.entitlement.as_deref(), ctx.entitlement_grace).await?
    {
        // A second subscription would bill twice for one entitlement.
        return Err(DomainError::Conflict {
            code: "already_subscribed",
            message: "You already hold this plan's entitlement through an active subscription.",
        });
    }
    // Admitted and written in one transaction, so the per-user count holds under concurrency;
    // a refusal leaves no order and asks Stripe nothing.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    ctx.limiter.admit(&mut tx, user_id).await?;
    let inserted = match insert_pending_order(&mut tx, user_id, &plan).await {
        Ok(order_id) => tx.commit().await.map(|()| order_id),
        // Rolled back; an open checkout's conflict is handled below, outside it.
        Err(err) => {
            drop(tx);
            Err(err)
        }
    };
    // Not held across the calls to Stripe, which may take seconds.
    drop(conn);
    let order_id = match inserted {
        Err(err) if is_open_checkout_conflict(&err) => reopen_subscription_checkout(ctx, user_id, &plan).await?,
        inserted => inserted?,
    };

    let session = match create_session(ctx, order_id, user_id, &plan).await {
        Ok(session) => session,
        Err(err) => {
            // Whichever of the two Stripe calls failed, the order can no longer be paid.
            end_pending_order(ctx.db, order_id, OrderStatus::Failed).await?;
            return Err(err);
        }
    };

    // Stripe has the session now: a connection that died in the pool meanwhile must not turn this
    // into an error the buyer can only answer by starting over.
    db::retry_idempotent(ctx.db, || orders::set_session(ctx.db, order_id, &session.id)).await?;
    tracing::info!(%order_id, plan_id = %plan.id, session_id = %session.id, "checkout session created");
    Ok(OpenedCheckout {
        order_id,
        checkout_url: session.url,
    })
}

/// Stripe's session for the order, sent with the user's customer (made first on a first checkout).
async fn create_session(
    ctx: &CheckoutContext<'_>,
    order_id: Uuid,
    user_id: &str,
    plan: &Plan,
) -> Result<CreatedSession, DomainError> {
    let customer = customer_for_checkout(ctx.db, ctx.stripe, user_id, ctx.livemode).await?;
    let checkout = |customer| CheckoutRequest {
        order_id,
        user_id,
        plan,
        app_base_url: ctx.app_base_url,
        automatic_tax: ctx.automatic_tax,
        customer,
    };
    match create_checkout_session(ctx.stripe, checkout(&customer)).await {
        // The stored customer was deleted at Stripe: once, with a new one. Stripe keeps nothing
        // under the session's idempotency key for a request it refused, so the key serves again.
        Err(ProviderError::Stripe(err)) if failure::is_missing(&err, "customer") => {
            let replaced = replace_customer(ctx.db, ctx.stripe, user_id, ctx.livemode, &customer).await?;
            Ok(create_checkout_session(ctx.stripe, checkout(&replaced)).await?)
        }
        created => Ok(created?),
    }
}

/// The user already has an open checkout for this subscription (see `subscription_checkout`):
/// it is closed at Stripe, and the order is written again.
async fn reopen_subscription_checkout(
    ctx: &CheckoutContext<'_>,
    user_id: &str,
    plan: &Plan,
) -> Result<Uuid, DomainError> {
    let entitlement = plan.entitlement.as_deref().unwrap_or_default();
    close_open_checkout(ctx.db, ctx.stripe, user_id, entitlement).await?;
    let mut conn = ctx.db.acquire().await?;
    insert_pending_order(&mut conn, user_id, plan).await.map_err(|err| {
        // Yet another checkout for it took the place first.
        if is_open_checkout_conflict(&err) {
            checkout_in_progress()
        } else {
            err.into()
        }
    })
}

async fn insert_pending_order(conn: &mut sqlx::PgConnection, user_id: &str, plan: &Plan) -> Result<Uuid, sqlx::Error> {
    let order = orders::NewOrder {
        id: Uuid::new_v4(),
        user_id,
        plan_id: &plan.id,
        amount: plan.amount,
        currency: &plan.currency,
        credits: plan.credits,
        credits_expire_after_days: plan.credits_expire_after_days,
        credits_per_period: plan.credits_per_period,
        entitlement: plan.entitlement.as_deref(),
        trial_days: match plan.kind {
            PlanKind::Subscription => plan.trial_days,
            PlanKind::OneTime => None,
        },
        subscription_entitlement: match plan.kind {
            PlanKind::Subscription => plan.entitlement.as_deref(),
            PlanKind::OneTime => None,
        },
    };
    orders::insert_pending(conn, &order).await?;
    Ok(order.id)
}

/// Whether the user already has the plan's entitlement through a subscription that grants it now:
/// a second subscription would bill twice for one entitlement.
async fn holds_live_subscription(
    conn: &mut sqlx::PgConnection,
    user_id: &str,
    key: Option<&str>,
    grace: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let Some(key) = key else {
        return Ok(false);
    };
    let held = entitlements::subscribed(conn, user_id, key).await?;
    Ok(held.is_some_and(|held| {
        entitlement::access(
            held.status,
            held.current_period_end,
            held.cancel_at_period_end,
            chrono::Utc::now(),
            grace,
        )
        .active
    }))
}

/// The buyer gave up: the open session is expired at Stripe so it cannot be paid later from a
/// forgotten tab. The order becomes `canceled` when Stripe's `checkout.session.expired` arrives.
/// Another user's order is not found, exactly like one that does not exist.
pub async fn cancel_checkout(
    db: &PgPool,
    stripe: &crate::stripe::StripeApi,
    user_id: &str,
    order_id: Uuid,
) -> Result<(), DomainError> {
    let order = db::retry_idempotent(db, || orders::owned_checkout(db, order_id, user_id))
        .await?
        .ok_or(DomainError::NotFound {
            code: "order_not_found",
            message: "No order with that id belongs to you.",
        })?;
    let (OrderStatus::Pending, Some(session_id)) = (order.status, order.session_id) else {
        return Err(not_cancelable());
    };
    match expire_checkout_session(stripe, &session_id).await {
        Ok(()) => Ok(()),
        // Stripe refuses to expire a session that completed meanwhile (the payment wins), and does
        // not know one it never kept (e.g. the emulator after a restart): neither can be canceled.
        Err(ProviderError::Stripe(StripeError::Stripe(_, 400 | 404))) => Err(not_cancelable()),
        Err(err) => Err(DomainError::PaymentProvider(err)),
    }
}

fn not_cancelable() -> DomainError {
    DomainError::Conflict {
        code: "order_not_cancelable",
        message: "Only a pending checkout can be canceled.",
    }
}
