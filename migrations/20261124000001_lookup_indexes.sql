-- Refund and dispute events name a payment intent, subscription events a subscription; finding the
-- order behind one, or the entitlement a dispute holds, read the whole table without these. Partial:
-- the ids are null until Stripe reports them (and the subscription id stays null for one-time
-- purchases), so those rows cost the indexes nothing.
create index orders_stripe_payment_intent_id_idx on orders (stripe_payment_intent_id)
    where stripe_payment_intent_id is not null;
create index orders_stripe_subscription_id_idx on orders (stripe_subscription_id)
    where stripe_subscription_id is not null;
create index entitlements_order_id_idx on entitlements (order_id) where order_id is not null;
