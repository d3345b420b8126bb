//! Catching up with Stripe when a webhook is late or lost. Both paths apply what they find through
//! the same functions the webhook uses, so whichever notices a payment first grants it, once.

pub mod failures;
pub mod missed_events;
pub mod return_page;
