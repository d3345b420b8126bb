//! The transactional outbox: what the app hears of, and how it is sent.

pub mod signing;
