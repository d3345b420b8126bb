//! The HTTP layer: one module per route (or group of routes). Each extracts, calls the domain and
//! maps its errors through `AppError`; no rule and no SQL lives here.

pub mod admin;
pub mod billing_portal;
pub mod cancel_checkout;
pub mod checkout;
pub mod credits;
pub mod demo;
pub mod dev_credits;
pub mod dev_mail;
pub mod dev_token;
pub mod entitlements;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod order_status;
pub mod plans;
pub mod subscription_change;
pub mod webhook;
