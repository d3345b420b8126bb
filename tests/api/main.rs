//! Black-box tests of the running service: each test spawns the real application on a random port,
//! with its own fresh PostgreSQL database and its own Stripe emulator, and talks to it over HTTP.

mod auth_and_ownership;
mod checkout;
mod helpers;
mod long_polling;
mod resilience;
mod signatures;
mod webhook_fulfillment;
