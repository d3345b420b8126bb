//! Webhook activity over the last hours from `processed_webhook_events`: events received per slot
//! and how far behind Stripe's `created` they arrived, with every slot present (empty ones at 0)
//! so a chart's bars are evenly spaced in time.

use chrono::{DateTime, Duration, DurationRound, Utc};
use sqlx::PgPool;

use crate::store::processed_events::{self, ActivitySlot};

/// Six hours in quarter-hour slots.
pub const SLOT: Duration = Duration::minutes(15);
pub const SLOTS: i64 = 24;

pub struct Activity {
    /// Oldest first; the last one is the slot now is in.
    pub slots: Vec<ActivitySlot>,
}

impl Activity {
    pub fn max_events(&self) -> i64 {
        self.slots.iter().map(|slot| slot.events).max().unwrap_or(0)
    }

    pub fn max_lag_secs(&self) -> f64 {
        self.slots
            .iter()
            .filter_map(|slot| slot.lag_max_secs)
            .fold(0.0, f64::max)
    }
}

pub async fn activity(db: &PgPool, now: DateTime<Utc>) -> Result<Activity, sqlx::Error> {
    let current = now.duration_trunc(SLOT).unwrap_or(now);
    let first = current - SLOT * (SLOTS as i32 - 1);
    let found = processed_events::activity_since(db, first, SLOT.num_seconds() as f64).await?;
    Ok(Activity {
        slots: fill(first, found),
    })
}

/// Every slot from `first`, `SLOTS` of them, taking the counts found for it.
fn fill(first: DateTime<Utc>, found: Vec<ActivitySlot>) -> Vec<ActivitySlot> {
    let mut found = found.into_iter().peekable();
    (0..SLOTS as i32)
        .map(|i| {
            let slot_start = first + SLOT * i;
            // Slots are aligned to the epoch, as the query's, so a found one starts exactly here.
            match found.next_if(|slot| slot.slot_start == slot_start) {
                Some(slot) => slot,
                None => ActivitySlot {
                    slot_start,
                    events: 0,
                    lag_avg_secs: None,
                    lag_max_secs: None,
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slots_are_filled_in_and_found_ones_kept_in_place() {
        let first = DateTime::from_timestamp(900 * 100, 0).unwrap();
        let found = vec![ActivitySlot {
            slot_start: first + SLOT * 3,
            events: 7,
            lag_avg_secs: Some(1.5),
            lag_max_secs: Some(4.0),
        }];
        let slots = fill(first, found);
        assert_eq!(slots.len(), SLOTS as usize);
        assert_eq!(slots[3].events, 7);
        assert_eq!(slots.iter().map(|s| s.events).sum::<i64>(), 7);
        assert_eq!(slots[23].slot_start, first + SLOT * 23);
    }
}
