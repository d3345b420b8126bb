//! Black-box tests of the running service: each test spawns the real application on a random port,
//! with its own fresh PostgreSQL database and its own Stripe emulator, and talks to it over HTTP.

mod app_webhook_helpers;
mod app_webhooks;
mod auth_and_ownership;
mod checkout;
mod checkout_limits;
mod connection_hygiene;
mod credit_expiry;
mod credits_api;
mod credits_clawbacks;
mod credits_concurrency;
mod credits_contract;
mod credits_from_payments;
mod credits_properties;
mod demo_credits;
mod email_sending;
mod emulator_mode;
mod helpers;
mod json_logs;
mod lifecycle_helpers;
mod livemode;
mod long_polling;
mod lookup_indexes;
mod operator_commands;
mod outbox_delivery;
mod reconciliation;
mod refunds_and_disputes;
mod resilience;
mod reversal_orderings;
mod reversal_properties;
mod service_mode;
mod signatures;
mod smtp_server;
mod subscription_checkouts;
mod subscriptions;
mod webhook_fulfillment;
