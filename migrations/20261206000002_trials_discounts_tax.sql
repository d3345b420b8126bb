-- Trials, promotion codes and tax (issue #14). A plan may start with a free trial and may let the
-- buyer enter a promotion code; both are fixed on the order when it is placed, like its price.
alter table plans
    add column trial_days integer check (trial_days between 1 and 730),
    add column allow_promotion_codes boolean not null default false;

-- `amount` stays the catalog price the payment is checked against (Stripe's subtotal, before
-- discounts and tax); these record what Stripe actually charged, null until the order is paid.
alter table orders
    add column trial_days integer,
    add column amount_paid bigint check (amount_paid >= 0),
    add column amount_discount bigint check (amount_discount >= 0),
    add column amount_tax bigint check (amount_tax >= 0);

-- The app's `order.*` webhooks say what was charged too (null until paid); the other fields stay.
create or replace function outbox_order_changed() returns trigger language plpgsql as $$
begin
    perform outbox_enqueue('webhook', 'order.' || new.status, new.user_id, new.id, jsonb_build_object(
        'orderId', new.id, 'userId', new.user_id, 'planId', new.plan_id, 'status', new.status,
        'amount', new.amount, 'currency', new.currency, 'amountPaid', new.amount_paid));
    return null;
end $$;
