//! What can be bought. `plans.toml` is the source of truth for prices; at startup it is validated
//! and written into the `plans` table, which every request reads, so amounts never come from a
//! client. Plans that left the file stay in the table (old orders refer to them) but become inactive.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;
use sqlx::PgPool;

// The reads live in the store; checkout still finds the plan it sells here.
use crate::store;
pub use crate::{
    plan::{Plan, PlanKind},
    store::plans::find_active_plan,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    plans: BTreeMap<String, PlanEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanEntry {
    name: String,
    kind: PlanKind,
    amount: i64,
    currency: String,
    interval: Option<String>,
    #[serde(default)]
    credits: i64,
    #[serde(default)]
    credits_per_period: i64,
    credits_expire_after_days: Option<i32>,
    entitlement: Option<String>,
    stripe_price: Option<String>,
    trial_days: Option<i32>,
    #[serde(default)]
    allow_promotion_codes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not a valid catalog: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot store the catalog: {0}")]
    Database(#[from] sqlx::Error),
}

pub fn load_plans_file(path: &Path) -> Result<Vec<Plan>, CatalogError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
        path: display.clone(),
        source,
    })?;
    parse_plans(&text).map_err(|message| CatalogError::Invalid { path: display, message })
}

pub fn parse_plans(text: &str) -> Result<Vec<Plan>, String> {
    let file: CatalogFile = toml::from_str(text).map_err(|err| err.to_string())?;
    if file.plans.is_empty() {
        return Err("it defines no [plans.<id>] table".into());
    }
    file.plans
        .into_iter()
        .map(|(id, entry)| validate_plan(id, entry))
        .collect()
}

fn validate_plan(id: String, entry: PlanEntry) -> Result<Plan, String> {
    let problem = |what: &str| Err(format!("plan `{id}`: {what}"));
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return problem("the id must be 1-64 letters, digits, `_` or `-`");
    }
    if entry.amount < 0 {
        return problem("amount must be a non-negative number of minor units");
    }
    if entry.currency.len() != 3 || !entry.currency.chars().all(|c| c.is_ascii_lowercase()) {
        return problem("currency must be a lowercase ISO code such as `usd`");
    }
    if entry.credits < 0 || entry.credits_per_period < 0 {
        return problem("credits must not be negative");
    }
    if entry
        .credits_expire_after_days
        .is_some_and(|days| !(1..=36_500).contains(&days))
    {
        return problem("credits_expire_after_days must be from 1 to 36500");
    }
    match entry.kind {
        PlanKind::OneTime => {
            if entry.interval.is_some() {
                return problem("only subscriptions have an interval");
            }
            if entry.credits == 0 && entry.entitlement.is_none() {
                return problem("a one-time plan must grant credits or an entitlement");
            }
            if entry.credits_per_period != 0 {
                return problem("credits_per_period is for subscriptions (one-time plans grant `credits`)");
            }
            if entry.trial_days.is_some() {
                return problem("only subscriptions have a trial (trial_days)");
            }
            if entry.credits_expire_after_days.is_some() && entry.credits == 0 {
                return problem("credits_expire_after_days needs credits to expire");
            }
        }
        PlanKind::Subscription => {
            if !matches!(entry.interval.as_deref(), Some("day" | "week" | "month" | "year")) {
                return problem("a subscription needs interval = day, week, month or year");
            }
            if entry.entitlement.is_none() {
                return problem("a subscription must grant an entitlement");
            }
            if entry.credits != 0 {
                return problem("a subscription grants credits_per_period, not credits");
            }
            if entry.credits_expire_after_days.is_some() {
                return problem("a subscription's credits expire at each period's end");
            }
            // Stripe's bounds on `subscription_data[trial_period_days]`.
            if entry.trial_days.is_some_and(|days| !(1..=730).contains(&days)) {
                return problem("trial_days must be from 1 to 730");
            }
        }
    }
    Ok(Plan {
        id,
        name: entry.name,
        kind: entry.kind,
        amount: entry.amount,
        currency: entry.currency,
        interval: entry.interval,
        credits: entry.credits,
        credits_per_period: entry.credits_per_period,
        credits_expire_after_days: entry.credits_expire_after_days,
        entitlement: entry.entitlement,
        stripe_price: entry.stripe_price,
        trial_days: entry.trial_days,
        allow_promotion_codes: entry.allow_promotion_codes,
    })
}

/// Makes the `plans` table match the file: every listed plan upserted and active, the rest inactive.
pub async fn sync_catalog(pool: &PgPool, plans: &[Plan]) -> Result<(), CatalogError> {
    let mut tx = pool.begin().await?;
    for plan in plans {
        store::plans::upsert(&mut tx, plan).await?;
    }
    let ids: Vec<String> = plans.iter().map(|p| p.id.clone()).collect();
    store::plans::deactivate_all_but(&mut tx, &ids).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_is_valid_and_has_the_documented_plans() {
        let plans = parse_plans(include_str!("../plans.toml")).unwrap();
        let credits = plans.iter().find(|p| p.id == "credits_100").unwrap();
        assert_eq!(
            (credits.kind, credits.amount, credits.currency.as_str(), credits.credits),
            (PlanKind::OneTime, 500, "usd", 100)
        );
        let pro = plans.iter().find(|p| p.id == "pro_monthly").unwrap();
        assert_eq!(
            (
                pro.kind,
                pro.amount,
                pro.interval.as_deref(),
                pro.entitlement.as_deref()
            ),
            (PlanKind::Subscription, 2000, Some("month"), Some("pro"))
        );
    }

    #[test]
    fn invalid_plans_are_refused_with_the_plan_named() {
        for (toml, expected) in [
            (
                "[plans.a]\nname='A'\nkind='one_time'\namount=-1\ncurrency='usd'\ncredits=1",
                "amount",
            ),
            (
                "[plans.a]\nname='A'\nkind='one_time'\namount=1\ncurrency='USD'\ncredits=1",
                "currency",
            ),
            (
                "[plans.a]\nname='A'\nkind='subscription'\namount=1\ncurrency='usd'\nentitlement='x'",
                "interval",
            ),
            (
                "[plans.a]\nname='A'\nkind='one_time'\namount=1\ncurrency='usd'",
                "grant",
            ),
            (
                "[plans.a]\nname='A'\nkind='one_time'\namount=1\ncurrency='usd'\ncredits=1\nprice=3",
                "unknown field",
            ),
            (
                "[plans.a]\nname='A'\nkind='one_time'\namount=1\ncurrency='usd'\ncredits=1\ncredits_per_period=5",
                "credits_per_period is for subscriptions",
            ),
            (
                "[plans.a]\nname='A'\nkind='one_time'\namount=1\ncurrency='usd'\ncredits=1\ncredits_expire_after_days=0",
                "credits_expire_after_days",
            ),
            (
                "[plans.a]\nname='A'\nkind='subscription'\namount=1\ncurrency='usd'\ninterval='month'\nentitlement='x'\ncredits=5",
                "credits_per_period, not credits",
            ),
            (
                "[plans.a]\nname='A'\nkind='subscription'\namount=1\ncurrency='usd'\ninterval='month'\nentitlement='x'\ntrial_days=0",
                "trial_days must be from 1 to 730",
            ),
            (
                "[plans.a]\nname='A'\nkind='subscription'\namount=1\ncurrency='usd'\ninterval='month'\nentitlement='x'\ntrial_days=731",
                "trial_days must be from 1 to 730",
            ),
            (
                "[plans.a]\nname='A'\nkind='one_time'\namount=1\ncurrency='usd'\ncredits=1\ntrial_days=7",
                "only subscriptions have a trial",
            ),
        ] {
            let err = parse_plans(toml).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
