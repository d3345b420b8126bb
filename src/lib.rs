//! Entitle: turns Stripe Checkout payments into credits and entitlements, granted exactly once from
//! signed webhooks, on PostgreSQL.

pub mod app;
pub mod auth;
pub mod catalog;
pub mod checkout;
pub mod checkout_limits;
pub mod cli;
pub mod config;
pub mod credits;
pub mod db;
pub mod domain_error;
pub mod entitlement;
pub mod error;
pub mod extract;
pub mod fulfillment;
pub mod holdings;
pub mod lifecycle;
pub mod mail;
pub mod order_events;
pub mod order_lookup;
pub mod orders;
pub mod outcome;
pub mod plan;
pub mod rate_limit;
pub mod reconcile;
pub mod routes;
pub mod service_mode;
pub mod startup;
pub mod state;
pub mod store;
pub mod stripe;
pub mod stripe_emulator;
pub mod subscription_checkout;
pub mod user_id;
