//! The buyer's confirmation email as the outbox sends it: built from the order when the message
//! is first sent (the plan's name, the amount, what the order granted, the buyer's address), and
//! stored as the message's body, so every retry and every `entitle redeliver` sends that email.

use crate::{mail::OrderEmail, store::order_confirmation::ConfirmedOrder};

/// The order's email, or why there can be none: an order whose buyer gave no address can never
/// be confirmed, which is for its delivery to record, not to retry.
pub fn order_email(order: ConfirmedOrder) -> Result<OrderEmail, String> {
    let granted = granted(&order);
    let Some(to) = order.buyer_email.filter(|to| !to.trim().is_empty()) else {
        return Err(format!(
            "order {}: Stripe collected no buyer email address, so there is no one to confirm it to",
            order.order_id
        ));
    };
    Ok(OrderEmail {
        order_id: order.order_id,
        to,
        plan_name: order.plan_name,
        amount: order.amount,
        currency: order.currency,
        granted,
    })
}

/// One line for each thing the order grants, as a buyer reads it.
fn granted(order: &ConfirmedOrder) -> Vec<String> {
    let mut lines = Vec::new();
    if order.credits > 0 {
        lines.push(match order.credits_expire_after_days {
            Some(days) => format!("{} credits, valid for {days} days", order.credits),
            None => format!("{} credits", order.credits),
        });
    }
    if order.credits_per_period > 0 {
        lines.push(format!("{} credits each paid period", order.credits_per_period));
    }
    if let Some(key) = &order.entitlement {
        lines.push(match (order.subscription, order.current_period_end) {
            (true, Some(end)) => format!("{key} access until {}", end.format("%Y-%m-%d")),
            (true, None) => format!("{key} access while the subscription is paid"),
            (false, _) => format!("{key} access"),
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;

    fn order() -> ConfirmedOrder {
        ConfirmedOrder {
            order_id: Uuid::nil(),
            plan_name: "100 credits".into(),
            amount: 500,
            currency: "usd".into(),
            credits: 100,
            credits_expire_after_days: None,
            credits_per_period: 0,
            entitlement: None,
            subscription: false,
            buyer_email: Some("buyer@example.com".into()),
            current_period_end: None,
        }
    }

    #[test]
    fn a_credit_pack_grants_its_credits_to_the_buyers_address() {
        let email = order_email(order()).unwrap();
        assert_eq!(email.to, "buyer@example.com");
        assert_eq!(email.plan_name, "100 credits");
        assert_eq!((email.amount, email.currency.as_str()), (500, "usd"));
        assert_eq!(email.granted, ["100 credits"]);
    }

    #[test]
    fn each_thing_granted_is_one_line() {
        let expiring = ConfirmedOrder {
            credits: 50,
            credits_expire_after_days: Some(30),
            entitlement: Some("pro_lifetime".into()),
            ..order()
        };
        assert_eq!(
            order_email(expiring).unwrap().granted,
            ["50 credits, valid for 30 days", "pro_lifetime access"]
        );
        let subscription = ConfirmedOrder {
            credits: 0,
            credits_per_period: 1000,
            entitlement: Some("team".into()),
            subscription: true,
            current_period_end: Some(Utc.with_ymd_and_hms(2027, 1, 1, 12, 0, 0).unwrap()),
            ..order()
        };
        assert_eq!(
            order_email(subscription).unwrap().granted,
            ["1000 credits each paid period", "team access until 2027-01-01"]
        );
    }

    #[test]
    fn an_order_without_a_buyer_address_has_no_email() {
        for none in [None, Some(" ".to_owned())] {
            let why = order_email(ConfirmedOrder {
                buyer_email: none,
                ..order()
            })
            .unwrap_err();
            assert!(why.contains("no buyer email address"), "{why}");
        }
    }
}
