//! Generated histories of a purchase and its reversals (partial, full, failed and canceled refunds;
//! inquiries and chargebacks opened, escalated, won, lost or closed), each enacted on two identical
//! purchases. One twin gets its events in order; the other in a random order with duplicates,
//! through the webhook (some histories all at once) and, for some, partly through the reconciler. Then both must hold
//! exactly the same, and that must respect the invariants: credits never above the purchase less
//! its refunded share, no access while a full refund, a lost or an open dispute stands.
//!
//! `REVERSAL_SEED=<n>` replays a run; `REVERSAL_HISTORIES=<n>` sets how many (default 300).

use chrono::Utc;
use entitle::config::{CheckoutLimits, Rate};
use futures::{StreamExt, stream};
use serde_json::Value;

use crate::{
    helpers::{Options, TestApp},
    lifecycle_helpers::Purchase,
};

const PLAN: &str = "pro_lifetime";
const PRICE: i64 = 9900;
const CREDITS: i64 = 100;
const BATCH: usize = 25;

/// SplitMix64: small, seedable, good enough to shuffle with.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Refund this much, or everything left.
    Refund(Option<i64>),
    /// The n-th refund fails or is canceled.
    Undo(usize, &'static str),
    Open {
        inquiry: bool,
    },
    /// `charge.dispute.updated` to this open status.
    Update(&'static str),
    Close(&'static str),
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum DisputeStage {
    None,
    Inquiry,
    Chargeback,
    Closed,
}

/// A history Stripe could produce: refunds only of what is left, undoing only live refunds, one
/// dispute per charge that moves forward.
fn generate(rng: &mut Rng) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut refunds: Vec<(i64, bool)> = Vec::new();
    let mut stage = DisputeStage::None;
    for _ in 0..1 + rng.below(6) {
        let refunded: i64 = refunds.iter().filter(|(_, live)| *live).map(|(a, _)| a).sum();
        let left = PRICE - refunded;
        let live: Vec<usize> = (0..refunds.len()).filter(|&i| refunds[i].1).collect();
        let mut options: Vec<Step> = Vec::new();
        if left > 0 {
            options.push(Step::Refund(None));
            options.push(Step::Refund(Some(1 + rng.below(left as usize) as i64)));
        }
        if !live.is_empty() {
            let which = live[rng.below(live.len())];
            options.push(Step::Undo(which, if rng.chance(50) { "failed" } else { "canceled" }));
        }
        match stage {
            DisputeStage::None => options.push(Step::Open {
                inquiry: rng.chance(50),
            }),
            DisputeStage::Inquiry => {
                options.push(Step::Update("warning_under_review"));
                options.push(Step::Update("needs_response"));
                options.push(Step::Close("warning_closed"));
            }
            DisputeStage::Chargeback => {
                options.push(Step::Update("under_review"));
                options.push(Step::Close("won"));
                options.push(Step::Close("lost"));
            }
            DisputeStage::Closed => {}
        }
        let step = options.swap_remove(rng.below(options.len()));
        match &step {
            Step::Refund(amount) => refunds.push((amount.unwrap_or(left), true)),
            Step::Undo(i, _) => refunds[*i].1 = false,
            Step::Open { inquiry: true } => stage = DisputeStage::Inquiry,
            Step::Open { inquiry: false } | Step::Update("needs_response") => stage = DisputeStage::Chargeback,
            Step::Update(_) => {}
            Step::Close(_) => stage = DisputeStage::Closed,
        }
        steps.push(step);
    }
    steps
}

/// What Stripe holds at the end of a history: the truth the invariants are checked against.
#[derive(Debug, Default)]
struct Truth {
    refunded: i64,
    dispute: Option<&'static str>,
}

/// Enacts the steps at the emulator on the purchase's charge; returns its events, oldest first.
fn enact(app: &TestApp, purchase: &Purchase, steps: &[Step]) -> (Vec<Value>, Truth) {
    let charge = app.charge_of(purchase);
    let mut events = purchase.events.clone();
    let mut refund_ids = Vec::new();
    let mut dispute_id = None;
    let mut truth = Truth::default();
    for step in steps {
        match step {
            Step::Refund(amount) => {
                let (id, refund_events) = app.emulator.refund(&charge, *amount).expect("something left to refund");
                refund_ids.push(id);
                events.extend(refund_events);
            }
            Step::Undo(i, status) => events.extend(app.emulator.undo_refund(&refund_ids[*i], status).unwrap()),
            Step::Open { inquiry } => {
                let (id, opened) = if *inquiry {
                    app.emulator.open_inquiry(&charge)
                } else {
                    app.emulator.open_dispute(&charge)
                }
                .unwrap();
                truth.dispute = Some(if *inquiry {
                    "warning_needs_response"
                } else {
                    "needs_response"
                });
                dispute_id = Some(id);
                events.push(opened);
            }
            Step::Update(status) => {
                truth.dispute = Some(status);
                events.push(
                    app.emulator
                        .update_dispute(dispute_id.as_ref().unwrap(), status)
                        .unwrap(),
                );
            }
            Step::Close(status) => {
                truth.dispute = Some(status);
                events.push(
                    app.emulator
                        .close_dispute_as(dispute_id.as_ref().unwrap(), status)
                        .unwrap(),
                );
            }
        }
    }
    truth.refunded = app.emulator.charge(&charge).unwrap()["amount_refunded"]
        .as_i64()
        .unwrap();
    (events, truth)
}

/// What the service says the buyer holds.
#[derive(Debug, PartialEq)]
struct Held {
    credits: i64,
    order_status: String,
    amount_refunded: i64,
    entitlement: String,
    active: bool,
}

async fn held(app: &TestApp, user: &str, purchase: &Purchase) -> Held {
    let holdings = app.holdings(user).await;
    let entitlement = &holdings["entitlements"][0];
    let order = app.order_status(user, purchase.order_id).await;
    Held {
        credits: holdings["credits"].as_i64().unwrap(),
        order_status: order["status"].as_str().unwrap().to_owned(),
        amount_refunded: order["amountRefunded"].as_i64().unwrap(),
        entitlement: entitlement["status"].as_str().unwrap_or("none").to_owned(),
        active: entitlement["active"] == true,
    }
}

struct History {
    seed: u64,
    steps: Vec<Step>,
    truth: Truth,
    in_order: (String, Purchase),
    adverse: (String, Purchase),
    /// Event types as the adverse twin received them by webhook; the rest went to the reconciler.
    delivered: Vec<String>,
    concurrently: bool,
}

/// Buys both twins, enacts the steps on each, delivers the in-order twin's events in order and the
/// adverse twin's shuffled, with duplicates; with `leave_some`, about a third stay undelivered for
/// the reconciler.
async fn run_history(app: &TestApp, seed: u64, leave_some: bool) -> History {
    let mut rng = Rng(seed);
    let steps = generate(&mut rng);
    let users = (format!("in-order-{seed}"), format!("adverse-{seed}"));
    let first = app.paid_purchase(&users.0, PLAN).await;
    let second = app.paid_purchase(&users.1, PLAN).await;
    let (in_order_events, _) = enact(app, &first, &steps);
    let (adverse_events, truth) = enact(app, &second, &steps);

    app.deliver_all(&in_order_events).await;

    let mut delivery: Vec<Value> = adverse_events
        .iter()
        .filter(|_| !leave_some || !rng.chance(33))
        .cloned()
        .collect();
    for i in 0..delivery.len() {
        if rng.chance(30) {
            delivery.push(delivery[i].clone());
        }
    }
    for i in (1..delivery.len()).rev() {
        delivery.swap(i, rng.below(i + 1));
    }
    let concurrently = rng.chance(33);
    if concurrently {
        // All at once: the claims, the order's lock and the facts' merge must still add up.
        let answers = futures::future::join_all(delivery.iter().map(|event| app.deliver(event))).await;
        for (event, (status, body)) in delivery.iter().zip(answers) {
            assert_eq!(
                status,
                reqwest::StatusCode::OK,
                "{} -> {body} (seed {seed})",
                event["type"]
            );
        }
    } else {
        app.deliver_all(&delivery).await;
    }
    History {
        seed,
        steps,
        truth,
        in_order: (users.0, first),
        adverse: (users.1, second),
        delivered: delivery
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect(),
        concurrently,
    }
}

async fn check(app: &TestApp, history: &History, via_reconciler: bool) {
    let expected = held(app, &history.in_order.0, &history.in_order.1).await;
    let got = held(app, &history.adverse.0, &history.adverse.1).await;
    let context = format!(
        "REVERSAL_SEED history seed {} (reconciler: {via_reconciler}, concurrently: {})\n  steps: {:?}\n  truth: {:?}\n  adverse delivery: {:?}",
        history.seed, history.concurrently, history.steps, history.truth, history.delivered
    );
    assert_eq!(
        got, expected,
        "adverse delivery differs from in-order delivery\n{context}"
    );

    let refunded_share = (i128::from(CREDITS) * i128::from(history.truth.refunded) / i128::from(PRICE)) as i64;
    assert!(got.credits <= CREDITS - refunded_share, "{got:?}\n{context}");
    assert_eq!(got.amount_refunded, history.truth.refunded, "{got:?}\n{context}");
    let fully_refunded = history.truth.refunded >= PRICE;
    let lost = history.truth.dispute == Some("lost");
    let open = history
        .truth
        .dispute
        .is_some_and(|s| !["won", "lost", "warning_closed"].contains(&s));
    if fully_refunded || lost || open {
        assert!(!got.active, "access while a reversal stands: {got:?}\n{context}");
        assert_eq!(got.credits, 0, "{context}");
    } else {
        assert!(got.active, "access lost though nothing stands: {got:?}\n{context}");
        assert_eq!(got.credits, CREDITS - refunded_share, "{context}");
        assert_eq!(got.order_status, "paid", "{context}");
    }
}

#[tokio::test]
async fn any_order_and_any_repetition_of_a_purchases_events_ends_where_in_order_delivery_ends() {
    let base_seed: u64 = std::env::var("REVERSAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64);
    let histories: usize = std::env::var("REVERSAL_HISTORIES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    println!("reversal histories: REVERSAL_SEED={base_seed} REVERSAL_HISTORIES={histories}");
    // Hundreds of checkouts in seconds: the per-process session limit is not what is tested here.
    let app = TestApp::spawn_with(Options {
        checkout_limits: CheckoutLimits {
            per_user_per_minute: 10,
            sessions: Rate {
                per_second: 100_000.0,
                burst: 100_000,
            },
        },
        ..Options::default()
    })
    .await;

    let seeds: Vec<u64> = (0..histories as u64).map(|i| base_seed.wrapping_add(i)).collect();
    for (batch_index, batch) in seeds.chunks(BATCH).enumerate() {
        // Every other batch leaves part of the adverse twins' events to the reconciler.
        let via_reconciler = batch_index % 2 == 1;
        let since = Utc::now().timestamp() - 1;
        let runs: Vec<History> = stream::iter(batch.iter().copied())
            .map(|seed| run_history(&app, seed, via_reconciler))
            .buffer_unordered(6)
            .collect()
            .await;
        if via_reconciler {
            app.reconcile_since(since).await;
        }
        for history in &runs {
            check(&app, history, via_reconciler).await;
        }
    }
}
