//! Time travel, as Stripe's test clocks do it: `POST /clock/advance {"seconds": n}` moves the
//! emulator's clock forward and fires, in time order, everything that fell due on the way:
//! period ends (a renewal, a trial's end, a cancellation at the period end, a scheduled price
//! change) and open checkout sessions passing their `expires_at`. Each happens at its own moment,
//! so the objects and events it makes carry that time, and the service sees a year of billing as
//! Stripe would send it.

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde_json::{Value, json};

use super::{
    EmulatorState, StripeEmulator, billing, errors::ApiError, expire_open_session, objects, subscription_update,
};

/// The furthest one call may move the clock: five years, more than any billing scenario needs,
/// and few enough periods (even daily ones) to fire in one request.
pub const MAX_ADVANCE_SECS: i64 = 5 * 365 * 24 * 60 * 60;

pub fn router(emulator: StripeEmulator) -> Router {
    Router::new()
        .route("/clock/advance", post(advance))
        .with_state(emulator)
}

/// Something that falls due at a moment of the emulator's time.
enum Due {
    PeriodEnd(String),
    SessionExpiry(String),
}

/// The earliest thing due at or before `until`. Subscriptions that are over have no period end.
fn next_due(state: &EmulatorState, until: i64) -> Option<(i64, Due)> {
    let period_ends = state
        .billing
        .subscriptions
        .values()
        .filter(|s| ["active", "trialing", "past_due"].contains(&s["status"].as_str().unwrap_or_default()))
        .filter_map(|s| {
            let at = s["items"]["data"][0]["current_period_end"].as_i64()?;
            Some((at, Due::PeriodEnd(s["id"].as_str()?.to_owned())))
        });
    let expiries = state
        .sessions
        .values()
        .filter(|s| s["status"] == "open")
        .filter_map(|s| {
            Some((
                s["expires_at"].as_i64()?,
                Due::SessionExpiry(s["id"].as_str()?.to_owned()),
            ))
        });
    period_ends
        .chain(expiries)
        .filter(|(at, _)| *at <= until)
        .min_by_key(|(at, _)| *at)
}

/// What Stripe does when a subscription's period ends: it ends if it was set to, else a scheduled
/// price takes over and the next period is billed (a trial's end is the first such bill).
fn end_period(state: &mut EmulatorState, subscription_id: &str) -> Vec<Value> {
    let Some(subscription) = state.billing.subscriptions.get(subscription_id) else {
        return Vec::new();
    };
    if subscription["cancel_at_period_end"] == true {
        return billing::set_status(state, subscription_id, "canceled", true)
            .into_iter()
            .collect();
    }
    let mut events = subscription_update::apply_scheduled_price(state, subscription_id);
    let paid = !state.billing.declining.contains(subscription_id);
    events.extend(billing::bill_next_period(state, subscription_id, paid).unwrap_or_default());
    events
}

impl StripeEmulator {
    /// Moves the clock `seconds` forward (1 to `MAX_ADVANCE_SECS`), firing what falls due in time
    /// order. Returns the new time and the events sent, oldest first; `None` for a refused amount.
    pub fn advance_clock(&self, seconds: i64) -> Option<(i64, Vec<Value>)> {
        if !(1..=MAX_ADVANCE_SECS).contains(&seconds) {
            return None;
        }
        let mut state = self.lock();
        let target = state.now() + seconds;
        let mut events = Vec::new();
        while let Some((at, due)) = next_due(&state, target) {
            // Everything made for this moment is stamped with it.
            state.clock_offset = state.clock_offset.max(at - objects::wall_clock());
            match due {
                Due::PeriodEnd(id) => events.extend(end_period(&mut state, &id)),
                Due::SessionExpiry(id) => events.extend(expire_open_session(&mut state, &id)),
            }
        }
        state.clock_offset = target - objects::wall_clock();
        Some((target, events))
    }

    /// The emulator's time now (unix seconds).
    pub fn now(&self) -> i64 {
        self.lock().now()
    }
}

/// `POST /clock/advance {"seconds": n}` → `{"now": <unix seconds>}`.
async fn advance(State(emulator): State<StripeEmulator>, body: Bytes) -> Response {
    let seconds = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|body| body.get("seconds").cloned());
    let Some(seconds) = seconds else {
        return ApiError::missing("seconds").into_response();
    };
    let advanced = seconds.as_i64().and_then(|n| emulator.advance_clock(n));
    match advanced {
        Some((now, _)) => (StatusCode::OK, Json(json!({ "now": now }))).into_response(),
        None => ApiError::integer_out_of_range(
            "seconds",
            format!("`seconds` must be a whole number from 1 to {MAX_ADVANCE_SECS}."),
        )
        .into_response(),
    }
}
