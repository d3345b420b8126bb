-- Run after the migrations in a scratch database (see docs/performance.md, "One round trip").
-- 400,000 pending orders, and the fulfilment of a paid one-time order as one function call,
-- with and without the notify.
insert into plans (id, name, kind, amount, currency, credits) values ('credits_100', '100 credits', 'one_time', 500, 'usd', 100);
insert into orders (id, user_id, plan_id, status, amount, currency, stripe_checkout_session_id)
select gen_random_uuid(), 'u' || i, 'credits_100', 'pending', 500, 'usd', 'cs_' || i from generate_series(1, 400000) i;

create function fulfil(p_event text, p_session text, p_notify boolean) returns text language plpgsql as $$
declare o record;
begin
  insert into processed_webhook_events (event_id, event_type, outcome)
  values (p_event, 'checkout.session.completed', 'processing') on conflict (event_id) do nothing;
  if not found then return 'duplicate'; end if;
  select o2.id, o2.user_id, o2.status, p.credits into o
  from orders o2 join plans p on p.id = o2.plan_id
  where o2.stripe_checkout_session_id = p_session for no key update of o2;
  update orders set status = 'paid', paid_at = now(), updated_at = now(),
         stripe_payment_intent_id = coalesce(stripe_payment_intent_id, 'pi_x')
  where id = o.id;
  if p_notify then perform pg_notify('order_status', o.id::text); end if;
  insert into credit_ledger (user_id, order_id, kind, delta, stripe_event_id)
  values (o.user_id, o.id, 'purchase', o.credits, p_event) on conflict do nothing;
  update processed_webhook_events set outcome = 'fulfilled', order_id = o.id where event_id = p_event;
  return 'fulfilled';
end $$;
vacuum analyze;
