//! Several instances on one database, as behind a load balancer (issue #15): what one instance
//! does, the others see, and what must happen once happens once, even when one dies mid-burst.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use entitle::{
    config::{CheckoutLimits, JobIntervals, Rate},
    store::job_runs::{self, JobRun},
    stripe::signature::sign_stripe_payload,
    stripe_emulator::PaymentResult,
};
use futures::{StreamExt, future::join_all, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{KillableInstance, Options, TestApp, WEBHOOK_SECRET, token_for, unix_now};

/// Fast enough that a test of a few seconds sees several runs of each job.
const FAST_JOBS: JobIntervals = JobIntervals {
    reconcile_every: Duration::from_secs(1),
    credit_sweep_every: Duration::from_secs(1),
    verify_every: Duration::from_secs(86_400),
};

fn options() -> Options {
    Options {
        jobs: FAST_JOBS,
        // Sixty checkouts in a row are the setup here, not what is tested.
        checkout_limits: CheckoutLimits {
            per_user_per_minute: 1000,
            sessions: Rate {
                per_second: 1000.0,
                burst: 1000,
            },
        },
        ..Options::default()
    }
}

/// Delivers an event to the instance at `address` as Stripe does, signed now; `None` when no
/// answer came (the instance is gone, or died while answering).
async fn deliver_to(http: &reqwest::Client, address: &str, event: &Value) -> Option<StatusCode> {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign_stripe_payload(&body, WEBHOOK_SECRET, unix_now());
    let response = http
        .post(format!("{address}/payment-webhook"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .timeout(Duration::from_secs(20))
        .body(body)
        .send()
        .await
        .ok()?;
    Some(response.status())
}

async fn job_runs(app: &TestApp) -> Vec<JobRun> {
    let mut conn = app.db.acquire().await.unwrap();
    job_runs::all(&mut conn).await.unwrap()
}

/// Waits until every job has a run that started after `after`, or panics after `patience`.
async fn wait_for_runs_after(app: &TestApp, after: DateTime<Utc>, patience: Duration) -> Vec<JobRun> {
    let deadline = Instant::now() + patience;
    loop {
        let runs = job_runs(app).await;
        let ran = |job: &str| runs.iter().any(|r| r.job == job && r.started_at > after);
        if ran("reconcile") && ran("credit_sweep") {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "no run of each job since {after}: {:?}",
            summary(&runs)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn summary(runs: &[JobRun]) -> Vec<String> {
    runs.iter()
        .map(|r| {
            format!(
                "{} {} {} {:?} {:?}",
                r.job, r.instance_id, r.started_at, r.finished_at, r.outcome
            )
        })
        .collect()
}

/// Each job's runs, in order of start, never overlap (a run that never finished may only be the
/// killed instance's, or the last, still running), and no two start within one interval of each
/// other: one run per interval for the whole fleet.
fn assert_one_run_at_a_time(runs: &[JobRun], killed: Uuid) {
    let mut by_job: HashMap<&str, Vec<&JobRun>> = HashMap::new();
    for run in runs {
        by_job.entry(&run.job).or_default().push(run);
    }
    for (job, runs) in by_job {
        for pair in runs.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            match before.finished_at {
                Some(finished) => assert!(
                    finished <= after.started_at,
                    "{job} runs overlap: {:?}",
                    summary(&[before.clone(), after.clone()])
                ),
                None => assert_eq!(
                    before.instance_id, killed,
                    "{job}: an unfinished run on a live instance"
                ),
            }
            let gap = (after.started_at - before.started_at).to_std().unwrap();
            assert!(
                gap >= FAST_JOBS.reconcile_every.mul_f64(0.85),
                "{job} ran twice within an interval ({gap:?})"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn given_three_instances_when_a_burst_of_duplicated_events_is_spread_over_them_and_one_dies_then_every_order_is_granted_once_and_each_job_runs_on_one_at_a_time()
 {
    let app = TestApp::spawn_with(options()).await;
    let second = KillableInstance::start(app.config.clone()).await;
    let mut third = KillableInstance::start(app.config.clone()).await;
    let instances = [app.address.clone(), second.address.clone(), third.address.clone()];

    // Sixty paid orders, each with its `checkout.session.completed` event.
    let mut orders = Vec::new();
    for n in 0..60 {
        let user = format!("user-{n}");
        let (order_id, session_id) = app.checkout(&user, "credits_100").await;
        let event = app.pay(&session_id, PaymentResult::Card).remove(0);
        assert_eq!(event["type"], "checkout.session.completed");
        orders.push((user, order_id, event));
    }

    // Each event three times, once to each instance, all at once; the third dies a third of the way in.
    let deliveries: Vec<(usize, &Value)> = orders
        .iter()
        .enumerate()
        .flat_map(|(n, (_, _, event))| (0..3).map(move |copy| ((n + copy) % 3, event)))
        .collect();
    let answered = Arc::new(AtomicUsize::new(0));
    let kill_at = deliveries.len() / 3;
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let kill_tx = std::sync::Mutex::new(Some(kill_tx));
    let burst = stream::iter(deliveries.iter().map(|&(instance, event)| {
        let (http, address, answered, kill_tx) = (&app.http, &instances[instance], answered.clone(), &kill_tx);
        async move {
            let status = deliver_to(http, address, event).await;
            if answered.fetch_add(1, Ordering::SeqCst) + 1 == kill_at
                && let Some(tx) = kill_tx.lock().unwrap().take()
            {
                let _ = tx.send(());
            }
            (event, status)
        }
    }))
    .buffer_unordered(30)
    .collect::<Vec<_>>();
    let killer = async {
        if kill_rx.await.is_ok() {
            third.kill();
        }
        Utc::now()
    };
    let (results, killed_at) = tokio::join!(burst, killer);
    assert_eq!(
        deliver_to(&app.http, &third.address, &orders[0].2).await,
        None,
        "the third instance is dead"
    );
    let unanswered: Vec<&Value> = results
        .iter()
        .filter(|(_, status)| !status.is_some_and(|s| s.is_success()))
        .map(|(event, _)| *event)
        .collect();
    assert!(
        unanswered.len() < deliveries.len() / 2,
        "{} of {} deliveries failed",
        unanswered.len(),
        deliveries.len()
    );

    // As Stripe does: what got no 2xx is sent again, here to an instance still up.
    for event in unanswered {
        assert_eq!(deliver_to(&app.http, &app.address, event).await, Some(StatusCode::OK));
    }

    for (user, order_id, _) in &orders {
        assert_eq!(app.ledger_rows(*order_id).await, 1, "{user}'s order granted once");
        assert_eq!(app.ledger_sum(user).await, 100, "{user}");
        assert_eq!(app.order_status(user, *order_id).await["status"], "paid");
    }

    // The jobs carried on without the dead instance, and never ran twice at once.
    let runs = wait_for_runs_after(&app, killed_at, Duration::from_secs(15)).await;
    assert_one_run_at_a_time(&runs, third.instance_id);
    let live = [app.instance_id, second.instance_id, third.instance_id];
    assert!(
        runs.iter().all(|r| live.contains(&r.instance_id)),
        "{:?}",
        summary(&runs)
    );
    assert!(
        runs.iter()
            .filter(|r| r.finished_at.is_some())
            .all(|r| r.outcome.as_deref() == Some("ok")),
        "{:?}",
        summary(&runs)
    );
}

#[tokio::test]
async fn given_three_instances_each_ticking_fast_then_each_job_runs_once_per_interval_for_the_fleet() {
    let app = TestApp::spawn_with(options()).await;
    let _second = KillableInstance::start(app.config.clone()).await;
    let _third = KillableInstance::start(app.config.clone()).await;
    let started = Utc::now();

    tokio::time::sleep(Duration::from_millis(4500)).await;

    let runs = job_runs(&app).await;
    assert_one_run_at_a_time(&runs, Uuid::nil());
    for job in ["reconcile", "credit_sweep"] {
        let count = runs.iter().filter(|r| r.job == job && r.started_at > started).count();
        // Three instances ticking each second would make about 13 runs without the shared schedule.
        assert!(
            (2..=6).contains(&count),
            "{job} ran {count} times: {:?}",
            summary(&runs)
        );
    }
}

#[tokio::test]
async fn given_a_long_poll_held_on_one_instance_when_the_webhook_lands_on_another_then_it_answers_paid_promptly() {
    let app = TestApp::spawn().await;
    let other = KillableInstance::start(app.config.clone()).await;
    let (order_id, session_id) = app.checkout("alice", "credits_100").await;
    let event = app.pay(&session_id, PaymentResult::Card).remove(0);

    let wait = async {
        let started = Instant::now();
        let body: Value = app
            .http
            .post(format!("{}/order-status", other.address))
            .bearer_auth(token_for("alice"))
            .json(&json!({ "orderId": order_id, "waitSeconds": 20 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (body, started.elapsed())
    };
    let deliver = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (status, body) = app.deliver(&event).await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (StatusCode::OK, Some("fulfilled")),
            "{body}"
        );
    };
    let ((body, took), ()) = tokio::join!(wait, deliver);

    assert_eq!(body["status"], "paid", "{body}");
    // The test app re-reads a waiting order only every 10 minutes and the wait is 20 s: an answer
    // this quick was woken by the notification the other instance's commit sent.
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
}

#[tokio::test]
async fn given_pending_orders_polled_across_three_instances_then_one_cap_bounds_the_stripe_calls_of_all() {
    let app = TestApp::spawn().await;
    let second = KillableInstance::start(app.config.clone()).await;
    let third = KillableInstance::start(app.config.clone()).await;
    let instances = [app.address.clone(), second.address.clone(), third.address.clone()];
    let mut orders = Vec::new();
    for _ in 0..30 {
        let (order_id, _) = app.checkout("alice", "credits_100").await;
        sqlx::query("update orders set created_at = now() - interval '10 seconds' where id = $1")
            .bind(order_id)
            .execute(&app.db)
            .await
            .unwrap();
        orders.push(order_id);
    }

    let started = Instant::now();
    let polls = orders.iter().enumerate().map(|(n, order_id)| {
        let (http, address) = (&app.http, &instances[n % 3]);
        async move {
            let response = http
                .post(format!("{address}/order-status"))
                .bearer_auth(token_for("alice"))
                .json(&json!({ "orderId": order_id }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
    });
    join_all(polls).await;

    // Per process, three buckets would allow three bursts; shared, the fleet gets one.
    let Rate { per_second, burst } = app.config.return_sync_rate;
    let allowed = f64::from(burst) + started.elapsed().as_secs_f64() * per_second + 1.0;
    let calls = app
        .emulator
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v1/checkout/sessions/"))
        .count();
    assert!(
        calls >= 1 && calls as f64 <= allowed,
        "{calls} Stripe calls for 30 orders over three instances, {allowed} allowed"
    );
}
