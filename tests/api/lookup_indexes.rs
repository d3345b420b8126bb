//! The lookups that refund, dispute and subscription events make find their rows through an index,
//! so their cost does not grow with the number of orders. The test tables are tiny, where Postgres
//! rightly prefers reading everything, so sequential scans are switched off to ask: could an index
//! serve this at all?

use sqlx::Connection;

use crate::helpers::TestApp;

#[tokio::test]
async fn order_lookups_by_payment_intent_and_subscription_and_entitlements_by_order_use_an_index() {
    let app = TestApp::spawn().await;
    let mut conn = app.db.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("set local enable_seqscan = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    for lookup in [
        "select id from orders where stripe_payment_intent_id = 'pi_1'",
        "select id from orders where stripe_subscription_id = 'sub_1' limit 1",
        "select 1 from entitlements where order_id = gen_random_uuid()",
    ] {
        let plan: Vec<String> = sqlx::query_scalar(&format!("explain {lookup}"))
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(
            plan.contains("Index") && !plan.contains("Seq Scan"),
            "{lookup} reads the whole table:\n{plan}"
        );
    }
}
