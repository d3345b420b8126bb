//! Generated sequences of grants (some expiring within seconds, some later, some never), usages,
//! reservations (some with a TTL of a second or two), commits, releases, replays, reused keys and
//! checks over one to three users, with now and then a purchase, a refund of part or all of it and
//! a refund that fails, each step checked against a small model of the balance: the answer (200
//! with what is left, 402 with what is available, 409, 400) and, after every step, the user's
//! available, reserved and owed credits, their grants in spend order, and the ledger's sum.
//!
//! Expiry depends on the clock: the model knows when each grant and reservation expires, and
//! where a step ran while something expired (its request sent before, its answer received after)
//! it keeps each outcome the answer allows and lets later answers decide. Balances are compared
//! only over a window nothing expired in, so no outcome depends on how fast the machine is.
//!
//! `CREDITS_SEED=<n>` replays a run (sequence i has seed n + i); `CREDITS_SEQUENCES=<n>` sets how
//! many (default 60), `CREDITS_STEPS=<n>` how long each is (default 30).

use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};

use entitle::config::{CheckoutLimits, Rate};

use crate::helpers::{Options, TestApp, rfc3339};

/// SplitMix64, as in `reversal_properties`.
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

    /// From `low` to `high`, both included.
    fn between(&mut self, low: i64, high: i64) -> i64 {
        low + (self.next() % (high - low + 1) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Grant {
    id: String,
    user: usize,
    remaining: i64,
    expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Status {
    Held,
    Committed(i64),
    Released,
    Expired,
}

#[derive(Clone, Debug, PartialEq)]
struct Reservation {
    id: String,
    user: usize,
    credits: i64,
    /// (grant index, credits), in the order taken.
    taken: Vec<(usize, i64)>,
    expires_at: DateTime<Utc>,
    status: Status,
}

/// One history the service may have had: what each grant has left, where each reservation
/// stands and what each user owes. Expiry is applied as time passes (`advance`), each thing as of
/// when it fell due: the service writes it lazily, and must come to the same.
#[derive(Clone, Debug, PartialEq)]
struct World {
    grants: Vec<Grant>,
    reservations: Vec<Reservation>,
    owed: Vec<i64>,
}

impl World {
    fn give_back(&mut self, taken: &[(usize, i64)], mut amount: i64) {
        for &(grant, credits) in taken.iter().rev() {
            if amount == 0 {
                break;
            }
            let part = credits.min(amount);
            self.grants[grant].remaining += part;
            amount -= part;
        }
    }

    fn new(users: usize) -> Self {
        Self {
            grants: Vec::new(),
            reservations: Vec::new(),
            owed: vec![0; users],
        }
    }

    fn expire_grants(&mut self, at: DateTime<Utc>) {
        for grant in &mut self.grants {
            if grant.expires_at.is_some_and(|expires| expires <= at) {
                grant.remaining = 0;
            }
        }
    }

    /// Everything due by `now`, in the order it fell due: each held reservation past its TTL
    /// after the grants that expired before it; its credits go back to their grants (those gone
    /// by then expire again) and pay what is owed from what could be spent at that moment. Then
    /// the grants expired since.
    fn advance(&mut self, now: DateTime<Utc>) {
        let mut due: Vec<usize> = (0..self.reservations.len())
            .filter(|&i| self.reservations[i].status == Status::Held && self.reservations[i].expires_at <= now)
            .collect();
        due.sort_by(|&a, &b| {
            let (a, b) = (&self.reservations[a], &self.reservations[b]);
            (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id))
        });
        for i in due {
            let r = self.reservations[i].clone();
            self.expire_grants(r.expires_at);
            self.give_back(&r.taken, r.credits);
            self.reservations[i].status = Status::Expired;
            self.expire_grants(r.expires_at);
            self.cover(r.user, r.expires_at);
        }
        self.expire_grants(now);
    }

    /// Pays what `user` owes from what they could spend at `at`.
    fn cover(&mut self, user: usize, at: DateTime<Utc>) {
        let cover = self.owed[user].min(self.spendable(user, at));
        self.take(user, cover, at);
        self.owed[user] -= cover;
    }

    fn spendable(&self, user: usize, at: DateTime<Utc>) -> i64 {
        self.grants
            .iter()
            .filter(|g| g.user == user && g.expires_at.is_none_or(|expires| expires > at))
            .map(|g| g.remaining)
            .sum()
    }

    /// What `user` can spend (after `advance`).
    fn available(&self, user: usize) -> i64 {
        self.grants.iter().filter(|g| g.user == user).map(|g| g.remaining).sum()
    }

    fn reserved(&self, user: usize) -> i64 {
        self.reservations
            .iter()
            .filter(|r| r.user == user && r.status == Status::Held)
            .map(|r| r.credits)
            .sum()
    }

    /// The grants with something left at `at`, in spend order: expiring first, then the oldest.
    fn spend_order(&self, user: usize, at: DateTime<Utc>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.grants.len())
            .filter(|&i| {
                let g = &self.grants[i];
                g.user == user && g.remaining > 0 && g.expires_at.is_none_or(|expires| expires > at)
            })
            .collect();
        order.sort_by_key(|&i| (self.grants[i].expires_at.is_none(), self.grants[i].expires_at, i));
        order
    }

    fn take(&mut self, user: usize, mut amount: i64, at: DateTime<Utc>) -> Vec<(usize, i64)> {
        let mut taken = Vec::new();
        for i in self.spend_order(user, at) {
            if amount == 0 {
                break;
            }
            let part = self.grants[i].remaining.min(amount);
            self.grants[i].remaining -= part;
            amount -= part;
            taken.push((i, part));
        }
        assert_eq!(amount, 0, "the model took more than there was");
        taken
    }

    /// When things fall due in (`after`, `until`], earliest first.
    fn due_within(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let grants = self
            .grants
            .iter()
            .filter(|g| g.remaining > 0)
            .filter_map(|g| g.expires_at);
        let holds = self
            .reservations
            .iter()
            .filter(|r| r.status == Status::Held)
            .map(|r| r.expires_at);
        let mut due: Vec<DateTime<Utc>> = grants.chain(holds).filter(|at| *at > after && *at <= until).collect();
        due.sort();
        due.dedup();
        due
    }

    /// The earliest thing still to fall due after `now`.
    fn next_due(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.due_within(now, now + Duration::days(365 * 100)).first().copied()
    }

    fn reservation(&mut self, id: &str) -> &mut Reservation {
        self.reservations
            .iter_mut()
            .find(|r| r.id == id)
            .expect("a known reservation")
    }

    /// What the service should answer to `step` at `now`, and the world after it. `answer` is the
    /// service's, read only for what the model cannot know: the ids and times it made.
    fn apply(&mut self, step: &Step, now: DateTime<Utc>, answer: &Value) -> Expect {
        match step {
            Step::Grant {
                user,
                credits,
                expires_at,
                ..
            } => {
                if expires_at.is_some_and(|at| at <= now) {
                    return Expect::Refused(StatusCode::BAD_REQUEST, "invalid_body");
                }
                self.grants.push(Grant {
                    id: answer["id"].as_str().unwrap_or_default().to_owned(),
                    user: *user,
                    remaining: *credits,
                    expires_at: *expires_at,
                });
                // New credits pay what is owed first.
                self.cover(*user, now);
                let remaining = self.grants.last().unwrap().remaining;
                Expect::Done(json!({"granted": credits, "remaining": remaining}))
            }
            Step::Purchase { user } => {
                self.grants.push(Grant {
                    id: answer["grantId"].as_str().unwrap_or_default().to_owned(),
                    user: *user,
                    remaining: 100,
                    expires_at: None,
                });
                self.cover(*user, now);
                Expect::Done(json!({}))
            }
            Step::Refund { user, grant, delta, .. } => {
                // Taken back: what is left of the purchase first, then the user's other credits,
                // and owed beyond that. Handed back: to the purchase, paying what is owed first.
                let grant = self
                    .grants
                    .iter()
                    .position(|g| &g.id == grant)
                    .expect("a known purchase");
                if *delta < 0 {
                    let own = self.grants[grant].remaining.min(-delta);
                    self.grants[grant].remaining -= own;
                    let rest = -delta - own;
                    let other = rest.min(self.spendable(*user, now));
                    self.take(*user, other, now);
                    self.owed[*user] += rest - other;
                } else {
                    self.grants[grant].remaining += delta;
                    self.cover(*user, now);
                }
                Expect::Done(json!({}))
            }
            Step::Usage { user, credits, .. } | Step::Reserve { user, credits, .. } => {
                let available = self.available(*user);
                if available < *credits {
                    return Expect::Insufficient(available);
                }
                let taken = self.take(*user, *credits, now);
                if let Step::Reserve { .. } = step {
                    let expires_at = answer["expiresAt"]
                        .as_str()
                        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                        .map(|at| at.with_timezone(&Utc));
                    let Some(expires_at) = expires_at else {
                        return Expect::Insufficient(-1);
                    };
                    self.reservations.push(Reservation {
                        id: answer["reservationId"].as_str().unwrap_or_default().to_owned(),
                        user: *user,
                        credits: *credits,
                        taken,
                        expires_at,
                        status: Status::Held,
                    });
                }
                Expect::Done(json!({"credits": credits, "available": available - credits}))
            }
            Step::Commit { id, credits } => {
                let r = self.reservation(id).clone();
                match r.status {
                    Status::Held => {
                        let spend = credits.unwrap_or(r.credits);
                        if spend > r.credits {
                            return Expect::Refused(StatusCode::BAD_REQUEST, "invalid_body");
                        }
                        self.give_back(&r.taken, r.credits - spend);
                        self.reservation(id).status = Status::Committed(spend);
                        // What went back to a grant expired meanwhile expires; the rest pays
                        // what is owed.
                        self.advance(now);
                        self.cover(r.user, now);
                        Expect::Done(json!({"status": "committed", "spent": spend, "credits": r.credits}))
                    }
                    Status::Committed(spent) if credits.is_none_or(|c| c == spent) => {
                        Expect::Done(json!({"status": "committed", "spent": spent, "credits": r.credits}))
                    }
                    Status::Committed(_) => Expect::Refused(StatusCode::CONFLICT, "reservation_committed"),
                    Status::Released => Expect::Refused(StatusCode::CONFLICT, "reservation_released"),
                    Status::Expired => Expect::Refused(StatusCode::CONFLICT, "reservation_expired"),
                }
            }
            Step::Release { id } => {
                let r = self.reservation(id).clone();
                match r.status {
                    Status::Held => {
                        self.give_back(&r.taken, r.credits);
                        self.reservation(id).status = Status::Released;
                        self.advance(now);
                        self.cover(r.user, now);
                        Expect::Done(json!({"status": "released", "spent": 0, "expired": false}))
                    }
                    Status::Released => Expect::Done(json!({"status": "released", "spent": 0, "expired": false})),
                    Status::Expired => Expect::Done(json!({"status": "released", "spent": 0, "expired": true})),
                    Status::Committed(_) => Expect::Refused(StatusCode::CONFLICT, "reservation_committed"),
                }
            }
            Step::Replay { first, .. } => Expect::Replayed(first.clone()),
            Step::Reuse { .. } => Expect::Refused(StatusCode::CONFLICT, "idempotency_key_reused"),
            Step::Check { user, credits } => {
                let available = self.available(*user);
                Expect::Done(json!({"allowed": available >= *credits, "available": available}))
            }
            Step::Wait => Expect::Done(json!({})),
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Grant {
        user: usize,
        credits: i64,
        expires_at: Option<DateTime<Utc>>,
        key: String,
    },
    Usage {
        user: usize,
        credits: i64,
        key: String,
    },
    Reserve {
        user: usize,
        credits: i64,
        ttl: Option<i64>,
        key: String,
    },
    Commit {
        id: String,
        credits: Option<i64>,
    },
    Release {
        id: String,
    },
    /// An earlier usage's request again: its first answer, replayed.
    Replay {
        body: Value,
        first: Value,
    },
    /// An earlier usage's key with other credits.
    Reuse {
        body: Value,
    },
    Check {
        user: usize,
        credits: i64,
    },
    /// Sleeps until the next thing falls due.
    Wait,
    /// `credits_100` bought and fulfilled: a purchase grant of 100 that never expires.
    Purchase {
        user: usize,
    },
    /// A refund of the purchase's charge (`cents`, or all that is left), or a refund of it that
    /// fails (`undo`); `delta` is what that does to the purchase's credits.
    Refund {
        user: usize,
        purchase: usize,
        grant: String,
        cents: Option<i64>,
        undo: Option<String>,
        delta: i64,
    },
}

/// A purchase as Stripe and the service know it, whatever the history.
struct Bought {
    user: usize,
    grant: String,
    charge: String,
    refunded: i64,
    /// Refunds that stand: (id, cents).
    refunds: Vec<(String, i64)>,
}

const PRICE: i64 = 500;

/// The credits a purchase of 100 gives back for `refunded` cents: the share, rounded down.
fn taken_for(refunded: i64) -> i64 {
    100 * refunded / PRICE
}

#[derive(Clone, Copy)]
enum Kind {
    Grant,
    /// A commit or a release.
    Settle,
    Reserve,
    /// A usage's request again, or its key with another.
    Again,
    Check,
    Purchase,
    Refund,
    Wait,
    Usage,
}

/// What the service should answer.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// 200, not a replay, with these fields.
    Done(Value),
    /// 200, a replay, exactly this body.
    Replayed(Value),
    /// 402, saying this many are available.
    Insufficient(i64),
    Refused(StatusCode, &'static str),
}

impl Expect {
    fn matches(&self, status: StatusCode, replayed: bool, body: &Value) -> bool {
        match self {
            Expect::Done(fields) => {
                status == StatusCode::OK && !replayed && fields.as_object().unwrap().iter().all(|(k, v)| &body[k] == v)
            }
            Expect::Replayed(first) => status == StatusCode::OK && replayed && body == first,
            Expect::Insufficient(available) => {
                status == StatusCode::PAYMENT_REQUIRED
                    && body["error"]["code"] == "insufficient_credits"
                    && body["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&format!(" {available} available")))
            }
            Expect::Refused(code, name) => status == *code && body["error"]["code"] == *name,
        }
    }
}

struct Sequence<'a> {
    app: &'a TestApp,
    seed: u64,
    /// Which weights the steps are drawn with.
    profile: usize,
    users: Vec<String>,
    /// Every history the answers so far allow (almost always one).
    worlds: Vec<World>,
    /// The ids of the reservations made.
    reservations: Vec<String>,
    /// Usages made: their request and first answer.
    usages: Vec<(Value, Value)>,
    purchases: Vec<Bought>,
    log: Vec<String>,
}

impl Sequence<'_> {
    fn context(&self) -> String {
        let start = self.log.len().saturating_sub(60);
        format!(
            "CREDITS_SEED={} CREDITS_SEQUENCES=1 replays this sequence\n  users: {:?}\n  steps:\n    {}\n  model: {:?}",
            self.seed,
            self.users,
            self.log[start..].join("\n    "),
            self.worlds.first()
        )
    }

    fn generate(&self, rng: &mut Rng, n: usize) -> Step {
        let user = rng.below(self.users.len());
        let key = format!("p{}-s{n}", self.seed);
        // Weights by profile: 0 leans on expiry, 1 on purchases and refunds, 2 is in between.
        let weights: [(Kind, [usize; 3]); 9] = [
            (Kind::Grant, [20, 10, 15]),
            (Kind::Settle, [15, 18, 15]),
            (Kind::Reserve, [15, 18, 15]),
            (Kind::Again, [8, 5, 6]),
            (Kind::Check, [5, 3, 4]),
            (Kind::Purchase, [2, 10, 5]),
            (Kind::Refund, [3, 14, 7]),
            (Kind::Wait, [10, 4, 8]),
            (Kind::Usage, [22, 18, 25]),
        ];
        let possible: Vec<(Kind, usize)> = weights
            .into_iter()
            .map(|(kind, w)| (kind, w[self.profile]))
            .filter(|(kind, _)| match kind {
                Kind::Settle => !self.reservations.is_empty(),
                Kind::Again => !self.usages.is_empty(),
                Kind::Purchase => self.purchases.len() < 4,
                Kind::Refund => !self.purchases.is_empty(),
                _ => true,
            })
            .collect();
        let mut roll = rng.below(possible.iter().map(|(_, w)| w).sum());
        let kind = possible
            .iter()
            .find(|(_, w)| {
                let here = roll < *w;
                roll = roll.saturating_sub(*w);
                here
            })
            .unwrap()
            .0;
        match kind {
            Kind::Grant => {
                let expires_at = match rng.below(10) {
                    0..=2 => None,
                    3..=5 => Some(Utc::now() + Duration::minutes(rng.between(1, 1000))),
                    _ => Some(Utc::now() + Duration::milliseconds(rng.between(600, 2000))),
                };
                // To the millisecond, as it is sent.
                let expires_at = expires_at.map(|at| DateTime::parse_from_rfc3339(&rfc3339(at)).unwrap().to_utc());
                Step::Grant {
                    user,
                    credits: rng.between(1, 40),
                    expires_at,
                    key,
                }
            }
            Kind::Settle => {
                let id = self.reservations[rng.below(self.reservations.len())].clone();
                if rng.chance(40) {
                    Step::Release { id }
                } else {
                    let held = self.worlds[0]
                        .reservations
                        .iter()
                        .find(|r| r.id == id)
                        .map_or(1, |r| r.credits);
                    let credits = match rng.below(10) {
                        0..=3 => None,
                        4..=8 => Some(rng.between(0, held)),
                        _ => Some(held + rng.between(1, 5)),
                    };
                    Step::Commit { id, credits }
                }
            }
            Kind::Reserve => Step::Reserve {
                user,
                credits: rng.between(1, 30),
                ttl: if rng.chance(50) { Some(rng.between(1, 2)) } else { None },
                key,
            },
            Kind::Again => {
                let (body, first) = self.usages[rng.below(self.usages.len())].clone();
                if rng.chance(60) {
                    Step::Replay { body, first }
                } else {
                    let mut body = body;
                    body["credits"] = json!(body["credits"].as_i64().unwrap() + 1);
                    Step::Reuse { body }
                }
            }
            Kind::Check => Step::Check {
                user,
                credits: rng.between(0, 60),
            },
            Kind::Purchase => Step::Purchase { user },
            Kind::Refund => {
                let purchase = rng.below(self.purchases.len());
                let bought = &self.purchases[purchase];
                let taken = taken_for(bought.refunded);
                if !bought.refunds.is_empty() && (bought.refunded == PRICE || rng.chance(30)) {
                    let (id, cents) = bought.refunds[rng.below(bought.refunds.len())].clone();
                    Step::Refund {
                        user: bought.user,
                        purchase,
                        grant: bought.grant.clone(),
                        cents: Some(cents),
                        undo: Some(id),
                        delta: taken - taken_for(bought.refunded - cents),
                    }
                } else {
                    let left = PRICE - bought.refunded;
                    let cents = if rng.chance(50) {
                        None
                    } else {
                        Some(rng.between(1, left))
                    };
                    Step::Refund {
                        user: bought.user,
                        purchase,
                        grant: bought.grant.clone(),
                        cents,
                        undo: None,
                        delta: -(taken_for(bought.refunded + cents.unwrap_or(left)) - taken),
                    }
                }
            }
            Kind::Wait => Step::Wait,
            Kind::Usage => Step::Usage {
                user,
                credits: rng.between(1, 30),
                key,
            },
        }
    }

    async fn send(&self, step: &Step) -> (StatusCode, bool, Value) {
        let app = self.app;
        match step {
            Step::Grant {
                user,
                credits,
                expires_at,
                key,
            } => {
                let mut body = json!({"userId": self.users[*user], "credits": credits, "idempotencyKey": key, "reason": "generated"});
                if let Some(at) = expires_at {
                    body["expiresAt"] = json!(rfc3339(*at));
                }
                app.api_post("/v1/grants", &body).await
            }
            Step::Usage { user, credits, key } => app.usage(&self.users[*user], *credits, key).await,
            Step::Reserve {
                user,
                credits,
                ttl,
                key,
            } => app.reserve(&self.users[*user], *credits, key, *ttl).await,
            Step::Commit { id, credits } => {
                let body = credits.map_or(json!({}), |c| json!({"credits": c}));
                app.api_post(&format!("/v1/reservations/{id}/commit"), &body).await
            }
            Step::Release { id } => {
                app.api_post(&format!("/v1/reservations/{id}/release"), &json!({}))
                    .await
            }
            Step::Replay { body, .. } | Step::Reuse { body } => app.api_post("/v1/usage", body).await,
            Step::Check { user, credits } => {
                app.api_post("/v1/check", &json!({"userId": self.users[*user], "credits": credits}))
                    .await
            }
            Step::Purchase { user } => {
                let purchase = app.fulfilled_purchase(&self.users[*user], "credits_100").await;
                let grant: String = sqlx::query_scalar("select id::text from credit_grants where order_id = $1")
                    .bind(purchase.order_id)
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
                let charge = app.charge_of(&purchase);
                (StatusCode::OK, false, json!({"grantId": grant, "charge": charge}))
            }
            Step::Refund {
                purchase, cents, undo, ..
            } => {
                let (refund, events) = match undo {
                    Some(id) => (id.clone(), app.emulator.undo_refund(id, "failed").unwrap()),
                    None => app.emulator.refund(&self.purchases[*purchase].charge, *cents).unwrap(),
                };
                app.deliver_all(&events).await;
                (StatusCode::OK, false, json!({"refundId": refund}))
            }
            Step::Wait => unreachable!(),
        }
    }

    /// Sends the step and keeps the histories its answer allows: one for each moment it may have
    /// run at relative to what fell due while it was under way.
    async fn step(&mut self, step: Step) {
        if let Step::Wait = step {
            let now = Utc::now();
            let next = self.worlds.iter().filter_map(|w| w.next_due(now)).min();
            if let Some(at) = next.filter(|at| *at < now + Duration::seconds(3)) {
                self.log.push(format!("wait until {}", rfc3339(at)));
                tokio::time::sleep((at - now).to_std().unwrap() + std::time::Duration::from_millis(50)).await;
            }
            return;
        }
        let sent = Utc::now();
        let (status, replayed, answer) = self.send(&step).await;
        let received = Utc::now();
        self.log.push(format!("{step:?} -> {status} {answer}"));
        let mut allowed: Vec<World> = Vec::new();
        for world in &self.worlds {
            let mut before = world.clone();
            before.advance(sent);
            let mut moments = vec![sent];
            moments.extend(before.due_within(sent, received));
            for moment in moments {
                let mut after = before.clone();
                after.advance(moment);
                let expect = after.apply(&step, moment, &answer);
                if expect.matches(status, replayed, &answer) && !allowed.contains(&after) {
                    allowed.push(after);
                }
            }
        }
        assert!(
            !allowed.is_empty(),
            "the answer fits no history of the model: expected {:?}\n{}",
            {
                let mut world = self.worlds[0].clone();
                world.advance(sent);
                world.apply(&step, sent, &answer)
            },
            self.context()
        );
        assert!(allowed.len() <= 64, "too many histories\n{}", self.context());
        self.worlds = allowed;
        if status == StatusCode::OK {
            match &step {
                Step::Reserve { .. } => self
                    .reservations
                    .push(answer["reservationId"].as_str().unwrap().to_owned()),
                Step::Usage { user, credits, key } => self.usages.push((
                    json!({"userId": self.users[*user], "credits": credits, "idempotencyKey": key}),
                    answer,
                )),
                Step::Purchase { user } => self.purchases.push(Bought {
                    user: *user,
                    grant: answer["grantId"].as_str().unwrap().to_owned(),
                    charge: answer["charge"].as_str().unwrap().to_owned(),
                    refunded: 0,
                    refunds: Vec::new(),
                }),
                Step::Refund {
                    purchase, cents, undo, ..
                } => {
                    let bought = &mut self.purchases[*purchase];
                    match undo {
                        Some(id) => {
                            bought.refunded -= cents.unwrap();
                            bought.refunds.retain(|(refund, _)| refund != id);
                        }
                        None => {
                            let cents = cents.unwrap_or(PRICE - bought.refunded);
                            bought.refunded += cents;
                            bought
                                .refunds
                                .push((answer["refundId"].as_str().unwrap().to_owned(), cents));
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads the users' balances and ledger sums over a window in which nothing fell due (waiting
    /// past what did and reading again), and keeps the histories they agree with.
    async fn observe(&mut self, users: &[usize]) {
        loop {
            let started = Utc::now();
            for world in &mut self.worlds {
                world.advance(started);
            }
            let mut seen = Vec::new();
            for &user in users {
                let balance = self.app.balance(&self.users[user]).await;
                let sum = self.app.ledger_sum(&self.users[user]).await;
                seen.push((user, balance, sum));
            }
            let ended = Utc::now();
            let due = self.worlds.iter().flat_map(|w| w.due_within(started, ended)).max();
            if let Some(at) = due {
                let wait = (at - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(50);
                tokio::time::sleep(wait).await;
                continue;
            }
            for (user, balance, sum) in &seen {
                let credits = &balance["credits"];
                let (available, overdrawn) = (
                    credits["available"].as_i64().unwrap(),
                    credits["overdrawn"].as_i64().unwrap(),
                );
                assert!(
                    available == 0 || overdrawn == 0,
                    "credits available while some are owed: {balance}\n{}",
                    self.context()
                );
                assert_eq!(
                    available - overdrawn,
                    *sum,
                    "the ledger does not sum to the balance of {}: {balance}\n{}",
                    self.users[*user],
                    self.context()
                );
            }
            let agrees = |world: &World| {
                seen.iter().all(|(user, balance, _)| {
                    let grants: Vec<(String, i64)> = world
                        .spend_order(*user, started)
                        .into_iter()
                        .map(|i| (world.grants[i].id.clone(), world.grants[i].remaining))
                        .collect();
                    let listed: Vec<(String, i64)> = balance["grants"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|g| (g["id"].as_str().unwrap().to_owned(), g["remaining"].as_i64().unwrap()))
                        .collect();
                    balance["credits"]["available"] == world.available(*user)
                        && balance["credits"]["reserved"] == world.reserved(*user)
                        && balance["credits"]["overdrawn"] == world.owed[*user]
                        && grants == listed
                })
            };
            let before = self.worlds.clone();
            self.worlds.retain(agrees);
            if self.worlds.is_empty() {
                let expected: Vec<(i64, i64, i64)> = users
                    .iter()
                    .map(|&u| (before[0].available(u), before[0].reserved(u), before[0].owed[u]))
                    .collect();
                let balances: Vec<&Value> = seen.iter().map(|(_, b, _)| b).collect();
                panic!(
                    "the balances fit no history of the model: (available, reserved, overdrawn) expected {expected:?}, read {balances:?}\n{}",
                    self.context()
                );
            }
            self.log.push(format!(
                "  balances {:?}",
                seen.iter()
                    .map(|(u, b, _)| (*u, b["credits"].clone()))
                    .collect::<Vec<_>>()
            ));
            return;
        }
    }
}

async fn run_sequence(app: &TestApp, seed: u64, steps: usize) {
    let mut rng = Rng(seed);
    let n_users = 1 + rng.below(3);
    let profile = rng.below(3);
    let users: Vec<String> = (0..n_users).map(|k| format!("p{seed}-u{k}")).collect();
    let mut sequence = Sequence {
        app,
        seed,
        profile,
        users,
        worlds: vec![World::new(n_users)],
        reservations: Vec::new(),
        usages: Vec::new(),
        purchases: Vec::new(),
        log: Vec::new(),
    };
    let everyone: Vec<usize> = (0..sequence.users.len()).collect();
    for n in 0..steps {
        let step = sequence.generate(&mut rng, n);
        let user = match &step {
            Step::Grant { user, .. }
            | Step::Usage { user, .. }
            | Step::Reserve { user, .. }
            | Step::Check { user, .. }
            | Step::Purchase { user }
            | Step::Refund { user, .. } => Some(*user),
            _ => None,
        };
        sequence.step(step).await;
        match user {
            Some(user) if n % 4 != 3 => sequence.observe(&[user]).await,
            _ => sequence.observe(&everyone).await,
        }
    }
}

#[tokio::test]
async fn generated_sequences_of_grants_spends_and_reservations_keep_to_the_model() {
    let base_seed: u64 = std::env::var("CREDITS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Utc::now().timestamp_micros() as u64);
    let sequences: usize = std::env::var("CREDITS_SEQUENCES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let steps: usize = std::env::var("CREDITS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    println!("credit sequences: CREDITS_SEED={base_seed} CREDITS_SEQUENCES={sequences} CREDITS_STEPS={steps}");
    // Purchases by the dozen in seconds: the checkout rate limit is not what is tested here.
    let app = TestApp::spawn_with(Options {
        checkout_limits: CheckoutLimits {
            per_user_per_minute: 1000,
            sessions: Rate {
                per_second: 100_000.0,
                burst: 100_000,
            },
        },
        ..Options::default()
    })
    .await;
    stream::iter((0..sequences as u64).map(|i| base_seed.wrapping_add(i)))
        .for_each_concurrent(10, |seed| run_sequence(&app, seed, steps))
        .await;
}
