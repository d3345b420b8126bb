//! How the outbox delivers: at least once to an app that was down, answering errors or hanging;
//! a 410 or too long a failure disables an endpoint; two instances on one database send each
//! message once; one killed mid-send sends again after a restart with the same webhook-id; and a
//! receiver that keeps the highest version ends with the latest state, whatever order it got them in.

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use serde_json::json;

use crate::{
    app_webhook_helpers::{Received, Receiver, eventually, senders, sending_to},
    helpers::{KillableInstance, Options, TestApp, fast_outbox},
};

#[tokio::test]
async fn given_a_receiver_down_for_a_while_then_every_message_arrives_once_it_is_back_with_every_attempt_kept() {
    let mut receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    receiver.stop();
    for n in 0..5 {
        app.grant_credits(&format!("user-{n}"), 10).await;
    }
    let messages = app.outbox_messages().await;
    eventually("the endpoint to have failed a few times", || async {
        (app.endpoint(&receiver.url()).await.0 >= 3).then_some(())
    })
    .await;
    // A down endpoint is tried once at a time, not once per waiting message: beyond the burst
    // in flight when it first failed, each failed attempt is one more of its failures in a row.
    let failed_while_down = app.all_attempts().await.iter().filter(|a| a.status == "failed").count();
    let failures_in_a_row = app.endpoint(&receiver.url()).await.0 as usize;
    let concurrency = app.config.outbox.concurrency as usize;
    assert!(
        failed_while_down <= failures_in_a_row + concurrency,
        "{failed_while_down} failed attempts for {failures_in_a_row} failures in a row"
    );

    receiver.start_again().await;
    let received = app.all_delivered(&receiver).await;
    let mut ids: Vec<&str> = received.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), messages.len());
    assert_eq!(received.len(), messages.len(), "each message arrived once");
    assert_eq!(app.endpoint(&receiver.url()).await, (0, None), "healthy again");

    let attempts = app.all_attempts().await;
    let failed: Vec<_> = attempts.iter().filter(|a| a.status == "failed").collect();
    assert!(!failed.is_empty());
    for attempt in &failed {
        assert_eq!(attempt.response_status, None);
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("cannot connect")),
            "{attempt:?}"
        );
        assert!(attempt.latency_ms.is_some());
    }
    let delivered: Vec<_> = attempts.iter().filter(|a| a.status == "delivered").collect();
    assert_eq!(delivered.len(), messages.len());
    assert!(
        delivered
            .iter()
            .all(|a| a.response_status == Some(200) && a.error.is_none())
    );
}

#[tokio::test]
async fn given_errors_and_no_answer_then_the_message_is_retried_with_the_same_webhook_id_until_a_2xx() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    receiver.answer(500).await;
    app.grant_credits("alice", 10).await;
    let id = app.outbox_messages().await[0].webhook_id.clone();
    receiver
        .wait_for("two 500s", |r| {
            r.iter().filter(|r| r.answered == Some(500)).count() >= 2
        })
        .await;

    receiver.hang().await;
    eventually("an attempt that got no answer", || async {
        let attempts = app.attempts_of(&id).await;
        attempts
            .iter()
            .any(|a| a.error.as_deref() == Some("no answer within 2 s"))
            .then_some(())
    })
    .await;
    receiver.answer(200).await;
    let received = app.all_delivered(&receiver).await;
    assert_eq!(received.len(), 1);

    let every_request = receiver.received().await;
    assert!(every_request.len() >= 4, "{every_request:#?}");
    assert!(
        every_request.iter().all(|r| r.id == id),
        "one webhook-id across retries"
    );
    assert!(
        every_request.windows(2).all(|w| w[0].raw == w[1].raw),
        "the same bytes each time"
    );
    let attempts = app.attempts_of(&id).await;
    assert!(attempts.iter().any(|a| {
        a.response_status == Some(500)
            && a.error
                .as_deref()
                .is_some_and(|e| e.starts_with("answered 500 Internal Server Error"))
    }));
    assert_eq!(attempts.last().unwrap().status, "delivered");
}

#[tokio::test]
async fn given_a_410_then_the_endpoint_is_disabled_until_redeliver_enables_it_and_sends_what_it_missed() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    receiver.answer(410).await;
    app.grant_credits("alice", 10).await;
    eventually("the endpoint to be disabled", || async {
        app.endpoint(&receiver.url()).await.1
    })
    .await;
    // Later messages are written but given up on at once for a disabled endpoint.
    app.grant_credits("bob", 10).await;
    assert_eq!(app.delivery_counts().await, (0, 0, 2));
    assert_eq!(receiver.received().await.len(), 1);

    let (ok, listed, stderr) = app.run_entitle(&["deliveries", "--failed"]).await;
    assert!(ok, "{stderr}");
    assert!(
        listed.contains(&format!("{}  DISABLED since", receiver.url())),
        "{listed}"
    );
    assert!(listed.contains("answered 410 Gone at"), "{listed}");
    assert_eq!(listed.matches("ABANDONED after").count(), 2, "{listed}");
    assert!(listed.contains("entitlements.updated  user bob"), "{listed}");
    let (_, alice_only, _) = app.run_entitle(&["deliveries", "--user", "alice"]).await;
    assert!(
        alice_only.contains("user alice") && !alice_only.contains("user bob"),
        "{alice_only}"
    );

    receiver.answer(200).await;
    let (ok, report, stderr) = app.run_entitle(&["redeliver", "--since", "1h"]).await;
    assert!(ok, "{stderr}");
    assert!(
        report.contains("2 deliveries are pending again, due now (0 delivered before, 2 abandoned"),
        "{report}"
    );
    assert!(
        report.contains(&format!("enabled again: {} (disabled since", receiver.url())),
        "{report}"
    );
    let received = app.all_delivered(&receiver).await;
    let users: Vec<&str> = received.iter().map(|r| r.data()["userId"].as_str().unwrap()).collect();
    assert_eq!(users.len(), 2, "{users:?}");
    assert_eq!(app.endpoint(&receiver.url()).await, (0, None));
}

#[tokio::test]
async fn given_an_endpoint_failing_longer_than_the_give_up_time_then_it_is_disabled_and_its_messages_abandoned() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(Options {
        outbox: entitle::config::OutboxSettings {
            give_up_after: Duration::from_secs(1),
            ..fast_outbox()
        },
        ..sending_to(&[receiver.url()])
    })
    .await;
    receiver.answer(503).await;
    app.grant_credits("alice", 10).await;
    let reason = eventually("the endpoint to be disabled", || async {
        app.endpoint(&receiver.url()).await.1
    })
    .await;
    assert!(reason.starts_with("failing for "), "{reason}");
    assert!(reason.contains("answered 503 Service Unavailable"), "{reason}");
    assert_eq!(app.delivery_counts().await, (0, 0, 1));
}

#[tokio::test]
async fn given_two_instances_on_one_database_then_each_message_is_sent_exactly_once() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(Options {
        outbox: senders(4),
        ..sending_to(&[receiver.url()])
    })
    .await;
    let other = app.start_beside(app.instance_config(senders(4))).await;
    // Slow answers keep each instance's senders busy, so the other's claim the rest.
    receiver.delay(40).await;
    let grants = (0..40).map(|n| {
        let address = if n % 2 == 0 { app.address.clone() } else { other.clone() };
        let http = app.http.clone();
        async move {
            let body = json!({
                "userId": format!("user-{}", n % 20), "credits": 1 + n, "reason": "test",
                "idempotencyKey": format!("grant-{n}"),
            });
            let response = http
                .post(format!("{address}/v1/grants"))
                .bearer_auth(crate::helpers::API_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
    });
    join_all(grants).await;

    let messages = app.outbox_messages().await;
    assert_eq!(messages.len(), 40);
    app.all_delivered(&receiver).await;
    let mut times: HashMap<String, usize> = HashMap::new();
    for request in receiver.received().await {
        *times.entry(request.id).or_default() += 1;
    }
    assert!(times.values().all(|&n| n == 1), "{times:?}");
    let mut sent: Vec<&String> = times.keys().collect();
    let mut written: Vec<&String> = messages.iter().map(|m| &m.webhook_id).collect();
    sent.sort();
    written.sort();
    assert_eq!(sent, written);
    let attempts = app.all_attempts().await;
    assert_eq!(attempts.len(), 40, "one attempt per message");
    let mut senders: Vec<&str> = attempts.iter().map(|a| a.sender.as_str()).collect();
    senders.sort_unstable();
    senders.dedup();
    assert_eq!(senders.len(), 2, "both instances sent: {senders:?}");
}

#[tokio::test]
async fn given_an_instance_killed_mid_delivery_then_the_restarted_one_sends_it_with_the_same_webhook_id() {
    let receiver = Receiver::start().await;
    // This one only writes: its own senders are off.
    let app = TestApp::spawn_with(Options {
        outbox: senders(0),
        ..sending_to(&[receiver.url()])
    })
    .await;
    let sending = entitle::config::OutboxSettings {
        send_timeout: Duration::from_secs(5),
        lease: Duration::from_secs(6),
        ..senders(2)
    };
    let mut first = KillableInstance::start(app.instance_config(sending.clone())).await;
    receiver.hang().await;
    app.grant_credits("alice", 10).await;
    let held = receiver.wait_for("the request to arrive", |r| !r.is_empty()).await;
    first.kill();
    receiver.answer(200).await;

    let _restarted = KillableInstance::start(app.instance_config(sending)).await;
    let received = app.all_delivered(&receiver).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].id, held[0].id, "the same webhook-id");
    assert_eq!(received[0].raw, held[0].raw, "the same bytes");
    let attempts = app.attempts_of(&received[0].id).await;
    let statuses: Vec<&str> = attempts.iter().map(|a| a.status.as_str()).collect();
    assert_eq!(statuses, ["interrupted", "delivered"]);
    assert_ne!(attempts[0].sender, attempts[1].sender);
}

#[tokio::test]
async fn given_an_older_state_arriving_after_a_newer_one_then_a_receiver_keeping_the_highest_version_ends_with_the_latest()
 {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    app.grant_credits("alice", 50).await;
    let received = app.all_delivered(&receiver).await;
    let oldest = received[0].id.clone();
    app.usage("alice", 20, "job-1").await;
    app.all_delivered(&receiver).await;
    app.grant_credits("alice", 5).await;
    app.all_delivered(&receiver).await;

    let (ok, report, stderr) = app.run_entitle(&["redeliver", &oldest]).await;
    assert!(ok, "{stderr}");
    assert!(
        report.contains("1 delivery is pending again, due now (1 delivered before"),
        "{report}"
    );
    let every = receiver
        .wait_for("the oldest state again", |r| {
            r.iter().filter(|r| r.id == oldest).count() == 2
        })
        .await;
    assert_eq!(every.last().unwrap().id, oldest);
    assert_eq!(every.last().unwrap().data()["version"], 1);
    assert_eq!(every.last().unwrap().raw, every[0].raw);

    let balance = app.balance("alice").await;
    let kept = &receiver.holdings().await["alice"];
    assert_eq!(kept["version"], 3);
    assert_eq!(kept["credits"]["available"], balance["credits"]["available"]);
    assert_eq!(kept["credits"]["available"], 35);
}

#[tokio::test]
async fn given_two_endpoints_then_each_gets_every_message_with_the_same_id_and_bytes() {
    let first = Receiver::start().await;
    let second = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[first.url(), second.url()])).await;
    app.fulfilled_purchase("alice", "credits_100").await;
    let mut to_first = app.all_delivered(&first).await;
    let mut to_second = app.all_delivered(&second).await;
    to_first.sort_by(|a, b| a.id.cmp(&b.id));
    to_second.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(to_first.len(), 2);
    let pairs: Vec<(&str, &str)> = to_first.iter().map(|r| (r.id.as_str(), r.raw.as_str())).collect();
    let same: Vec<(&str, &str)> = to_second.iter().map(|r| (r.id.as_str(), r.raw.as_str())).collect();
    assert_eq!(pairs, same);
}

#[tokio::test]
async fn given_an_app_webhook_url_without_a_valid_secret_then_the_service_refuses_to_start_and_says_why_in_one_line() {
    let app = TestApp::spawn().await;
    for (secret, says) in [
        (None, "APP_WEBHOOK_SECRET: is not set, but APP_WEBHOOK_URL is"),
        (Some("whsec_c2hvcnQ="), "must encode 24 to 64 bytes after whsec_, not 5"),
        (Some("not-a-whsec-secret-at-all"), "must start with whsec_"),
    ] {
        let mut extra = vec![("APP_WEBHOOK_URL", "https://app.example.com/hooks")];
        if let Some(secret) = secret {
            extra.push(("APP_WEBHOOK_SECRET", secret));
        }
        let (ok, _, stderr) = app.run_entitle_with(&["deliveries"], &extra).await;
        assert!(!ok);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            !stderr.contains("c2hvcnQ") && !stderr.contains("not-a-whsec"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn given_a_burst_of_changes_then_every_delivery_is_recorded_once_with_its_answer_and_the_bytes_it_sent() {
    // Arrivals are recorded in batches and bodies built in batches: each of a burst's deliveries
    // must still end with exactly one delivered attempt of its own, its answer and latency, and
    // the receiver must have been sent exactly the body stored for its message.
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(sending_to(&[receiver.url()])).await;
    join_all((0..40).map(|n| {
        let app = &app;
        async move {
            app.grant_credits(&format!("user-{}", n % 10), 10).await;
        }
    }))
    .await;
    let messages = app.outbox_messages().await;
    assert_eq!(messages.len(), 40, "one entitlements.updated per grant");
    let received = app.all_delivered(&receiver).await;
    assert_eq!(received.len(), messages.len(), "each message arrived once");

    let per_delivery: Vec<(i64, i32, i64, i64)> = sqlx::query_as(
        "select count(a.id), d.attempts, count(*) filter (where a.status = 'delivered' and a.response_status = 200
                    and a.latency_ms is not null and a.finished_at is not null and a.error is null),
                count(*) filter (where d.status = 'delivered' and d.last_response = 200 and d.lease_token is null)
         from outbox_deliveries d left join outbox_attempts a on a.delivery_id = d.id
         group by d.id, d.attempts",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(per_delivery.len(), messages.len());
    for row in &per_delivery {
        assert_eq!(
            *row,
            (1, 1, 1, 1),
            "(attempts, counted, delivered with an answer, delivery marked)"
        );
    }
    let stored: HashMap<String, String> =
        sqlx::query_as::<_, (uuid::Uuid, Option<String>)>("select id, body from outbox_messages")
            .fetch_all(&app.db)
            .await
            .unwrap()
            .into_iter()
            .map(|(id, body)| (format!("msg_{}", id.simple()), body.expect("every body fixed")))
            .collect();
    for r in &received {
        assert_eq!(stored[&r.id], r.raw, "the bytes sent are the ones stored");
    }
    // Each user's messages number its versions, and the highest says the user's final balance.
    for n in 0..10 {
        let user = format!("user-{n}");
        let mut versions: Vec<i64> = received
            .iter()
            .filter(|r| r.data()["userId"] == user.as_str())
            .map(|r| r.data()["version"].as_i64().unwrap())
            .collect();
        versions.sort_unstable();
        assert_eq!(versions.len(), 4);
        let latest = received
            .iter()
            .filter(|r| r.data()["userId"] == user.as_str())
            .max_by_key(|r| r.data()["version"].as_i64().unwrap())
            .unwrap();
        assert_eq!(latest.data()["credits"]["available"], 40, "{user}");
    }
}

/// The most requests the receiver had open at one moment.
fn most_at_once(received: &[Received]) -> usize {
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for r in received {
        edges.push((r.received_at, 1));
        edges.push((r.answered_at.expect("every request answered"), -1));
    }
    // An answer and an arrival at the same instant: the answer first, so they do not count as overlapping.
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut open, mut most) = (0, 0);
    for (_, change) in edges {
        open += change;
        most = most.max(open);
    }
    usize::try_from(most).unwrap()
}

/// `count` messages written by an instance that sends none, and a receiver that answers after
/// `delay_ms`: what senders started next find waiting.
async fn messages_waiting(count: usize, delay_ms: u64) -> (Receiver, TestApp) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(Options {
        outbox: senders(0),
        ..sending_to(&[receiver.url()])
    })
    .await;
    for n in 0..count {
        app.grant_credits(&format!("user-{n}"), 10).await;
    }
    receiver.delay(delay_ms).await;
    (receiver, app)
}

#[tokio::test]
async fn given_more_due_than_senders_then_they_are_claimed_together_but_no_more_than_the_concurrency_are_sent_at_once()
{
    // A claim takes more deliveries than there are senders (fewer statements per message), but
    // OUTBOX_CONCURRENCY still bounds the requests an endpoint gets at once.
    let (receiver, app) = messages_waiting(12, 150).await;
    // Everything is due before these senders start: their first claim finds all of it.
    let _sending = app.start_beside(app.instance_config(senders(2))).await;
    let received = app.all_delivered(&receiver).await;
    assert_eq!(received.len(), 12, "each message arrived once");
    let received = receiver
        .wait_for("every answer written", |r| r.iter().all(|r| r.answered_at.is_some()))
        .await;
    assert!(
        most_at_once(&received) <= 2,
        "{} requests were open at once with 2 senders",
        most_at_once(&received)
    );
    let most_per_claim: i64 = sqlx::query_scalar(
        "select max(n) from (select count(*) as n from outbox_attempts group by lease_token) claims",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert!(most_per_claim > 2, "one claim leased {most_per_claim} deliveries");
}

#[tokio::test]
async fn given_held_deliveries_whose_lease_would_run_out_before_a_sender_is_free_then_none_is_sent_twice() {
    // One sender and answers slow enough that the second delivery of a claim could not start
    // with its answer due inside the lease: it waits for the lease to run out and a new claim,
    // instead of going out while another claim may send it too.
    let (receiver, app) = messages_waiting(3, 1_500).await;
    // A 3 s lease and 2 s send timeout: a send must start within a second of the claim.
    let _sending = app.start_beside(app.instance_config(senders(1))).await;
    let received = app.all_delivered(&receiver).await;
    assert_eq!(received.len(), 3);
    let received = receiver.received().await;
    let mut ids: Vec<&str> = received.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), received.len(), "no message was sent twice: {received:#?}");
    for r in &received {
        let attempts = app.attempts_of(&r.id).await;
        let delivered = attempts.iter().filter(|a| a.status == "delivered").count();
        assert_eq!(delivered, 1, "{attempts:?}");
        assert!(
            attempts
                .iter()
                .all(|a| ["delivered", "interrupted"].contains(&a.status.as_str())),
            "{attempts:?}"
        );
    }
}
