//! The Stripe event types the service acts on, named once. Any other type parses to `None` and is
//! recorded as ignored; the reconciler asks Stripe for exactly `EventKind::ALL`.

/// Declares the enum, `ALL` and `as_str` from one list, so a kind cannot be added to one and
/// forgotten in another (the reconciler asks Stripe for exactly `ALL`).
macro_rules! event_kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// A Stripe event type we act on.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $($(#[$doc])* $variant,)*
        }

        impl EventKind {
            /// Every kind, once: what the reconciler lists from Stripe.
            pub const ALL: [Self; [$($name),*].len()] = [$(Self::$variant),*];

            /// Stripe's name for the type, as in an event's `type` field.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

event_kinds! {
    CheckoutSessionCompleted => "checkout.session.completed",
    CheckoutSessionAsyncPaymentSucceeded => "checkout.session.async_payment_succeeded",
    CheckoutSessionAsyncPaymentFailed => "checkout.session.async_payment_failed",
    CheckoutSessionExpired => "checkout.session.expired",
    CustomerSubscriptionCreated => "customer.subscription.created",
    CustomerSubscriptionUpdated => "customer.subscription.updated",
    CustomerSubscriptionDeleted => "customer.subscription.deleted",
    InvoicePaid => "invoice.paid",
    InvoicePaymentFailed => "invoice.payment_failed",
    /// Carries the charge with its running refunded total; the other refund kinds carry the refund.
    ChargeRefunded => "charge.refunded",
    ChargeRefundUpdated => "charge.refund.updated",
    RefundCreated => "refund.created",
    RefundUpdated => "refund.updated",
    RefundFailed => "refund.failed",
    ChargeDisputeCreated => "charge.dispute.created",
    ChargeDisputeUpdated => "charge.dispute.updated",
    ChargeDisputeClosed => "charge.dispute.closed",
    ChargeDisputeFundsWithdrawn => "charge.dispute.funds_withdrawn",
    ChargeDisputeFundsReinstated => "charge.dispute.funds_reinstated",
}

impl EventKind {
    /// The kind Stripe's `event_type` names; `None` for a type we do not act on. Read back through
    /// `as_str`, so the names are written in one place.
    pub fn parse(event_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == event_type)
    }

    /// A Checkout Session changed state: fulfilment decides what it does to its order.
    pub fn is_checkout_session(self) -> bool {
        matches!(
            self,
            Self::CheckoutSessionCompleted
                | Self::CheckoutSessionAsyncPaymentSucceeded
                | Self::CheckoutSessionAsyncPaymentFailed
                | Self::CheckoutSessionExpired
        )
    }

    /// A subscription or its invoice changed: Stripe's current state of the subscription is fetched
    /// before the event's transaction, as the event's own snapshot may be stale.
    pub fn is_subscription(self) -> bool {
        self.is_invoice()
            || matches!(
                self,
                Self::CustomerSubscriptionCreated
                    | Self::CustomerSubscriptionUpdated
                    | Self::CustomerSubscriptionDeleted
            )
    }

    /// The subscription events whose object is an invoice rather than the subscription.
    pub fn is_invoice(self) -> bool {
        matches!(self, Self::InvoicePaid | Self::InvoicePaymentFailed)
    }

    /// Reports a refund: the charge with its running total, or the refund itself.
    pub fn is_refund(self) -> bool {
        matches!(
            self,
            Self::ChargeRefunded
                | Self::ChargeRefundUpdated
                | Self::RefundCreated
                | Self::RefundUpdated
                | Self::RefundFailed
        )
    }

    pub fn is_dispute(self) -> bool {
        matches!(
            self,
            Self::ChargeDisputeCreated
                | Self::ChargeDisputeUpdated
                | Self::ChargeDisputeClosed
                | Self::ChargeDisputeFundsWithdrawn
                | Self::ChargeDisputeFundsReinstated
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::EventKind;

    #[test]
    fn every_kind_reads_back_from_its_stripe_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind), "{kind:?}");
        }
    }

    #[test]
    fn a_type_we_do_not_act_on_parses_to_none() {
        for event_type in ["payment_intent.succeeded", "checkout.session", "", "Invoice.Paid"] {
            assert_eq!(EventKind::parse(event_type), None, "{event_type}");
        }
    }

    #[test]
    fn all_names_each_kind_once() {
        let kinds: HashSet<_> = EventKind::ALL.into_iter().collect();
        let names: HashSet<_> = EventKind::ALL.into_iter().map(EventKind::as_str).collect();
        assert_eq!((kinds.len(), names.len()), (EventKind::ALL.len(), EventKind::ALL.len()));
    }

    #[test]
    fn every_kind_acted_on_is_in_exactly_one_group() {
        for kind in EventKind::ALL {
            let groups = [
                kind.is_checkout_session(),
                kind.is_subscription(),
                kind.is_refund(),
                kind.is_dispute(),
            ];
            assert_eq!(groups.into_iter().filter(|&in_group| in_group).count(), 1, "{kind:?}");
        }
    }

    #[test]
    fn invoice_kinds_are_subscription_kinds() {
        for kind in EventKind::ALL.into_iter().filter(|kind| kind.is_invoice()) {
            assert!(kind.is_subscription(), "{kind:?}");
            assert!(kind.as_str().starts_with("invoice."), "{kind:?}");
        }
    }
}
