//! The operator dashboard's read models (`/admin`): who may see it, what a search finds, an
//! order's timeline, a user's credits, the lists that need a person and the webhook activity of
//! the last hours. Everything is read through the store; nothing here writes, except that a
//! user's balance writes the expiries that fell due, as every read of a balance does.

pub mod access;
pub mod activity;
pub mod attention;
pub mod order;
pub mod search;
pub mod user;
