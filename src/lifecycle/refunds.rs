//! `charge.refunded`: money went back, so what it bought goes back. Stripe's charge carries the
//! running total refunded; we claw back the same share of the order's credits (rounded down, so a
//! buyer never loses more than they got back), minus what earlier refunds already took, keyed by
//! that total so a redelivery or an older event arriving late claws nothing more.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    entitlement_state::set_hold,
    payment_owner::{LockedPaidOrder, lock_order_for_payment},
};
use crate::{
    fulfillment::Outcome,
    orders::OrderStatus,
    stripe::{event::WebhookEvent, lifecycle_objects::ChargeObject},
};

pub async fn apply_charge_refunded(
    conn: &mut PgConnection,
    event: &WebhookEvent,
) -> Result<(Outcome, Option<Uuid>), sqlx::Error> {
    let Some(charge) = event.object_as::<ChargeObject>() else {
        return Ok((Outcome::MalformedObject, None));
    };
    let Some(payment_intent) = charge.payment_intent.as_ref() else {
        return Ok((Outcome::NoMatchingOrder, None));
    };
    let Some(order) = lock_order_for_payment(conn, payment_intent.id()).await? else {
        return Ok((Outcome::NoMatchingOrder, None));
    };
    let fully_refunded = charge.amount > 0 && charge.amount_refunded >= charge.amount;

    if !order.via_subscription {
        record_refund_on_order(conn, &order, charge.amount_refunded, fully_refunded).await?;
        claw_back_credits(conn, &order, &charge, &event.id).await?;
    }
    if fully_refunded {
        let detail = format!("charge {} refunded in full", charge.id);
        set_hold(conn, order.id, Some("refunded"), &event.id, &detail).await?;
        Ok((Outcome::Refunded, Some(order.id)))
    } else {
        Ok((Outcome::PartiallyRefunded, Some(order.id)))
    }
}

async fn record_refund_on_order(
    conn: &mut PgConnection,
    order: &LockedPaidOrder,
    amount_refunded: i64,
    fully_refunded: bool,
) -> Result<(), sqlx::Error> {
    let status = if fully_refunded && matches!(order.status, OrderStatus::Paid | OrderStatus::Disputed) {
        OrderStatus::Refunded
    } else {
        order.status
    };
    sqlx::query(
        "update orders set amount_refunded = greatest(amount_refunded, $2), status = $3, updated_at = now()
         where id = $1",
    )
    .bind(order.id)
    .bind(amount_refunded)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

async fn claw_back_credits(
    conn: &mut PgConnection,
    order: &LockedPaidOrder,
    charge: &ChargeObject,
    event_id: &str,
) -> Result<(), sqlx::Error> {
    let (purchased, already_clawed): (i64, i64) = sqlx::query_as(
        "select coalesce(sum(delta) filter (where kind = 'purchase'), 0)::bigint,
                coalesce(-sum(delta) filter (where kind <> 'purchase'), 0)::bigint
         from credit_ledger where order_id = $1",
    )
    .bind(order.id)
    .fetch_one(&mut *conn)
    .await?;
    // What refunds owe back is a share of the purchase; what a lost dispute already took counts
    // towards it, so refunds and disputes together never take back more than was bought.
    let owed = credits_owed_back(purchased, charge.amount_refunded, charge.amount);
    if owed <= already_clawed {
        return Ok(());
    }
    sqlx::query(
        "insert into credit_ledger (user_id, order_id, kind, delta, stripe_event_id, stripe_object_id)
         values ($1, $2, 'refund', $3, $4, $5)
         on conflict do nothing",
    )
    .bind(&order.user_id)
    .bind(order.id)
    .bind(already_clawed - owed)
    .bind(event_id)
    .bind(format!("{}:{}", charge.id, charge.amount_refunded))
    .execute(conn)
    .await?;
    Ok(())
}

/// The credits a refund of `refunded` out of `charged` takes back, rounded down.
pub fn credits_owed_back(purchased: i64, refunded: i64, charged: i64) -> i64 {
    if charged <= 0 || refunded >= charged {
        return purchased;
    }
    (i128::from(purchased) * i128::from(refunded.max(0)) / i128::from(charged)) as i64
}

#[cfg(test)]
mod tests {
    use super::credits_owed_back;

    #[test]
    fn refunds_claw_back_proportionally_rounded_down() {
        assert_eq!(credits_owed_back(100, 500, 500), 100);
        assert_eq!(credits_owed_back(100, 250, 500), 50);
        assert_eq!(credits_owed_back(100, 333, 500), 66);
        assert_eq!(credits_owed_back(100, 1, 500), 0);
        assert_eq!(credits_owed_back(100, 600, 500), 100);
    }
}
