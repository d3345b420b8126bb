//! `charge.dispute.created` and `charge.dispute.closed`: a chargeback suspends what the payment
//! granted until the bank decides. Won (or closed without loss) restores it; lost keeps it taken.
//! Credits move as ledger rows keyed by the dispute, so each happens once.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{
    entitlement_state::{refresh_entitlement, set_hold},
    payment_owner::{LockedPaidOrder, credits_held_from, lock_order_for_payment},
};
use crate::{
    fulfillment::Outcome,
    orders::OrderStatus,
    stripe::{event::WebhookEvent, lifecycle_objects::DisputeObject},
};

pub async fn apply_dispute_event(
    conn: &mut PgConnection,
    event: &WebhookEvent,
) -> Result<(Outcome, Option<Uuid>), sqlx::Error> {
    let Some(dispute) = event.object_as::<DisputeObject>() else {
        return Ok((Outcome::MalformedObject, None));
    };
    let Some(payment_intent) = dispute.payment_intent.as_ref() else {
        tracing::warn!(dispute_id = %dispute.id, charge = ?dispute.charge, "dispute without a payment intent");
        return Ok((Outcome::NoMatchingOrder, None));
    };
    let Some(order) = lock_order_for_payment(conn, payment_intent.id()).await? else {
        return Ok((Outcome::NoMatchingOrder, None));
    };
    let outcome = if event.event_type == "charge.dispute.created" {
        open_dispute(conn, &order, &dispute, &event.id).await?
    } else {
        close_dispute(conn, &order, &dispute, &event.id).await?
    };
    Ok((outcome, Some(order.id)))
}

async fn open_dispute(
    conn: &mut PgConnection,
    order: &LockedPaidOrder,
    dispute: &DisputeObject,
    event_id: &str,
) -> Result<Outcome, sqlx::Error> {
    let first_heard = sqlx::query(
        "insert into disputes (stripe_dispute_id, order_id, status) values ($1, $2, 'open')
         on conflict do nothing",
    )
    .bind(&dispute.id)
    .bind(order.id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !first_heard {
        // Its `closed` came first and already settled it.
        return Ok(Outcome::StatusUnchanged);
    }
    if order.status == OrderStatus::Paid {
        set_order_status(conn, order.id, OrderStatus::Disputed).await?;
    }
    let held = credits_held_from(conn, order.id).await?;
    if held > 0 && !order.via_subscription {
        insert_credit_row(conn, order, "dispute", -held, event_id, &dispute.id).await?;
    }
    let detail = format!("dispute {} opened", dispute.id);
    set_hold(conn, order.id, Some("disputed"), event_id, &detail).await?;
    Ok(Outcome::Disputed)
}

async fn close_dispute(
    conn: &mut PgConnection,
    order: &LockedPaidOrder,
    dispute: &DisputeObject,
    event_id: &str,
) -> Result<Outcome, sqlx::Error> {
    let previous: Option<String> =
        sqlx::query_scalar("select status from disputes where stripe_dispute_id = $1 for update")
            .bind(&dispute.id)
            .fetch_optional(&mut *conn)
            .await?;
    sqlx::query(
        "insert into disputes (stripe_dispute_id, order_id, status) values ($1, $2, $3)
         on conflict (stripe_dispute_id) do update set status = excluded.status, updated_at = now()",
    )
    .bind(&dispute.id)
    .bind(order.id)
    .bind(&dispute.status)
    .execute(&mut *conn)
    .await?;
    let was_open = previous.as_deref() == Some("open");
    let lost = dispute.status == "lost";
    let detail = format!("dispute {} closed: {}", dispute.id, dispute.status);

    if lost {
        if order.status == OrderStatus::Disputed || order.status == OrderStatus::Paid {
            set_order_status(conn, order.id, OrderStatus::Refunded).await?;
        }
        // Normally `created` took them already; if it never came, the money is gone all the same.
        let held = credits_held_from(conn, order.id).await?;
        if held > 0 && !order.via_subscription {
            insert_credit_row(conn, order, "dispute", -held, event_id, &dispute.id).await?;
        }
        set_hold(conn, order.id, Some("dispute_lost"), event_id, &detail).await?;
        return Ok(Outcome::DisputeLost);
    }
    if was_open {
        if order.status == OrderStatus::Disputed {
            set_order_status(conn, order.id, OrderStatus::Paid).await?;
        }
        let clawed: Option<i64> = sqlx::query_scalar(
            "select -delta from credit_ledger where order_id = $1 and kind = 'dispute' and stripe_object_id = $2",
        )
        .bind(order.id)
        .bind(&dispute.id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(clawed) = clawed.filter(|c| *c > 0) {
            insert_credit_row(conn, order, "dispute_reversal", clawed, event_id, &dispute.id).await?;
        }
        // Only the dispute's own hold lifts: a refund's stays.
        sqlx::query("update entitlements set hold = null where order_id = $1 and hold = 'disputed'")
            .bind(order.id)
            .execute(&mut *conn)
            .await?;
        refresh_entitlement(conn, order.id, event_id, &detail).await?;
    }
    Ok(Outcome::DisputeWon)
}

async fn set_order_status(conn: &mut PgConnection, order_id: Uuid, status: OrderStatus) -> Result<(), sqlx::Error> {
    sqlx::query("update orders set status = $2, updated_at = now() where id = $1")
        .bind(order_id)
        .bind(status)
        .execute(conn)
        .await?;
    Ok(())
}

async fn insert_credit_row(
    conn: &mut PgConnection,
    order: &LockedPaidOrder,
    kind: &str,
    delta: i64,
    event_id: &str,
    stripe_object_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into credit_ledger (user_id, order_id, kind, delta, stripe_event_id, stripe_object_id)
         values ($1, $2, $3, $4, $5, $6)
         on conflict do nothing",
    )
    .bind(&order.user_id)
    .bind(order.id)
    .bind(kind)
    .bind(delta)
    .bind(event_id)
    .bind(stripe_object_id)
    .execute(conn)
    .await?;
    Ok(())
}
