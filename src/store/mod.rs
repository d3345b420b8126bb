//! The only place SQL lives: one module per table or aggregate, each query checked against the
//! migrations at compile time (`sqlx::query!`, offline data in `.sqlx/`). Functions take the caller's
//! connection or transaction, so the domain decides where a transaction begins and ends. Nothing
//! here knows about HTTP or Stripe's objects.

pub mod credit_ledger;
pub mod database;
pub mod entitlements;
pub mod job_locks;
pub mod job_runs;
pub mod notifications;
pub mod order_confirmation;
pub mod order_history;
pub mod order_standing;
pub mod orders;
pub mod outbox_attempts;
pub mod outbox_deliveries;
pub mod outbox_endpoints;
pub mod outbox_messages;
pub mod payment_facts;
pub mod plans;
pub mod processed_events;
pub mod rate_buckets;
pub mod reconciler;
pub mod service_mode;
pub mod stripe_customers;
pub mod subscriptions;
pub mod user_versions;
