//! `POST /subscription/change`: the user's running subscription moves to another subscription plan
//! through Stripe, which prorates the rest of the period and invoices the difference at once
//! (`always_invoice`: an upgrade is paid for now, and its credits come with that payment). What
//! the user holds changes only when Stripe's `customer.subscription.updated` arrives, as for a
//! change made in the billing portal (`lifecycle::plan_changes`).

use sqlx::PgPool;

use crate::{
    catalog::{Plan, PlanKind, find_active_plan},
    db,
    domain_error::DomainError,
    store::subscriptions,
    stripe::{
        StripeApi,
        lifecycle_objects::SubscriptionObject,
        retrieve::retrieve_subscription,
        subscription_update::{PriceChange, change_subscription_price, ensure_plan_product},
    },
};

/// The subscription as Stripe answered the change.
pub struct ChangedSubscription {
    pub subscription_id: String,
    pub plan_id: String,
    pub status: String,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

pub async fn change_plan(
    db: &PgPool,
    stripe: &StripeApi,
    user_id: &str,
    plan_id: &str,
) -> Result<ChangedSubscription, DomainError> {
    let (plan, live) = db::retry_idempotent(db, || async {
        let mut conn = db.acquire().await?;
        let plan = find_active_plan(&mut conn, plan_id).await?;
        let live = subscriptions::live_of_user(&mut conn, user_id).await?;
        Ok((plan, live))
    })
    .await?;
    let plan = checked_plan(plan)?;
    let live = live.ok_or(DomainError::NotFound {
        code: "no_subscription",
        message: "You have no running subscription to change.",
    })?;
    if live.plan_id.as_deref() == Some(plan.id.as_str()) {
        return Err(DomainError::Conflict {
            code: "same_plan",
            message: "Your subscription is already on that plan.",
        });
    }

    // No connection is held while Stripe answers.
    let current = retrieve_subscription(stripe, &live.stripe_subscription_id).await?;
    let item_id = first_item_id(&current)?;
    if plan.stripe_price.is_none() {
        ensure_plan_product(stripe, &plan).await?;
    }
    let change = PriceChange {
        subscription_id: &live.stripe_subscription_id,
        item_id: &item_id,
        plan: &plan,
        proration_behavior: "always_invoice",
    };
    let changed = change_subscription_price(stripe, &change).await?;
    tracing::info!(
        subscription_id = %live.stripe_subscription_id,
        plan_id = %plan.id,
        "subscription moved to another plan at Stripe"
    );
    Ok(ChangedSubscription {
        current_period_end: changed.current_period_end(),
        subscription_id: changed.id,
        plan_id: plan.id,
        status: changed.status,
        cancel_at_period_end: changed.cancel_at_period_end,
    })
}

fn checked_plan(plan: Option<Plan>) -> Result<Plan, DomainError> {
    let plan = plan.ok_or_else(|| DomainError::Invalid {
        code: "unknown_plan",
        message: "No active plan has that id.".into(),
    })?;
    if plan.kind != PlanKind::Subscription {
        return Err(DomainError::Invalid {
            code: "not_a_subscription_plan",
            message: "A subscription can only move to a subscription plan.".into(),
        });
    }
    Ok(plan)
}

fn first_item_id(subscription: &SubscriptionObject) -> Result<String, DomainError> {
    subscription
        .items
        .as_ref()
        .and_then(|items| items.data.first())
        .and_then(|item| item.id.clone())
        .ok_or(DomainError::NotFound {
            code: "no_subscription",
            message: "Stripe shows no item on your subscription.",
        })
}
