-- Stripe's answer about a subscription is now fetched before the event's transaction, so answers
-- fetched at the same time can be stored in either order: each row keeps when its answer arrived,
-- and only a later answer replaces its state. Null for rows stored before (any answer replaces them).
alter table subscriptions add column stripe_answered_at timestamptz;
