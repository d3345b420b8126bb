//! The transactional outbox: what the app hears of, and how it is sent. Messages and their
//! deliveries are written by triggers (migration 20261204000001) in the transaction of the change
//! they announce, so a change that rolls back announced nothing. Here, after commit, senders in
//! any number of instances claim due deliveries under a lease and POST each, signed the Standard
//! Webhooks way, to the app's endpoints: at least once, with per-endpoint backoff, until a 2xx, a
//! 410 (the endpoint is disabled) or the give-up time. The buyer's confirmation email is one more
//! kind of endpoint (the mailer), with the same leases, retries and records.

pub mod backoff;
pub mod confirmation;
mod delivery;
pub mod dispatch;
mod email;
pub mod endpoints;
pub mod operator;
pub mod payload;
pub mod sender;
pub mod signing;
pub mod wake;
