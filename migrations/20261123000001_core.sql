-- The catalog as last loaded from plans.toml. Orders reference it; a plan removed from the file is
-- kept (old orders point at it) but marked inactive so nobody can buy it any more.
create table plans (
    id           text primary key,
    name         text not null,
    kind         text not null check (kind in ('one_time', 'subscription')),
    amount       bigint not null check (amount >= 0),
    currency     text not null check (currency ~ '^[a-z]{3}$'),
    interval     text check (interval in ('day', 'week', 'month', 'year')),
    credits      bigint not null default 0 check (credits >= 0),
    entitlement  text,
    stripe_price text,
    active       boolean not null default true,
    updated_at   timestamptz not null default now(),
    check ((kind = 'subscription') = (interval is not null))
);

create table orders (
    id                         uuid primary key,
    user_id                    text not null,
    plan_id                    text not null references plans (id),
    status                     text not null default 'pending'
                               check (status in ('pending', 'paid', 'failed', 'canceled')),
    amount                     bigint not null check (amount >= 0),
    currency                   text not null,
    stripe_checkout_session_id text unique,
    stripe_payment_intent_id   text,
    stripe_subscription_id     text,
    stripe_customer_id         text,
    created_at                 timestamptz not null default now(),
    paid_at                    timestamptz,
    updated_at                 timestamptz not null default now()
);

create index orders_user_id_idx on orders (user_id, created_at desc);

-- One row per Stripe event id, written in the same transaction as the event's effects: a redelivered
-- event finds its row and changes nothing.
create table processed_webhook_events (
    event_id    text primary key,
    event_type  text not null,
    outcome     text not null,
    order_id    uuid references orders (id),
    received_at timestamptz not null default now()
);

-- Append-only: a balance is the sum of a user's rows. The unique key makes an order's purchase grant
-- happen at most once, whatever path or event tries to grant it.
create table credit_ledger (
    id              bigserial primary key,
    user_id         text not null,
    order_id        uuid references orders (id),
    kind            text not null check (kind in ('purchase')),
    delta           bigint not null,
    stripe_event_id text,
    created_at      timestamptz not null default now(),
    unique (order_id, kind)
);

create index credit_ledger_user_id_idx on credit_ledger (user_id);

create table entitlements (
    user_id                text not null,
    key                    text not null,
    status                 text not null check (status in ('active', 'past_due', 'revoked')),
    stripe_subscription_id text,
    order_id               uuid references orders (id),
    current_period_end     timestamptz,
    updated_at             timestamptz not null default now(),
    primary key (user_id, key)
);

-- Every change to an entitlement, naming the event that caused it. The unique key makes an order's
-- grant happen at most once.
create table entitlement_history (
    id              bigserial primary key,
    user_id         text not null,
    key             text not null,
    order_id        uuid references orders (id),
    change          text not null check (change in ('grant')),
    stripe_event_id text,
    created_at      timestamptz not null default now(),
    unique (order_id, change)
);
