-- A subscription checkout left open in one tab and started again in another could be paid twice,
-- billing the buyer twice for one entitlement. So a user has at most one open (pending)
-- subscription checkout per entitlement: opening another first closes the old one at Stripe
-- (src/subscription_checkout.rs). Null for one-time purchases, which may be bought many times.
alter table orders add column subscription_entitlement text;
create unique index orders_one_open_subscription_checkout on orders (user_id, subscription_entitlement)
    where status = 'pending' and subscription_entitlement is not null;
