-- Reversals in any order (docs/lifecycle.md, "Reversals"). What Stripe tells us about a payment's
-- refunds and disputes is kept as facts keyed by Stripe's own ids, each merged so that the order the
-- events arrive in does not matter; an order's standing is derived from the facts whenever they or
-- the order change, so a refund that arrives before the payment it reverses is applied when the
-- payment is.

-- What an order grants and costs is fixed when it is placed: a catalog edited between order and
-- payment changes nothing for it. Orders placed before this column existed take their plan's.
alter table orders add column credits bigint not null default 0 check (credits >= 0);
alter table orders add column entitlement text;
update orders o set credits = p.credits, entitlement = p.entitlement from plans p where p.id = o.plan_id;

-- A payment that does not match its order is never granted and never silent: the order waits for a
-- person, with the reason.
alter table orders drop constraint orders_status_check;
alter table orders add constraint orders_status_check
    check (status in ('pending', 'paid', 'failed', 'canceled', 'refunded', 'disputed', 'under_review'));
alter table orders add column review_reason text;
create index orders_under_review_idx on orders (created_at) where status = 'under_review';

-- The order's standing derived from its payments' reversals: a full refund or a lost dispute
-- revokes, an open dispute suspends. Null while nothing stands against it.
alter table orders add column hold text check (hold in ('refunded', 'disputed', 'dispute_lost'));
-- Entitlements are derived from every order that grants them.
create index orders_user_entitlement_idx on orders (user_id, entitlement) where entitlement is not null;

-- A charge as its latest event showed it (`seen_at` is that event's `created`; of two snapshots
-- the later wins, and in the same second the one that refunded more).
create table payment_charges (
    stripe_charge_id         text primary key,
    stripe_payment_intent_id text,
    amount                   bigint not null check (amount >= 0),
    amount_refunded          bigint not null check (amount_refunded >= 0),
    seen_at                  bigint not null,
    updated_at               timestamptz not null default now()
);
create index payment_charges_payment_intent_idx on payment_charges (stripe_payment_intent_id)
    where stripe_payment_intent_id is not null;

-- Each refund we heard of. Its status only moves forward (pending → succeeded → failed/canceled),
-- whichever event says so first; `failed_at` is when the first event that saw it fail was created,
-- so a charge snapshot older than that still counted it.
create table payment_refunds (
    stripe_refund_id         text primary key,
    stripe_charge_id         text,
    stripe_payment_intent_id text,
    amount                   bigint not null check (amount >= 0),
    status                   text not null,
    failed_at                bigint,
    updated_at               timestamptz not null default now()
);
create index payment_refunds_charge_idx on payment_refunds (stripe_charge_id);
create index payment_refunds_payment_intent_idx on payment_refunds (stripe_payment_intent_id)
    where stripe_payment_intent_id is not null;

-- Disputes are kept whether or not their order is known yet; status only moves forward
-- (inquiry → chargeback → closed), a closed one never reopens.
alter table disputes alter column order_id drop not null;
alter table disputes add column stripe_payment_intent_id text;
alter table disputes add column stripe_charge_id text;
alter table disputes add column seen_at bigint not null default 0;
update disputes d set stripe_payment_intent_id = o.stripe_payment_intent_id from orders o where o.id = d.order_id;
create index disputes_payment_intent_idx on disputes (stripe_payment_intent_id)
    where stripe_payment_intent_id is not null;

-- Which order the charge paid for is found by payment intent through these, and subscription
-- payments know their order through the subscription.
create index subscription_payments_subscription_idx on subscription_payments (stripe_subscription_id);

-- A clawback handed back (a refund that failed or was canceled) is a ledger row too. Each
-- adjustment names the event that caused it, at most one of each kind per event and order.
alter table credit_ledger drop constraint credit_ledger_kind_check;
alter table credit_ledger add constraint credit_ledger_kind_check
    check (kind in ('purchase', 'refund', 'refund_reversal', 'dispute', 'dispute_reversal'));
drop index credit_ledger_one_row_per_stripe_object;
create unique index credit_ledger_one_adjustment_per_event
    on credit_ledger (order_id, kind, stripe_event_id) where kind <> 'purchase' and stripe_event_id is not null;

-- How far along a refund or a dispute is, so that merging two reports of one keeps the later
-- stage whichever arrives last. Unknown statuses rank as the earliest stage (a dispute status
-- Stripe adds later reads as still open: it keeps access suspended rather than handing it back).
create function refund_rank(status text) returns int language sql immutable as $$
    select case when status in ('failed', 'canceled') then 2 when status = 'succeeded' then 1 else 0 end
$$;
create function dispute_rank(status text) returns int language sql immutable as $$
    select case
        when status in ('won', 'lost', 'warning_closed', 'prevented', 'charge_refunded') then 10
        when status = 'under_review' then 3
        when status in ('needs_response', 'open') then 2
        when status = 'warning_under_review' then 1
        else 0
    end
$$;

-- Orders reversed before facts were kept: what was decided then stands. A full refund or a lost
-- dispute stays on the order as a hold no later fact can lift; a partial refund becomes a charge
-- snapshot keyed by the payment intent, replaced by the first real snapshot of that payment.
alter table orders add column legacy_hold text check (legacy_hold in ('refunded', 'dispute_lost'));
update orders o set legacy_hold = e.hold
    from entitlements e where e.order_id = o.id and e.hold in ('refunded', 'dispute_lost');
update orders set legacy_hold = 'refunded' where status = 'refunded' and legacy_hold is null;
update orders o set hold = coalesce(o.legacy_hold, case when o.status = 'disputed' then 'disputed' end);
insert into payment_charges (stripe_charge_id, stripe_payment_intent_id, amount, amount_refunded, seen_at)
    select 'legacy:' || stripe_payment_intent_id, stripe_payment_intent_id, amount, least(amount_refunded, amount), 0
    from orders where amount_refunded > 0 and stripe_payment_intent_id is not null
    on conflict do nothing;
