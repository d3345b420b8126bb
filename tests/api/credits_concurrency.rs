//! Exactly once under load: simultaneous debits of one balance never spend a credit twice,
//! reservations count the moment they are made, a clawback racing debits leaves the ledger whole,
//! and a database connection killed mid-burst loses no answered debit while every unanswered one
//! applies once when retried with its key.

use std::collections::{HashMap, HashSet};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};

/// Deterministic sizes without a crate: 1..=max, spread.
fn size(i: usize, max: i64) -> i64 {
    (i as i64 * 7919 + 13) % max + 1
}

/// Sends the call again (same key, same body) while it is answered with a server error: a client
/// retrying what it did not see answered. Returns the final answer.
async fn until_answered(app: &TestApp, path: &str, body: &Value) -> (StatusCode, bool, Value) {
    for _ in 0..50 {
        let (status, replayed, answer) = app.api_post(path, body).await;
        if !status.is_server_error() {
            return (status, replayed, answer);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{path} {body} never answered");
}

#[tokio::test]
async fn hundreds_of_simultaneous_debits_never_spend_more_than_the_balance() {
    let app = TestApp::spawn().await;
    const BALANCE: i64 = 1000;
    app.grant_credits("alice", 600).await;
    app.grant_credits("alice", 400).await;
    let requests: Vec<Value> = (0..300)
        .map(|i| json!({"userId": "alice", "credits": size(i, 10), "idempotencyKey": format!("burst-{i}")}))
        .collect();
    let requested: i64 = requests.iter().map(|r| r["credits"].as_i64().unwrap()).sum();
    assert!(requested > BALANCE);
    let answers = join_all(requests.iter().map(|r| until_answered(&app, "/v1/usage", r))).await;

    let mut spent = Vec::new();
    let mut refused = Vec::new();
    for (request, (status, _, answer)) in requests.iter().zip(&answers) {
        let credits = request["credits"].as_i64().unwrap();
        match status {
            &StatusCode::OK => spent.push((answer["available"].as_i64().unwrap(), credits)),
            &StatusCode::PAYMENT_REQUIRED => {
                assert_eq!(error_code(answer), "insufficient_credits");
                refused.push(credits);
            }
            other => panic!("{other}: {answer}"),
        }
    }
    let total: i64 = spent.iter().map(|(_, c)| c).sum();
    assert!(total <= BALANCE, "spent {total} of {BALANCE}");
    // The debits ran one after the other: ordered by what each left, each left what the one
    // before it left less its own credits.
    spent.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut left = BALANCE;
    for (available, credits) in &spent {
        left -= credits;
        assert_eq!(*available, left, "the answers do not chain: {spent:?}");
    }
    // Only ever less was available, so every refusal asked for more than is left at the end.
    for credits in &refused {
        assert!(*credits > left, "{credits} refused though {left} are still there");
    }
    let balance = app.consistent_balance("alice").await;
    assert_eq!(balance["credits"]["available"], BALANCE - total);
    let usages: i64 = sqlx::query_scalar("select count(*) from credit_spends where user_id = 'alice'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(usages as usize, spent.len());
}

#[tokio::test]
async fn the_same_key_sent_many_times_at_once_makes_one_grant_and_one_usage() {
    let app = &TestApp::spawn().await;
    // A user nobody has seen: their account row is made by whichever request comes first.
    let grant = json!({"userId": "fresh", "credits": 100, "idempotencyKey": "once", "reason": "r"});
    let answers = join_all((0..60).map(|_| until_answered(app, "/v1/grants", &grant))).await;
    let first: Vec<&Value> = answers
        .iter()
        .filter(|(_, replayed, _)| !replayed)
        .map(|a| &a.2)
        .collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    for (status, _, answer) in &answers {
        assert_eq!(*status, StatusCode::OK, "{answer}");
        assert_eq!(answer, first[0]);
    }
    // Distinct keys for another new user, all at once.
    let answers = join_all((0..60).map(|i| {
        let body = json!({"userId": "newcomer", "credits": 1, "idempotencyKey": format!("n-{i}"), "reason": "r"});
        async move { until_answered(app, "/v1/grants", &body).await }
    }))
    .await;
    assert!(answers.iter().all(|(s, r, _)| *s == StatusCode::OK && !r));
    assert_eq!(app.consistent_balance("newcomer").await["credits"]["available"], 60);

    let usage = json!({"userId": "fresh", "credits": 30, "idempotencyKey": "job"});
    let answers = join_all((0..60).map(|_| until_answered(app, "/v1/usage", &usage))).await;
    let first: Vec<&Value> = answers
        .iter()
        .filter(|(_, replayed, _)| !replayed)
        .map(|a| &a.2)
        .collect();
    assert_eq!(first.len(), 1, "{answers:?}");
    for (status, _, answer) in &answers {
        assert_eq!(*status, StatusCode::OK, "{answer}");
        assert_eq!(answer, first[0]);
    }
    assert_eq!(app.consistent_balance("fresh").await["credits"]["available"], 70);

    // One key, many users at once: one of them has it, the others are told it is taken.
    for user in ["u1", "u2", "u3", "u4"] {
        app.grant_credits(user, 10).await;
    }
    let answers = join_all(["u1", "u2", "u3", "u4"].into_iter().cycle().take(40).map(|user| {
        let body = json!({"userId": user, "credits": 1, "idempotencyKey": "shared"});
        async move { (user, until_answered(app, "/v1/usage", &body).await) }
    }))
    .await;
    let owners: HashSet<&str> = answers
        .iter()
        .filter(|(_, (status, _, _))| *status == StatusCode::OK)
        .map(|(user, _)| *user)
        .collect();
    assert_eq!(owners.len(), 1, "{answers:?}");
    for (user, (status, _, answer)) in &answers {
        if !owners.contains(user) {
            assert_eq!(
                (*status, error_code(answer)),
                (StatusCode::CONFLICT, "idempotency_key_reused")
            );
        }
    }
    for user in ["u1", "u2", "u3", "u4"] {
        let expected = if owners.contains(user) { 9 } else { 10 };
        assert_eq!(app.consistent_balance(user).await["credits"]["available"], expected);
    }
}

#[tokio::test]
async fn reservations_count_the_moment_they_are_made_and_settle_once_however_they_race() {
    let app = TestApp::spawn().await;
    app.grant_credits("alice", 600).await;
    let calls: Vec<(&str, Value)> = (0..200)
        .map(|i| {
            let path = if i % 2 == 0 { "/v1/reservations" } else { "/v1/usage" };
            (
                path,
                json!({"userId": "alice", "credits": 6, "idempotencyKey": format!("k-{i}")}),
            )
        })
        .collect();
    let answers = join_all(calls.iter().map(|(path, body)| until_answered(&app, path, body))).await;
    let mut held = Vec::new();
    let mut used = 0;
    for ((path, _), (status, _, answer)) in calls.iter().zip(&answers) {
        match (*path, *status) {
            ("/v1/reservations", StatusCode::OK) => held.push(answer["reservationId"].as_str().unwrap().to_owned()),
            ("/v1/usage", StatusCode::OK) => used += 1,
            (_, StatusCode::PAYMENT_REQUIRED) => {}
            other => panic!("{other:?}: {answer}"),
        }
    }
    assert_eq!(held.len() + used, 100, "600 credits hold exactly 100 of 6");
    let balance = app.consistent_balance("alice").await;
    assert_eq!(balance["credits"]["available"], 0);
    assert_eq!(balance["credits"]["reserved"], 6 * held.len() as i64);

    // Each reservation is committed (twice) and released, all at once: one settlement wins, the
    // other is told so, and a repeat of the winner answers like it.
    let settle = |id: String, i: usize| {
        let app = &app;
        async move {
            let part = (i % 7) as i64;
            let (commit, again, release) = tokio::join!(
                app.commit_reservation(&id, Some(part)),
                app.commit_reservation(&id, Some(part)),
                app.release_reservation(&id),
            );
            (id, part, commit, again, release)
        }
    };
    let outcomes = join_all(held.into_iter().enumerate().map(|(i, id)| settle(id, i))).await;
    let mut expected_available = 0;
    for (id, part, commit, again, release) in &outcomes {
        let committed = commit.0 == StatusCode::OK || again.0 == StatusCode::OK;
        if committed {
            assert_eq!(commit.0, StatusCode::OK, "{id}: {commit:?}");
            assert_eq!(again.0, StatusCode::OK, "{id}: {again:?}");
            assert_eq!(commit.1["spent"], *part);
            assert_eq!(again.1, commit.1);
            assert_eq!(
                (release.0, error_code(&release.1)),
                (StatusCode::CONFLICT, "reservation_committed"),
                "{id}"
            );
            expected_available += 6 - part;
        } else {
            assert_eq!(release.0, StatusCode::OK, "{id}: {release:?}");
            assert_eq!(release.1["status"], "released");
            for c in [commit, again] {
                assert_eq!(
                    (c.0, error_code(&c.1)),
                    (StatusCode::CONFLICT, "reservation_released"),
                    "{id}"
                );
            }
            expected_available += 6;
        }
    }
    let balance = app.consistent_balance("alice").await;
    assert_eq!(balance["credits"]["available"], expected_available);
    assert_eq!(balance["credits"]["reserved"], 0);
    let releases: i64 = sqlx::query_scalar(
        "select count(*) from credit_ledger where user_id = 'alice' and kind = 'reservation_release'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let settled_with_a_release = outcomes
        .iter()
        .filter(|(_, part, commit, _, _)| commit.0 != StatusCode::OK || *part < 6)
        .count();
    assert_eq!(releases as usize, settled_with_a_release);
}

/// Debits of a user racing the delivery of a clawback of their purchase (delivered twice, and the
/// events in both orders): the ledger must come out whole whichever ran first.
async fn debits_racing(app: &TestApp, user: &str, clawback: &str) {
    app.grant_credits(user, 50).await;
    let purchase = app.fulfilled_purchase(user, "credits_100").await;
    let charge = app.charge_of(&purchase);
    let events: Vec<Value> = match clawback {
        "refund" => app.emulator.refund(&charge, None).unwrap().1,
        "partial_refund" => app.emulator.refund(&charge, Some(300)).unwrap().1,
        "dispute_lost" => {
            let (id, opened) = app.emulator.open_dispute(&charge).unwrap();
            vec![opened, app.emulator.close_dispute(&id, false).unwrap()]
        }
        other => unreachable!("{other}"),
    };
    let taken = if clawback == "partial_refund" { 60 } else { 100 };
    let debits = (0..80).map(|i| {
        let path = if i % 4 == 3 { "/v1/reservations" } else { "/v1/usage" };
        let body = json!({"userId": user, "credits": 3, "idempotencyKey": format!("{user}-{i}")});
        async move { (path, until_answered(app, path, &body).await) }
    });
    let deliveries = async {
        let mut all = events.clone();
        all.extend(events.iter().rev().cloned());
        join_all(all.iter().map(|event| app.deliver(event))).await
    };
    let (answers, delivered) = tokio::join!(join_all(debits), deliveries);
    for (status, body) in &delivered {
        assert_eq!(*status, StatusCode::OK, "{user}: {body}");
    }
    let mut spent = 0;
    let mut reserved = 0;
    for (path, (status, _, answer)) in &answers {
        match (*path, *status) {
            ("/v1/usage", StatusCode::OK) => spent += 3,
            ("/v1/reservations", StatusCode::OK) => reserved += 3,
            (_, StatusCode::PAYMENT_REQUIRED) => {}
            other => panic!("{user}: {other:?} {answer}"),
        }
    }
    assert!(
        spent + reserved <= 150,
        "{user}: {spent} spent and {reserved} held of 150"
    );
    let balance = app.consistent_balance(user).await;
    let credits = &balance["credits"];
    assert_eq!(credits["reserved"], reserved, "{user}: {balance}");
    assert_eq!(
        credits["available"].as_i64().unwrap() - credits["overdrawn"].as_i64().unwrap(),
        150 - taken - spent - reserved,
        "{user}: {balance}"
    );
    // Nothing more can be spent than is there, and what is owed is paid by what comes back.
    let (_, _, check) = app.api_post("/v1/check", &json!({"userId": user, "credits": 1})).await;
    assert_eq!(check["available"], credits["available"]);
    let ids: Vec<String> = sqlx::query_scalar(
        "select id::text from credit_spends where user_id = $1 and kind = 'reservation' and status = 'held'",
    )
    .bind(user)
    .fetch_all(&app.db)
    .await
    .unwrap();
    join_all(ids.iter().map(|id| app.release_reservation(id))).await;
    let balance = app.consistent_balance(user).await;
    let credits = &balance["credits"];
    assert_eq!(
        credits["available"].as_i64().unwrap() - credits["overdrawn"].as_i64().unwrap(),
        150 - taken - spent,
        "{user}: {balance}"
    );
}

#[tokio::test]
async fn a_clawback_delivered_while_debits_race_leaves_the_ledger_whole() {
    let app = TestApp::spawn().await;
    let users: Vec<(String, &str)> = (0..3)
        .flat_map(|round| {
            ["refund", "partial_refund", "dispute_lost"]
                .into_iter()
                .map(move |kind| (format!("{kind}-{round}"), kind))
        })
        .collect();
    join_all(users.iter().map(|(user, kind)| debits_racing(&app, user, kind))).await;
    let negative: i64 = sqlx::query_scalar("select count(*) from credit_grants where remaining < 0")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(negative, 0);
}

/// The calls of a burst: usages, reservations and manual grants, each with its own key.
fn burst_calls(round: &str, n: usize) -> Vec<(&'static str, Value)> {
    (0..n)
        .map(|i| {
            let key = format!("{round}-{i}");
            match i % 6 {
                0 => (
                    "/v1/reservations",
                    json!({"userId": "alice", "credits": size(i, 5), "idempotencyKey": key}),
                ),
                1 => (
                    "/v1/grants",
                    json!({"userId": "alice", "credits": 2, "idempotencyKey": key, "reason": "r"}),
                ),
                _ => (
                    "/v1/usage",
                    json!({"userId": "alice", "credits": size(i, 5), "idempotencyKey": key}),
                ),
            }
        })
        .collect()
}

fn id_of(answer: &Value) -> String {
    answer["usageId"]
        .as_str()
        .or(answer["reservationId"].as_str())
        .or(answer["id"].as_str())
        .unwrap()
        .to_owned()
}

/// The first answers of a burst: key → id for each answered 200; every other one a 5xx.
fn answered_ok(calls: &[(&str, Value)], first: &[(StatusCode, bool, Value)]) -> HashMap<String, String> {
    let mut answered = HashMap::new();
    for ((path, body), (status, _, answer)) in calls.iter().zip(first) {
        match *status {
            StatusCode::OK => {
                answered.insert(body["idempotencyKey"].as_str().unwrap().to_owned(), id_of(answer));
            }
            status => assert!(status.is_server_error(), "{path} {body}: {status} {answer}"),
        }
    }
    answered
}

#[tokio::test]
async fn a_connection_killed_mid_burst_loses_no_answered_debit_and_each_retry_applies_once() {
    let app = &TestApp::spawn().await;
    app.grant_credits("alice", 4000).await;
    let in_burst = std::sync::atomic::AtomicBool::new(true);

    // Every connection the app has is killed again and again while the calls run.
    let killed_calls = burst_calls("kill", 300);
    let burst = async {
        let answers = join_all(killed_calls.iter().map(|(path, body)| app.api_post(path, body))).await;
        in_burst.store(false, std::sync::atomic::Ordering::SeqCst);
        answers
    };
    let kills = async {
        let mut killed = 0;
        while in_burst.load(std::sync::atomic::Ordering::SeqCst) {
            killed += app.kill_app_connections().await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        killed
    };
    let (first_killed, killed) = tokio::join!(burst, kills);
    assert!(killed > 0, "no connection was killed");

    // And the database goes away for a while in the middle of another burst, so that some calls
    // are surely not answered.
    let outage_calls = burst_calls("outage", 150);
    let outage = async {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        app.set_database_accepting(false).await;
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        app.set_database_accepting(true).await;
    };
    let (first_outage, ()) = tokio::join!(
        join_all(outage_calls.iter().map(|(path, body)| app.api_post(path, body))),
        outage
    );

    let mut answered = answered_ok(&killed_calls, &first_killed);
    answered.extend(answered_ok(&outage_calls, &first_outage));
    let calls: Vec<&(&str, Value)> = killed_calls.iter().chain(&outage_calls).collect();
    assert!(answered.len() < calls.len(), "the outage left every call answered");

    // Every call answered 200 is there for good (a retry replays it); every other one applies
    // once when retried, however often.
    let mut reservations = Vec::new();
    let mut expected = 4000;
    for (path, body) in &calls {
        let key = body["idempotencyKey"].as_str().unwrap();
        let (status, replayed, answer) = until_answered(app, path, body).await;
        assert_eq!(status, StatusCode::OK, "{path} {body}: {answer}");
        let id = id_of(&answer);
        if let Some(first_id) = answered.get(key) {
            assert!(replayed, "{key} answered 200 before, yet applied again");
            assert_eq!(&id, first_id, "{key}");
        }
        let (status, replayed, again) = app.api_post(path, body).await;
        assert_eq!((status, replayed), (StatusCode::OK, true), "{key}: {again}");
        assert_eq!(again, answer, "{key}");
        let credits = body["credits"].as_i64().unwrap();
        match *path {
            "/v1/grants" => expected += credits,
            "/v1/usage" => expected -= credits,
            _ => {
                expected -= credits;
                reservations.push((id, credits));
            }
        }
    }

    // The reservations are committed, half of each, through another round of kills.
    let commits = join_all(reservations.iter().map(|(id, credits)| {
        let body = json!({"credits": credits / 2});
        let path = format!("/v1/reservations/{id}/commit");
        async move { until_answered(app, &path, &body).await }
    }));
    let kill_again = async {
        for _ in 0..5 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            app.kill_app_connections().await;
        }
    };
    let (settled, ()) = tokio::join!(commits, kill_again);
    for ((_, credits), (status, _, answer)) in reservations.iter().zip(&settled) {
        assert_eq!(status, &StatusCode::OK, "{answer}");
        assert_eq!(answer["spent"], credits / 2);
        expected += credits - credits / 2;
    }

    let balance = app.consistent_balance("alice").await;
    assert_eq!(balance["credits"]["available"], expected, "{balance}");
    assert_eq!(balance["credits"]["reserved"], 0);
    let (spends, keys): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct idempotency_key) from credit_spends where user_id = 'alice'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let (grants, grant_keys): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct idempotency_key) from credit_grants where user_id = 'alice'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let spend_calls = calls.iter().filter(|(path, _)| *path != "/v1/grants").count() as i64;
    assert_eq!((spends, keys), (spend_calls, spend_calls), "one spend per key");
    // One for each grant call, and the first grant.
    let grant_calls = calls.len() as i64 - spend_calls;
    assert_eq!(
        (grants, grant_keys),
        (grant_calls + 1, grant_calls + 1),
        "one grant per key"
    );
    let reservation_releases: i64 = sqlx::query_scalar(
        "select count(*) from credit_ledger where user_id = 'alice' and kind = 'reservation_release'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        reservation_releases as usize,
        reservations.iter().filter(|(_, c)| c - c / 2 > 0).count()
    );
}
