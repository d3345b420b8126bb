pub mod checkout;
pub mod entitlements;
pub mod health;
pub mod order_status;
pub mod plans;
pub mod webhook;
