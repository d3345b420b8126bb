//! Who may open the dashboard, and the sign-in cookie. The cookie holds an expiry and an HMAC of
//! it keyed by `ADMIN_TOKEN`, never the token: a leaked cookie lapses, and changing the token
//! signs everyone out.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Config;

/// How long a sign-in lasts.
pub const SESSION_SECS: i64 = 12 * 3600;

/// What `/admin` asks of a caller, decided once from the configuration.
#[derive(Clone)]
pub enum AdminAccess {
    /// Emulator mode without `ADMIN_TOKEN`: nothing real is at stake, so anyone may look.
    Open,
    /// `ADMIN_TOKEN` set: its bearer, or a cookie signed with it.
    Token(AdminKey),
    /// A real Stripe key and no `ADMIN_TOKEN`: nobody (fail closed).
    Closed,
}

impl AdminAccess {
    pub fn from_config(config: &Config) -> Self {
        match (&config.admin_token, config.stripe.is_emulator()) {
            (Some(token), _) => Self::Token(AdminKey::new(token.expose())),
            (None, true) => Self::Open,
            (None, false) => Self::Closed,
        }
    }
}

/// `ADMIN_TOKEN`, kept as the key its sessions are signed with; `Debug` cannot print it.
#[derive(Clone)]
pub struct AdminKey(std::sync::Arc<String>);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey([redacted])")
    }
}

impl AdminKey {
    pub fn new(token: &str) -> Self {
        Self(std::sync::Arc::new(token.to_owned()))
    }

    /// Whether `candidate` is the token, in time that depends on neither's bytes nor length.
    pub fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        let digest = |text: &str| -> [u8; 32] { <Sha256 as sha2::Digest>::digest(text.as_bytes()).into() };
        digest(candidate).ct_eq(&digest(&self.0)).into()
    }

    /// A session cookie's value valid until `expires` (unix seconds).
    pub fn session(&self, expires: i64) -> String {
        format!("{expires}.{}", hex::encode(self.mac(expires).finalize().into_bytes()))
    }

    /// Whether `value` is a session this key signed that has not expired at `now`.
    pub fn accepts_session(&self, value: &str, now: i64) -> bool {
        let Some((expires, signature)) = value.split_once('.') else {
            return false;
        };
        let (Ok(expires), Ok(signature)) = (expires.parse::<i64>(), hex::decode(signature)) else {
            return false;
        };
        // `verify_slice` compares in constant time.
        expires > now && self.mac(expires).verify_slice(&signature).is_ok()
    }

    fn mac(&self, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(b"entitle-admin-session:");
        mac.update(expires.to_string().as_bytes());
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "operator-token-0123456789abcdefghijklmn";

    #[test]
    fn a_session_is_accepted_until_it_expires_and_only_by_its_own_key() {
        let key = AdminKey::new(TOKEN);
        let session = key.session(1_000);
        assert!(!session.contains(TOKEN));
        assert!(key.accepts_session(&session, 999));
        assert!(!key.accepts_session(&session, 1_000));
        assert!(!AdminKey::new("another-token-0123456789abcdefghijklmno").accepts_session(&session, 999));
        // A later expiry with the old signature is refused.
        let (_, signature) = session.split_once('.').unwrap();
        assert!(!key.accepts_session(&format!("2000.{signature}"), 999));
        for garbage in ["", "1000", "x.y", "1000.zz", "1000."] {
            assert!(!key.accepts_session(garbage, 0), "{garbage}");
        }
    }

    #[test]
    fn the_token_matches_only_itself() {
        let key = AdminKey::new(TOKEN);
        assert!(key.matches(TOKEN));
        assert!(!key.matches(&TOKEN[1..]));
        assert!(!key.matches(""));
    }
}
