-- One Stripe customer per user: made on the user's first checkout (or taken from a session that
-- already named one) and sent with every later Checkout Session, so the billing portal shows the
-- user everything they pay for. The unique customer id means no two users can ever share one.
create table stripe_customers (
    user_id            text primary key,
    stripe_customer_id text not null unique,
    livemode           boolean not null,
    created_at         timestamptz not null default now()
);
