-- Plan changes (issue #14). A subscription's plan is the one its item's price maps to, as Stripe
-- last answered (`subscriptions.plan_id`, which now follows the newest answer instead of keeping
-- the first); an order's entitlement and period credits follow it.
--
-- Why an invoice was issued, as Stripe says (`billing_reason`): a proration invoice
-- (`subscription_update`) pays for the rest of a period already granted, so it grants no period of
-- its own. Null for payments recorded before this column: all of them opened or renewed a period.
alter table subscription_payments add column billing_reason text;
