-- The naive fulfilment of a paid one-time order, one round trip per statement: the statements
-- src/fulfillment.rs sends through src/store/, in its order, with the claim's answer deciding (as
-- a client would) whether the rest runs. Clients 2j and 2j+1 deliver the same events in step
-- (the m-th: event j + pairs * m), so every event arrives twice and the copies race, as many
-- first deliveries as duplicates. Variables from pgbench -D: run (this run's id), pairs, k (0).
\set k :k + 1
\set n :client_id / 2 + :pairs * (:k - 1)
begin;
with claimed as (
    insert into processed_webhook_events (event_id, event_type, outcome, event_created)
    values ('evt_pgbench_' || :run || '_' || :n, 'checkout.session.completed', 'processing', now())
    on conflict (event_id) do nothing
    returning 1
) select count(*) as fresh from claimed \gset
\if :fresh
select pg_advisory_xact_lock(hashtext('payment' || ':' || 'pi_pgbench_' || :run || '_' || :n));
select id as order_id, user_id, status, amount, currency, stripe_checkout_session_id as session_id, credits,
       credits_expire_after_days, entitlement, trial_days
from orders where stripe_checkout_session_id = 'cs_pgbench_' || :run || '_' || :n for no key update \gset
update orders set
    status = 'paid', paid_at = now(), updated_at = now(),
    amount_paid = :amount, amount_discount = 0, amount_tax = 0,
    stripe_checkout_session_id = coalesce(stripe_checkout_session_id, :session_id),
    stripe_payment_intent_id = coalesce(stripe_payment_intent_id, 'pi_pgbench_' || :run || '_' || :n),
    stripe_subscription_id = coalesce(stripe_subscription_id, null),
    stripe_customer_id = coalesce(stripe_customer_id, null),
    buyer_email = coalesce(buyer_email, 'customer@example.com')
where id = :order_id::uuid
returning pg_notify('order_status', id::text);
select outcome, grant_id, granted, remaining, expires_at
from credit_grant(:user_id, 'purchase', 'purchase', :order_id::uuid, null, null, null, null, :credits, null,
                  'evt_pgbench_' || :run || '_' || :n);
select (exists (select 1 from payment_charges where stripe_payment_intent_id = 'pi_pgbench_' || :run || '_' || :n)
     or exists (select 1 from payment_refunds where stripe_payment_intent_id = 'pi_pgbench_' || :run || '_' || :n)
     or exists (select 1 from disputes where stripe_payment_intent_id = 'pi_pgbench_' || :run || '_' || :n)) as any_facts;
update processed_webhook_events set outcome = 'fulfilled', order_id = :order_id::uuid
where event_id = 'evt_pgbench_' || :run || '_' || :n;
\endif
commit;
