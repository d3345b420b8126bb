//! The credits API as an app's backend calls it (`/v1/`, with the API key): checks before work,
//! usage spread over many users, and many callers spending one user's balance at once. Every
//! answer is counted, so the ledger can be checked against the 200s afterwards.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hyper::{StatusCode, body::Bytes, header::AUTHORIZATION};
use serde::Deserialize;
use serde_json::json;

use crate::{
    connections::Connections,
    measure::{Run, Until, drive},
    service::{API_KEY, Service},
};

/// What each spread user is given: far more than a run can spend, so every debit there is a 200.
pub const SPREAD_GRANT: i64 = 1_000_000;

/// A debit's credits: 1, 2, 3, 1, … so the totals check adds up different amounts.
pub fn debit_credits(i: usize) -> i64 {
    1 + (i % 3) as i64
}

pub fn spread_user(i: usize) -> String {
    format!("credit-user-{i}")
}

pub const ONE_USER: &str = "credit-one-user";

fn bearer() -> String {
    format!("Bearer {API_KEY}")
}

/// Gives each user `credits` through `POST /v1/grants` (not measured; `workers` at a time).
pub async fn seed_grants(service: &Service, http: &reqwest::Client, users: Vec<String>, credits: i64, workers: usize) {
    let users = Arc::new(users);
    let url = format!("{}/v1/grants", service.address);
    let (http, names) = (http.clone(), users.clone());
    let run = drive(workers, Until::Count(users.len()), move |i| {
        let (http, url, users) = (http.clone(), url.clone(), names.clone());
        async move {
            let body = json!({
                "userId": users[i],
                "credits": credits,
                "idempotencyKey": format!("loadtest-seed-{}", users[i]),
                "reason": "load test",
            });
            http.post(&url)
                .bearer_auth(API_KEY)
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    assert_eq!(run.failed, 0, "some seed grants failed");
}

/// `callers` ask `POST /v1/check` whether spread users can spend 1 credit, for `duration`. An
/// answer that is not `allowed` (every one has credits) counts in the second value.
pub async fn check(http: Arc<Connections>, users: usize, callers: usize, duration: Duration) -> (Run, usize) {
    #[derive(Deserialize)]
    struct Answer {
        allowed: bool,
    }
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..users)
            .map(|u| Bytes::from(format!(r#"{{"userId":"{}","credits":1}}"#, spread_user(u))))
            .collect(),
    );
    let not_allowed = Arc::new(AtomicUsize::new(0));
    let (wrong, authorization) = (not_allowed.clone(), Arc::new(bearer()));
    let run = drive(callers, Until::Elapsed(duration), move |i| {
        let (http, bodies, wrong, authorization) = (http.clone(), bodies.clone(), wrong.clone(), authorization.clone());
        async move {
            let body = bodies[i % bodies.len()].clone();
            let Some((status, answer)) = http
                .post_json("/v1/check", &[(AUTHORIZATION, &authorization)], body)
                .await
            else {
                return false;
            };
            let allowed = serde_json::from_slice::<Answer>(&answer).is_ok_and(|a| a.allowed);
            if status.is_success() && !allowed {
                wrong.fetch_add(1, Ordering::Relaxed);
            }
            status.is_success()
        }
    })
    .await;
    let not_allowed = not_allowed.load(Ordering::Relaxed);
    (run, not_allowed)
}

/// What the 200s of a usage run said, per user.
pub struct Debits {
    /// Credits spent by 200s, per user index.
    pub spent: Vec<AtomicI64>,
    /// 200s per user index.
    pub ok: Vec<AtomicUsize>,
    pub refused: AtomicUsize,
    /// Every 200's (credits, available after it), for the one-user run's serial check.
    pub answers: Mutex<Vec<(i64, i64)>>,
}

impl Debits {
    fn new(users: usize) -> Self {
        Self {
            spent: (0..users).map(|_| AtomicI64::new(0)).collect(),
            ok: (0..users).map(|_| AtomicUsize::new(0)).collect(),
            refused: AtomicUsize::new(0),
            answers: Mutex::new(Vec::new()),
        }
    }

    pub fn total_spent(&self) -> i64 {
        self.spent.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }

    pub fn total_ok(&self) -> usize {
        self.ok.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// `callers` send `POST /v1/usage`, request i for user `i % users.len()` with its own idempotency
/// key (`{key_prefix}-{i}`) and `debit_credits(i)` credits. A 402 is counted apart and, when
/// `refusal_ok`, is not a failure.
pub async fn usage(
    http: Arc<Connections>,
    users: Vec<String>,
    key_prefix: &'static str,
    callers: usize,
    until: Until,
    refusal_ok: bool,
) -> (Run, Arc<Debits>) {
    #[derive(Deserialize)]
    struct Answer {
        credits: i64,
        available: i64,
    }
    let debits = Arc::new(Debits::new(users.len()));
    let users = Arc::new(users);
    let (counted, authorization) = (debits.clone(), Arc::new(bearer()));
    let keep_answers = users.len() == 1;
    let run = drive(callers, until, move |i| {
        let (http, users, debits, authorization) =
            (http.clone(), users.clone(), counted.clone(), authorization.clone());
        async move {
            let u = i % users.len();
            let credits = debit_credits(i);
            let body = format!(
                r#"{{"userId":"{}","credits":{credits},"idempotencyKey":"{key_prefix}-{i}"}}"#,
                users[u]
            );
            let Some((status, answer)) = http
                .post_json("/v1/usage", &[(AUTHORIZATION, &authorization)], Bytes::from(body))
                .await
            else {
                return false;
            };
            match status {
                StatusCode::OK => {
                    let Ok(answer) = serde_json::from_slice::<Answer>(&answer) else {
                        return false;
                    };
                    if answer.credits != credits {
                        return false;
                    }
                    debits.spent[u].fetch_add(credits, Ordering::Relaxed);
                    debits.ok[u].fetch_add(1, Ordering::Relaxed);
                    if keep_answers {
                        debits.answers.lock().unwrap().push((credits, answer.available));
                    }
                    true
                }
                StatusCode::PAYMENT_REQUIRED => {
                    debits.refused.fetch_add(1, Ordering::Relaxed);
                    refusal_ok
                }
                _ => false,
            }
        }
    })
    .await;
    (run, debits)
}

/// Each user's credits after a usage run, three ways: the API's balance, the ledger's sum and
/// the spends' rows, all against what the 200s said. `granted` is what each user was given.
pub async fn verify(
    service: &Service,
    http: &reqwest::Client,
    users: &[String],
    granted: i64,
    debits: &Debits,
    workers: usize,
) -> Result<String, String> {
    let rows: HashMap<String, (i64, i64, i64)> = sqlx::query_as::<_, (String, i64, i64, i64)>(
        "select u.user_id,
                coalesce((select sum(delta) from credit_ledger l where l.user_id = u.user_id), 0)::bigint,
                (select count(*) from credit_spends s where s.user_id = u.user_id and s.kind = 'usage'),
                coalesce((select overdrawn from credit_accounts a where a.user_id = u.user_id), 0)
         from unnest($1::text[]) as u(user_id)",
    )
    .bind(users)
    .fetch_all(&service.db)
    .await
    .map_err(|err| format!("ledger query: {err}"))?
    .into_iter()
    .map(|(user, sum, spends, overdrawn)| (user, (sum, spends, overdrawn)))
    .collect();
    let available = api_balances(service, http, users, workers).await;
    let mut wrong = Vec::new();
    for (u, user) in users.iter().enumerate() {
        let spent = debits.spent[u].load(Ordering::Relaxed);
        let ok = debits.ok[u].load(Ordering::Relaxed) as i64;
        let expected = granted - spent;
        let (sum, spends, overdrawn) = rows.get(user).copied().unwrap_or((i64::MIN, -1, -1));
        let api = available[u];
        if sum != expected || spends != ok || overdrawn != 0 || api != Some(expected) || expected < 0 {
            wrong.push(format!(
                "{user}: 200s spent {spent} in {ok}, ledger sum {sum} (expected {expected}), {spends} spends, \
                 API available {api:?}, overdrawn {overdrawn}"
            ));
        }
    }
    if wrong.is_empty() {
        Ok(format!(
            "exact ({} users: API balance = ledger sum = grant - 200s, {} spends for {} 200s, {} credits)",
            users.len(),
            debits.total_ok(),
            debits.total_ok(),
            debits.total_spent()
        ))
    } else {
        let first: Vec<_> = wrong.iter().take(3).cloned().collect();
        Err(format!("WRONG for {} users, e.g. {}", wrong.len(), first.join("; ")))
    }
}

/// The one user's run: beyond `verify`, the balance ran out (some 402s), was never overspent, and
/// the 200s form one serial history: sorted by what they left, each left what the one before left
/// minus its own credits, starting from the grant.
pub fn verify_serial(granted: i64, debits: &Debits) -> Result<String, String> {
    let mut answers = debits.answers.lock().unwrap().clone();
    answers.sort_by_key(|(_, available)| std::cmp::Reverse(*available));
    let mut left = granted;
    for (credits, available) in &answers {
        if *available != left - credits || *available < 0 {
            return Err(format!(
                "WRONG: a 200 for {credits} credits left {available}, after {left} before it"
            ));
        }
        left = *available;
    }
    let refused = debits.refused.load(Ordering::Relaxed);
    if refused == 0 {
        return Err("WRONG: the balance never ran out (no 402), so overspending was not tested".into());
    }
    Ok(format!(
        "serial ({} 200s spent {} of {granted}, each left the one before's balance minus its credits; {refused} x 402 after it ran out, {left} left)",
        answers.len(),
        granted - left,
    ))
}

/// `credits.available` of `GET /v1/users/{id}/balance` for each user, `None` where it failed.
async fn api_balances(service: &Service, http: &reqwest::Client, users: &[String], workers: usize) -> Vec<Option<i64>> {
    let slots: Arc<Vec<Mutex<Option<i64>>>> = Arc::new(users.iter().map(|_| Mutex::new(None)).collect());
    let urls: Arc<Vec<String>> = Arc::new(
        users
            .iter()
            .map(|user| format!("{}/v1/users/{user}/balance", service.address))
            .collect(),
    );
    let (http, filled) = (http.clone(), slots.clone());
    drive(workers, Until::Count(users.len()), move |i| {
        let (http, urls, slots) = (http.clone(), urls.clone(), filled.clone());
        async move {
            let Ok(response) = http.get(&urls[i]).bearer_auth(API_KEY).send().await else {
                return false;
            };
            let Ok(body) = response.json::<serde_json::Value>().await else {
                return false;
            };
            *slots[i].lock().unwrap() = body["credits"]["available"].as_i64();
            true
        }
    })
    .await;
    slots.iter().map(|slot| *slot.lock().unwrap()).collect()
}
