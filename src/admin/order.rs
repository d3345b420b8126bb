//! An order's timeline: each webhook event applied to it (when Stripe created it, when it was
//! applied, how it was settled and what it changed in credits and entitlements), the changes no
//! event made (the return page's sync, an operator's fix), and the outbox deliveries about it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{
    order_history::{self, OrderDetail},
    outbox_deliveries::{self, Listed},
    processed_events::{self, TimelineEvent},
};

/// An order's messages are a handful (one per status it reached, per endpoint); this only bounds
/// a page that something went wrong with.
const MAX_DELIVERIES: i64 = 500;

pub struct OrderTimeline {
    pub order: OrderDetail,
    /// In time order; events in the order they were applied.
    pub entries: Vec<Entry>,
}

pub enum Entry {
    Event {
        event: TimelineEvent,
        /// What it changed, in words (`credits +100 (purchase)`).
        changes: Vec<String>,
    },
    /// A change that names no applied event.
    Change {
        at: DateTime<Utc>,
        change: String,
    },
    Delivery(Listed),
}

impl Entry {
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::Event { event, .. } => event.received_at,
            Self::Change { at, .. } => *at,
            Self::Delivery(delivery) => delivery.created_at,
        }
    }
}

pub async fn order_timeline(db: &PgPool, order_id: Uuid) -> Result<Option<OrderTimeline>, sqlx::Error> {
    let Some(order) = order_history::detail(db, order_id).await? else {
        return Ok(None);
    };
    let events = processed_events::for_order(db, order_id).await?;
    let changes = order_history::changes(db, order_id).await?;
    let only_this_order = outbox_deliveries::Filter {
        order_id: Some(order_id),
        ..Default::default()
    };
    let deliveries = outbox_deliveries::latest(db, &only_this_order, MAX_DELIVERIES).await?;

    let mut entries: Vec<Entry> = events
        .into_iter()
        .map(|event| Entry::Event {
            event,
            changes: Vec::new(),
        })
        .collect();
    for change in changes {
        let by_event = entries.iter_mut().find_map(|entry| match entry {
            Entry::Event { event, changes } if change.stripe_event_id.as_deref() == Some(event.event_id.as_str()) => {
                Some(changes)
            }
            _ => None,
        });
        match by_event {
            Some(changes) => changes.push(change.change),
            None => entries.push(Entry::Change {
                at: change.created_at,
                change: change.change,
            }),
        }
    }
    entries.extend(deliveries.into_iter().map(Entry::Delivery));
    // Stable: events keep the order they were applied in when two share a time.
    entries.sort_by_key(Entry::at);
    Ok(Some(OrderTimeline { order, entries }))
}
