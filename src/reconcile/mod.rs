//! Catching up with Stripe when a webhook is late or lost: the return page's sync, the missed-event
//! reconciler and the drift check. Each applies what it finds through the same functions the
//! webhook uses, so whichever notices a payment first grants it, once.

pub mod drift;
pub mod failures;
pub mod missed_events;
pub mod return_page;
