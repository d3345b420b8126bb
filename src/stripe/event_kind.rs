//! The Stripe event types the service acts on, named once. Any other type parses to `None` and is
//! recorded as ignored; the reconciler asks Stripe for exactly `EventKind::ALL`.

/// A Stripe event type we act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    CheckoutSessionCompleted,
    CheckoutSessionAsyncPaymentSucceeded,
    CheckoutSessionAsyncPaymentFailed,
    CheckoutSessionExpired,
    CustomerSubscriptionCreated,
    CustomerSubscriptionUpdated,
    CustomerSubscriptionDeleted,
    InvoicePaid,
    InvoicePaymentFailed,
    /// Carries the charge with its running refunded total; the other refund kinds carry the refund.
    ChargeRefunded,
    ChargeRefundUpdated,
    RefundCreated,
    RefundUpdated,
    RefundFailed,
    ChargeDisputeCreated,
    ChargeDisputeUpdated,
    ChargeDisputeClosed,
    ChargeDisputeFundsWithdrawn,
    ChargeDisputeFundsReinstated,
}

impl EventKind {
    /// Every kind, once: what the reconciler lists from Stripe.
    pub const ALL: [Self; 19] = [
        Self::CheckoutSessionCompleted,
        Self::CheckoutSessionAsyncPaymentSucceeded,
        Self::CheckoutSessionAsyncPaymentFailed,
        Self::CheckoutSessionExpired,
        Self::CustomerSubscriptionCreated,
        Self::CustomerSubscriptionUpdated,
        Self::CustomerSubscriptionDeleted,
        Self::InvoicePaid,
        Self::InvoicePaymentFailed,
        Self::ChargeRefunded,
        Self::ChargeRefundUpdated,
        Self::RefundCreated,
        Self::RefundUpdated,
        Self::RefundFailed,
        Self::ChargeDisputeCreated,
        Self::ChargeDisputeUpdated,
        Self::ChargeDisputeClosed,
        Self::ChargeDisputeFundsWithdrawn,
        Self::ChargeDisputeFundsReinstated,
    ];

    /// Stripe's name for the type, as in an event's `type` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CheckoutSessionCompleted => "checkout.session.completed",
            Self::CheckoutSessionAsyncPaymentSucceeded => "checkout.session.async_payment_succeeded",
            Self::CheckoutSessionAsyncPaymentFailed => "checkout.session.async_payment_failed",
            Self::CheckoutSessionExpired => "checkout.session.expired",
            Self::CustomerSubscriptionCreated => "customer.subscription.created",
            Self::CustomerSubscriptionUpdated => "customer.subscription.updated",
            Self::CustomerSubscriptionDeleted => "customer.subscription.deleted",
            Self::InvoicePaid => "invoice.paid",
            Self::InvoicePaymentFailed => "invoice.payment_failed",
            Self::ChargeRefunded => "charge.refunded",
            Self::ChargeRefundUpdated => "charge.refund.updated",
            Self::RefundCreated => "refund.created",
            Self::RefundUpdated => "refund.updated",
            Self::RefundFailed => "refund.failed",
            Self::ChargeDisputeCreated => "charge.dispute.created",
            Self::ChargeDisputeUpdated => "charge.dispute.updated",
            Self::ChargeDisputeClosed => "charge.dispute.closed",
            Self::ChargeDisputeFundsWithdrawn => "charge.dispute.funds_withdrawn",
            Self::ChargeDisputeFundsReinstated => "charge.dispute.funds_reinstated",
        }
    }

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
