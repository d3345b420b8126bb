//! Everything that speaks Stripe: the API client we call, the signature check on what Stripe sends
//! us, and the few event fields we read.

mod api;
pub mod billing_portal;
mod checkout;
pub mod customers;
pub mod event;
mod event_kind;
pub mod failure;
mod form_post;
pub mod lifecycle_objects;
pub mod retrieve;
pub mod signature;
pub mod subscription_update;

pub use api::StripeApi;
pub use checkout::{
    CheckoutRequest, CreatedSession, ProviderError, build_client, create_checkout_session, expire_checkout_session,
};
