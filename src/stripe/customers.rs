//! `POST /v1/customers`: the one Stripe customer of a user.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use stripe::IdempotencyKey;

use super::{
    ProviderError,
    api::StripeApi,
    form_post::{FormPost, post_form},
};

pub struct CreatedCustomer {
    pub id: String,
    pub livemode: bool,
}

#[derive(Deserialize)]
struct CustomerObject {
    id: String,
    #[serde(default)]
    livemode: bool,
}

/// Creates the user's customer, with `metadata[user_id]` so it can be traced back in Stripe's
/// dashboard. Every attempt, from any instance, carries the same idempotency key for the user, so
/// two first checkouts at once are answered with one customer (Stripe keeps a key for 24 hours:
/// longer than any race, and a stored customer is never created again).
///
/// `replacing` names a stored customer Stripe no longer has (deleted in the Dashboard): the new one
/// gets a key of its own derived from both, so it is not the deleted one replayed, and checkouts
/// racing to replace it still get one customer.
pub async fn create_customer(
    api: &StripeApi,
    user_id: &str,
    replacing: Option<&str>,
) -> Result<CreatedCustomer, ProviderError> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("metadata[user_id]", user_id)
        .finish();
    let key = match replacing {
        None => customer_key(user_id),
        Some(gone) => customer_key(&format!("{user_id}\nreplacing {gone}")),
    };
    let post = FormPost {
        endpoint: "POST /v1/customers",
        path: "/customers",
        body: &body,
        key: &key,
        what: "creating the customer",
    };
    let customer: CustomerObject = post_form(api, post).await?;
    Ok(CreatedCustomer {
        id: customer.id,
        livemode: customer.livemode,
    })
}

/// A digest of the user id rather than the id itself: user ids come from the identity provider and
/// may be long (Stripe takes keys of up to 255 characters) or personal (keys show in Stripe's logs).
fn customer_key(user_id: &str) -> IdempotencyKey {
    let digest = hex::encode(Sha256::digest(user_id.as_bytes()));
    IdempotencyKey::new(format!("entitle-customer-{digest}")).expect("a digest key is short and non-empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_customer_key_is_the_same_every_time_and_names_no_user() {
        let key = customer_key("alice@example.com");
        assert_eq!(key.as_str(), customer_key("alice@example.com").as_str());
        assert_ne!(key.as_str(), customer_key("bob@example.com").as_str());
        assert!(!key.as_str().contains("alice"));
        assert!(customer_key(&"x".repeat(10_000)).as_str().len() < 100);
    }
}
