-- The payment lifecycle after checkout: subscriptions over time, refunds, disputes, reconciliation.

-- An order can be taken back (refunded) or contested (disputed, while the dispute is open).
-- amount_refunded is Stripe's running total for the order's charge; stripe_synced_at is when the
-- return page last asked Stripe about a pending order, so polls cannot turn into a flood of calls.
alter table orders drop constraint orders_status_check;
alter table orders add constraint orders_status_check
    check (status in ('pending', 'paid', 'failed', 'canceled', 'refunded', 'disputed'));
alter table orders add column amount_refunded bigint not null default 0 check (amount_refunded >= 0);
alter table orders add column stripe_synced_at timestamptz;

-- Clawbacks are ledger rows too, one per Stripe object (refund state, dispute) that caused them, so a
-- redelivered event cannot claw twice. The purchase stays once per order.
alter table credit_ledger drop constraint credit_ledger_kind_check;
alter table credit_ledger add constraint credit_ledger_kind_check
    check (kind in ('purchase', 'refund', 'dispute', 'dispute_reversal'));
alter table credit_ledger add column stripe_object_id text;
alter table credit_ledger drop constraint credit_ledger_order_id_kind_key;
create unique index credit_ledger_one_purchase_per_order on credit_ledger (order_id) where kind = 'purchase';
create unique index credit_ledger_one_row_per_stripe_object
    on credit_ledger (order_id, kind, stripe_object_id) where stripe_object_id is not null;

-- The last state of each subscription as Stripe reported it when we asked (never as an event's
-- snapshot said it), kept even before its checkout completes so that an early event is not lost.
create table subscriptions (
    stripe_subscription_id text primary key,
    order_id               uuid,
    user_id                text,
    plan_id                text,
    status                 text not null,
    current_period_end     timestamptz,
    cancel_at_period_end   boolean not null default false,
    stripe_event_id        text,
    updated_at             timestamptz not null default now()
);

-- Which subscription a payment paid for, so a refund or dispute of that payment finds it.
create table subscription_payments (
    stripe_payment_intent_id text primary key,
    stripe_subscription_id   text not null,
    stripe_invoice_id        text not null,
    stripe_event_id          text,
    created_at               timestamptz not null default now()
);

-- hold: a reversal of the payment that overrides what the subscription says (a refund or a lost
-- dispute revokes, an open dispute suspends) until a won dispute lifts it.
alter table entitlements drop constraint entitlements_status_check;
alter table entitlements add constraint entitlements_status_check
    check (status in ('active', 'past_due', 'suspended', 'revoked'));
alter table entitlements add column cancel_at_period_end boolean not null default false;
alter table entitlements add column hold text check (hold in ('refunded', 'disputed', 'dispute_lost'));

-- Every later change is a row naming its event; the grant stays once per order.
alter table entitlement_history drop constraint entitlement_history_change_check;
alter table entitlement_history add constraint entitlement_history_change_check
    check (change in ('grant', 'active', 'past_due', 'suspended', 'revoked', 'period_extended',
                      'cancel_scheduled', 'cancel_withdrawn'));
alter table entitlement_history add column detail text;
alter table entitlement_history drop constraint entitlement_history_order_id_change_key;
create unique index entitlement_history_one_grant_per_order on entitlement_history (order_id) where change = 'grant';

-- Where the reconciler stopped reading Stripe's event list.
create table reconciler_cursor (
    name          text primary key,
    created_up_to bigint not null,
    updated_at    timestamptz not null default now()
);

-- Each dispute we heard of and where it stands, so a `closed` that outran its `created` is not
-- followed by a suspension nobody will lift.
create table disputes (
    stripe_dispute_id text primary key,
    order_id          uuid not null references orders (id),
    status            text not null,
    updated_at        timestamptz not null default now()
);
