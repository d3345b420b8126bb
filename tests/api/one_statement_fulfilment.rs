//! The common webhook in one statement (`store::orders::fulfil_one_time_checkout`): it fulfils
//! exactly the paid one-time checkouts the Rust path would fulfil without a second look, and
//! hands every other one back claimed, locked and otherwise untouched. Called directly here, each
//! case in a transaction that is rolled back; the webhook tests run it through `process_event`.

use entitle::store::orders::{self, OneStatement, OneTimeCheckout};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::helpers::TestApp;

/// A session that paid exactly what `credits_100` costs.
fn paid<'a>(event_id: &'a str, session_id: &'a str) -> OneTimeCheckout<'a> {
    OneTimeCheckout {
        event_id,
        event_type: "checkout.session.completed",
        event_created: 1_700_000_000,
        session_id,
        order_id: None,
        payment_intent: "pi_direct",
        customer: Some("cus_direct"),
        buyer_email: Some("buyer@example.com"),
        currency: Some("usd"),
        subtotal: Some(500),
        total: Some(500),
        discount: 0,
        tax: 0,
        adds_up: true,
    }
}

struct Written {
    status: String,
    ledger: i64,
    outcome: Option<String>,
    amount_paid: Option<i64>,
    payment_intent: Option<String>,
    buyer_email: Option<String>,
}

async fn written(conn: &mut PgConnection, order_id: Uuid, event_id: &str) -> Written {
    let (status, amount_paid, payment_intent, buyer_email): (String, Option<i64>, Option<String>, Option<String>) =
        sqlx::query_as("select status, amount_paid, stripe_payment_intent_id, buyer_email from orders where id = $1")
            .bind(order_id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let ledger: i64 =
        sqlx::query_scalar("select coalesce(sum(delta), 0)::bigint from credit_ledger where order_id = $1")
            .bind(order_id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let outcome: Option<String> =
        sqlx::query_scalar("select outcome from processed_webhook_events where event_id = $1")
            .bind(event_id)
            .fetch_optional(&mut *conn)
            .await
            .unwrap();
    Written {
        status,
        ledger,
        outcome,
        amount_paid,
        payment_intent,
        buyer_email,
    }
}

async fn begin(app: &TestApp) -> Transaction<'static, Postgres> {
    app.db.begin().await.unwrap()
}

#[tokio::test]
async fn given_a_pending_order_paid_as_priced_then_one_statement_pays_grants_and_records_it_once() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let checkout = OneTimeCheckout {
        // Stripe's currency codes are lower-case; the Rust path compares them ignoring ASCII case.
        currency: Some("USD"),
        ..paid("evt_one", &session_id)
    };

    let mut tx = app.db.begin().await.unwrap();
    let first = orders::fulfil_one_time_checkout(&mut tx, &checkout).await.unwrap();
    assert_eq!(
        first,
        OneStatement::Fulfilled {
            order_id,
            user_id: "alice".into(),
            credits: 100
        }
    );
    let again = orders::fulfil_one_time_checkout(&mut tx, &checkout).await.unwrap();
    assert_eq!(again, OneStatement::Duplicate);
    tx.commit().await.unwrap();

    let mut conn = app.db.acquire().await.unwrap();
    let w = written(&mut conn, order_id, "evt_one").await;
    assert_eq!(w.status, "paid");
    assert_eq!(w.ledger, 100);
    assert_eq!(w.outcome.as_deref(), Some("fulfilled"));
    assert_eq!(w.amount_paid, Some(500));
    assert_eq!(w.payment_intent.as_deref(), Some("pi_direct"));
    assert_eq!(w.buyer_email.as_deref(), Some("buyer@example.com"));
    assert_eq!(app.credits("alice").await, 100);
}

#[tokio::test]
async fn given_anything_but_the_common_case_then_the_event_is_handed_back_claimed_with_nothing_else_written() {
    let app = TestApp::spawn().await;
    let (order_id, session_id) = app.checkout("bob", "credits_100").await;
    let (lifetime_order, lifetime_session) = app.checkout("bob", "pro_lifetime").await;

    let other_session = format!("{session_id}_other");
    let cases: Vec<(&str, OneTimeCheckout<'_>)> = vec![
        (
            "a subtotal that is not the price",
            OneTimeCheckout {
                subtotal: Some(499),
                total: Some(499),
                ..paid("evt_a", &session_id)
            },
        ),
        (
            "a total that does not add up",
            OneTimeCheckout {
                adds_up: false,
                ..paid("evt_b", &session_id)
            },
        ),
        (
            "another currency",
            OneTimeCheckout {
                currency: Some("eur"),
                ..paid("evt_c", &session_id)
            },
        ),
        (
            "no currency",
            OneTimeCheckout {
                currency: None,
                ..paid("evt_d", &session_id)
            },
        ),
        (
            "no subtotal",
            OneTimeCheckout {
                subtotal: None,
                ..paid("evt_e", &session_id)
            },
        ),
        (
            "a session the order was not opened with, naming the order",
            OneTimeCheckout {
                order_id: Some(order_id),
                ..paid("evt_f", &other_session)
            },
        ),
    ];
    for (case, checkout) in &cases {
        let mut tx = begin(&app).await;
        let answer = orders::fulfil_one_time_checkout(&mut tx, checkout).await.unwrap();
        assert_eq!(answer, OneStatement::Claimed, "{case}");
        let w = written(&mut tx, order_id, checkout.event_id).await;
        assert_eq!((w.status.as_str(), w.ledger), ("pending", 0), "{case}");
        assert_eq!(w.outcome.as_deref(), Some("processing"), "{case}: the id is claimed");
        assert_eq!(w.payment_intent, None, "{case}");
        tx.rollback().await.unwrap();
    }

    // An order that also grants an entitlement.
    let mut tx = begin(&app).await;
    let checkout = OneTimeCheckout {
        subtotal: Some(9900),
        total: Some(9900),
        ..paid("evt_g", &lifetime_session)
    };
    let answer = orders::fulfil_one_time_checkout(&mut tx, &checkout).await.unwrap();
    assert_eq!(answer, OneStatement::Claimed, "an entitlement");
    assert_eq!(written(&mut tx, lifetime_order, "evt_g").await.status, "pending");
    tx.rollback().await.unwrap();

    // Something already on file about the payment (a charge an earlier refund event recorded).
    let mut tx = begin(&app).await;
    sqlx::query(
        "insert into payment_charges (stripe_charge_id, stripe_payment_intent_id, amount, amount_refunded, seen_at)
         values ('ch_direct', 'pi_direct', 500, 500, 1)",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    let answer = orders::fulfil_one_time_checkout(&mut tx, &paid("evt_h", &session_id))
        .await
        .unwrap();
    assert_eq!(answer, OneStatement::Claimed, "a reversal on file");
    assert_eq!(written(&mut tx, order_id, "evt_h").await.ledger, 0);
    tx.rollback().await.unwrap();

    // An order no longer pending.
    let mut tx = begin(&app).await;
    sqlx::query("update orders set status = 'canceled' where id = $1")
        .bind(order_id)
        .execute(&mut *tx)
        .await
        .unwrap();
    let answer = orders::fulfil_one_time_checkout(&mut tx, &paid("evt_i", &session_id))
        .await
        .unwrap();
    assert_eq!(answer, OneStatement::Claimed, "a canceled order");
    assert_eq!(written(&mut tx, order_id, "evt_i").await.ledger, 0);
    tx.rollback().await.unwrap();

    // No order at all.
    let mut tx = begin(&app).await;
    let answer = orders::fulfil_one_time_checkout(&mut tx, &paid("evt_j", "cs_nobody"))
        .await
        .unwrap();
    assert_eq!(answer, OneStatement::Claimed, "no order");
    tx.rollback().await.unwrap();

    // And the same payment, as priced, is still fulfilled afterwards: nothing above stuck.
    let mut tx = begin(&app).await;
    let answer = orders::fulfil_one_time_checkout(&mut tx, &paid("evt_k", &session_id))
        .await
        .unwrap();
    assert!(matches!(answer, OneStatement::Fulfilled { .. }), "{answer:?}");
    tx.rollback().await.unwrap();
}
