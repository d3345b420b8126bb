-- The common webhook, in one round trip (issue #16): a paid one-time checkout whose order is
-- pending, grants only credits and was priced as placed, with nothing on file about its payment.
-- `src/fulfillment.rs` decides every other case, and this function hands those back to it
-- without deciding anything: it answers 'claimed' (the event's id is taken, the order and payment
-- locks held, nothing else written) and the Rust path goes on in the same transaction. Each step
-- is the statement the Rust path sends for it, in its order (the store function named beside it),
-- so the two cannot grant differently; the suite runs both.
create function fulfil_one_time_checkout(
    p_event_id text, p_event_type text, p_event_created bigint,
    p_session_id text,
    -- The order id the session names (client_reference_id or metadata), as the Rust path reads it.
    p_order_id uuid,
    p_payment_intent text, p_customer text, p_buyer_email text,
    -- What the session charged (`CheckoutSessionObject::charged`), and whether its total adds up.
    p_currency text, p_subtotal bigint, p_total bigint, p_discount bigint, p_tax bigint, p_adds_up boolean
) returns table (outcome text, order_id uuid, user_id text, credits bigint)
language plpgsql as $$
declare
    o record;
begin
    -- processed_events::claim
    insert into processed_webhook_events (event_id, event_type, outcome, event_created)
        values (p_event_id, p_event_type, 'processing', to_timestamp(nullif(p_event_created, 0)))
        on conflict (event_id) do nothing;
    if not found then
        return query select 'duplicate', null::uuid, null::text, null::bigint;
        return;
    end if;
    -- lifecycle::payment_facts::lock_payment, before the order's lock as reversals take them.
    perform pg_advisory_xact_lock(hashtext('payment' || ':' || p_payment_intent));
    -- orders::lock_by_session, else orders::lock_by_id
    select x.id, x.user_id, x.status, x.amount, x.currency, x.stripe_checkout_session_id as session_id,
           x.credits, x.credits_expire_after_days, x.entitlement
        into o from orders x where x.stripe_checkout_session_id = p_session_id for no key update;
    if not found and p_order_id is not null then
        select x.id, x.user_id, x.status, x.amount, x.currency, x.stripe_checkout_session_id as session_id,
               x.credits, x.credits_expire_after_days, x.entitlement
            into o from orders x where x.id = p_order_id for no key update;
    end if;
    -- Anything unknown (a null) hands the event back too.
    if coalesce(o.id is null
       -- Found by its session: one found by the order id alone is the Rust path's to judge.
       or o.session_id is distinct from p_session_id
       or o.status <> 'pending'
       or o.entitlement is not null
       -- `priced_as_ordered` without its trial case; currencies compared as ASCII letters.
       or p_currency !~ '^[A-Za-z]+$' or upper(p_currency) <> upper(o.currency)
       or p_subtotal is distinct from o.amount
       or not p_adds_up
       -- payment_facts::any_facts_for: a refund or dispute that came first is settled in Rust.
       or exists (select 1 from payment_charges where stripe_payment_intent_id = p_payment_intent)
       or exists (select 1 from payment_refunds where stripe_payment_intent_id = p_payment_intent)
       or exists (select 1 from disputes where stripe_payment_intent_id = p_payment_intent), true) then
        return query select 'claimed', null::uuid, null::text, null::bigint;
        return;
    end if;
    -- orders::mark_paid, its notification standing down as there for a caller that wakes after
    -- the commit.
    update orders x set
        status = 'paid', paid_at = now(), updated_at = now(),
        amount_paid = coalesce(p_total, 0), amount_discount = p_discount, amount_tax = p_tax,
        stripe_checkout_session_id = coalesce(x.stripe_checkout_session_id, p_session_id),
        stripe_payment_intent_id = coalesce(x.stripe_payment_intent_id, p_payment_intent),
        stripe_customer_id = coalesce(x.stripe_customer_id, p_customer),
        buyer_email = coalesce(x.buyer_email, p_buyer_email)
        where x.id = o.id;
    if current_setting('entitle.wake_after_commit', true) is distinct from 'on' then
        perform pg_notify('order_status', o.id::text);
    end if;
    -- credits::grant_purchase
    if o.credits > 0 then
        perform credit_grant(o.user_id, 'purchase', 'purchase', o.id, null, null, null, null, o.credits,
                             now() + make_interval(days => o.credits_expire_after_days), p_event_id);
    end if;
    -- processed_events::record_outcome
    update processed_webhook_events e set outcome = 'fulfilled', order_id = o.id where e.event_id = p_event_id;
    return query select 'fulfilled', o.id, o.user_id, o.credits;
end $$;
