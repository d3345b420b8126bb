\set n random(1, 400000)
begin;
insert into processed_webhook_events (event_id, event_type, outcome) values ('evt_' || :n, 'checkout.session.completed', 'processing') on conflict (event_id) do nothing;
select o.id, o.user_id, o.status, o.amount, o.currency, o.stripe_checkout_session_id, p.credits, p.entitlement from orders o join plans p on p.id = o.plan_id where o.stripe_checkout_session_id = 'cs_' || :n for no key update of o;
update orders set status = 'paid', paid_at = now(), updated_at = now(), stripe_payment_intent_id = coalesce(stripe_payment_intent_id, 'pi_x') where stripe_checkout_session_id = 'cs_' || :n;
insert into credit_ledger (user_id, order_id, kind, delta, stripe_event_id) select user_id, id, 'purchase', 100, 'evt_' || :n from orders where stripe_checkout_session_id = 'cs_' || :n on conflict do nothing;
update processed_webhook_events set outcome = 'fulfilled' where event_id = 'evt_' || :n;
commit;
