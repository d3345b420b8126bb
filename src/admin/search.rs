//! The dashboard's one search box: an order id, a Stripe id (checkout session, payment intent,
//! subscription, customer, event) or a user id, told apart by their shape.

use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{
    order_history::{self, OrderBrief},
    processed_events,
};

/// At most this many orders are listed for one Stripe id (a customer's orders, say).
const MAX_MATCHES: i64 = 50;

/// What a search string is taken for.
#[derive(Debug, PartialEq, Eq)]
pub enum Query {
    Order(Uuid),
    /// `cs_…`, `pi_…`, `sub_…`, `cus_…`: ids that orders carry.
    StripeObject(String),
    /// `evt_…`: the order the event was applied to.
    Event(String),
    /// Anything else: a user id, as the app's tokens carry it.
    User(String),
}

impl Query {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        if let Ok(id) = Uuid::try_parse(text) {
            return Some(Self::Order(id));
        }
        if text.starts_with("evt_") {
            return Some(Self::Event(text.to_owned()));
        }
        let stripe_object = ["cs_", "pi_", "sub_", "cus_"]
            .iter()
            .any(|prefix| text.starts_with(prefix));
        Some(match stripe_object {
            true => Self::StripeObject(text.to_owned()),
            false => Self::User(text.to_owned()),
        })
    }
}

/// What a search found.
pub enum Found {
    Order(Uuid),
    /// More than one order (a customer's), newest first.
    Orders(Vec<OrderBrief>),
    /// A user with orders or credits; their page says which.
    User(String),
    /// The event was applied but named no order (a type we do not act on).
    EventWithoutOrder(String),
    Nothing,
}

pub async fn search(db: &PgPool, query: &Query) -> Result<Found, sqlx::Error> {
    Ok(match query {
        Query::Order(id) => match order_history::detail(db, *id).await? {
            Some(_) => Found::Order(*id),
            None => Found::Nothing,
        },
        Query::Event(id) => match processed_events::order_of(db, id).await? {
            Some(Some(order)) => Found::Order(order),
            Some(None) => Found::EventWithoutOrder(id.clone()),
            None => user_named(db, id).await?,
        },
        Query::StripeObject(id) => {
            let mut orders = order_history::matching_stripe_id(db, id, MAX_MATCHES).await?;
            match orders.len() {
                0 => user_named(db, id).await?,
                1 => Found::Order(orders.remove(0).id),
                _ => Found::Orders(orders),
            }
        }
        // A user page is worth showing even when empty: it says the id holds nothing, which is
        // what support needs to hear about a mistyped id.
        Query::User(id) => Found::User(id.clone()),
    })
}

/// A user id may look like a Stripe id (`cus_42` is someone's choice of id): when no Stripe object
/// has it, a user with orders does.
async fn user_named(db: &PgPool, id: &str) -> Result<Found, sqlx::Error> {
    Ok(match order_history::of_user(db, id, 1).await?.is_empty() {
        true => Found::Nothing,
        false => Found::User(id.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_id_is_told_apart_by_its_shape() {
        let order = Uuid::new_v4();
        assert_eq!(Query::parse(&format!(" {order} ")), Some(Query::Order(order)));
        assert_eq!(Query::parse("evt_123"), Some(Query::Event("evt_123".into())));
        for stripe in ["cs_test_a1", "pi_3", "sub_9", "cus_Q"] {
            assert_eq!(Query::parse(stripe), Some(Query::StripeObject(stripe.into())));
        }
        assert_eq!(Query::parse("alice"), Some(Query::User("alice".into())));
        assert_eq!(Query::parse("   "), None);
    }
}
