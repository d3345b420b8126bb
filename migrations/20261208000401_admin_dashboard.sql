-- The operator dashboard (/admin, issue #15) reads what the webhook already records; these let it
-- read it without scanning whole tables.

-- Stripe's `created` of each event, so an order's timeline shows when Stripe says a thing happened
-- (events arrive out of order) and the lag chart can show receipt minus creation. Null for events
-- recorded before this column existed, and for the rare event without one.
alter table processed_webhook_events add column event_created timestamptz;

-- An order's timeline. And the charts of the last hours: rows arrive in received_at order, so a
-- BRIN index (a few pages, next to nothing per insert on the webhook's path) finds the recent ones.
create index processed_webhook_events_order_idx on processed_webhook_events (order_id, received_at)
    where order_id is not null;
create index processed_webhook_events_received_brin on processed_webhook_events using brin (received_at);

-- Searching by a customer id, and an order's outbox messages.
create index orders_stripe_customer_id_idx on orders (stripe_customer_id) where stripe_customer_id is not null;
create index outbox_messages_order_idx on outbox_messages (order_id) where order_id is not null;
