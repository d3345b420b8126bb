//! The load as the service sees it in production: buyers opening checkouts and polling their order,
//! Stripe delivering each signed `checkout.session.completed` twice.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use entitle::{stripe::signature::sign_stripe_payload, stripe_emulator::PaymentResult};
use hyper::{
    body::Bytes,
    header::{AUTHORIZATION, HeaderName},
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    connections::Connections,
    measure::{Run, Until, drive},
    service::{JWT_SECRET, Service, WEBHOOK_SECRET},
};

pub struct Order {
    pub id: Uuid,
    pub user_id: String,
    pub session_id: String,
    pub token: String,
}

pub fn http_client(connections: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("an HTTP client")
}

/// Opens `count` checkouts through the API, two orders per user.
pub async fn open_checkouts(service: &Service, http: &reqwest::Client, count: usize, workers: usize) -> Vec<Order> {
    let users = count.div_ceil(2);
    let slots: Arc<Vec<OnceLock<Order>>> = Arc::new((0..count).map(|_| OnceLock::new()).collect());
    let url = format!("{}/checkout-session", service.address);
    let (http, filled) = (http.clone(), slots.clone());
    let run = drive(workers, Until::Count(count), move |i| {
        let (http, url, slots) = (http.clone(), url.clone(), filled.clone());
        async move {
            let user_id = format!("load-user-{}", i % users);
            let token = token_for(&user_id);
            let Ok(response) = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({ "planId": "credits_100" }))
                .send()
                .await
            else {
                return false;
            };
            let Ok(body) = response.json::<Value>().await else {
                return false;
            };
            let (Some(id), Some(url)) = (body["orderId"].as_str(), body["checkoutUrl"].as_str()) else {
                return false;
            };
            let order = Order {
                id: Uuid::parse_str(id).expect("orderId is a UUID"),
                user_id,
                session_id: url.rsplit('/').next().unwrap_or_default().to_owned(),
                token,
            };
            slots[i].set(order).is_ok()
        }
    })
    .await;
    assert_eq!(run.failed, 0, "some checkouts failed");
    Arc::try_unwrap(slots)
        .ok()
        .expect("all workers finished")
        .into_iter()
        .map(|slot| slot.into_inner().expect("every checkout answered"))
        .collect()
}

/// Every buyer pays by card; returns each order's `checkout.session.completed`, serialised as Stripe sends it.
pub fn pay_all(service: &Service, orders: &[Order]) -> Vec<Vec<u8>> {
    orders
        .iter()
        .map(|order| {
            let events = service
                .emulator
                .pay_session(&order.session_id, PaymentResult::Card)
                .expect("the session is open");
            let completed = events
                .iter()
                .find(|event| event["type"] == "checkout.session.completed")
                .expect("a completed event");
            serde_json::to_vec(completed).unwrap()
        })
        .collect()
}

/// How the deliveries were answered, beyond the status code.
#[derive(Default)]
pub struct DeliveryOutcomes {
    pub fulfilled: AtomicUsize,
    pub duplicate: AtomicUsize,
}

/// Delivers every event twice (the copies back to back, so they often race), signed at send time.
pub async fn deliver_each_twice(
    http: Arc<Connections>,
    events: Vec<Vec<u8>>,
    senders: usize,
) -> (Run, Arc<DeliveryOutcomes>) {
    #[derive(Deserialize)]
    struct Answer<'a> {
        outcome: Option<&'a str>,
    }
    let outcomes = Arc::new(DeliveryOutcomes::default());
    let events: Arc<Vec<Bytes>> = Arc::new(events.into_iter().map(Bytes::from).collect());
    let counted = outcomes.clone();
    let run = drive(senders, Until::Count(events.len() * 2), move |i| {
        let (http, events, outcomes) = (http.clone(), events.clone(), counted.clone());
        async move {
            let body = events[i / 2].clone();
            let signature = sign_stripe_payload(&body, WEBHOOK_SECRET, unix_now());
            let stripe_signature = HeaderName::from_static("stripe-signature");
            let Some((status, answer)) = http
                .post_json("/payment-webhook", &[(stripe_signature, &signature)], body)
                .await
            else {
                return false;
            };
            match serde_json::from_slice::<Answer>(&answer).ok().and_then(|a| a.outcome) {
                Some("fulfilled") => outcomes.fulfilled.fetch_add(1, Ordering::Relaxed),
                Some("duplicate") => outcomes.duplicate.fetch_add(1, Ordering::Relaxed),
                _ => 0,
            };
            status.is_success()
        }
    })
    .await;
    (run, outcomes)
}

/// `pollers` buyers ask for their (paid) orders' status for `duration`. A 200 that does not say
/// `paid` counts in `wrong_answers`.
pub async fn poll_status(
    http: Arc<Connections>,
    orders: Arc<Vec<Order>>,
    pollers: usize,
    duration: Duration,
) -> (Run, usize) {
    #[derive(Deserialize)]
    struct Answer<'a> {
        status: &'a str,
    }
    let wrong_answers = Arc::new(AtomicUsize::new(0));
    // Each order's request, ready to send: the poll loop only clones them.
    let requests: Arc<Vec<(String, Bytes)>> = Arc::new(
        orders
            .iter()
            .map(|order| {
                let body = serde_json::to_vec(&json!({ "orderId": order.id })).unwrap();
                (format!("Bearer {}", order.token), Bytes::from(body))
            })
            .collect(),
    );
    let wrong = wrong_answers.clone();
    let run = drive(pollers, Until::Elapsed(duration), move |i| {
        let (http, requests, wrong) = (http.clone(), requests.clone(), wrong.clone());
        async move {
            let (authorization, body) = &requests[i % requests.len()];
            let Some((status, answer)) = http
                .post_json("/order-status", &[(AUTHORIZATION, authorization)], body.clone())
                .await
            else {
                return false;
            };
            let paid = serde_json::from_slice::<Answer>(&answer).is_ok_and(|a| a.status == "paid");
            if status.is_success() && !paid {
                wrong.fetch_add(1, Ordering::Relaxed);
            }
            status.is_success()
        }
    })
    .await;
    let wrong_answers = wrong_answers.load(Ordering::Relaxed);
    (run, wrong_answers)
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A token as the app's own auth would issue it: HS256, `sub` = user id, one hour to live.
pub fn token_for(user_id: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": user_id, "exp": unix_now() + 3600 }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}
