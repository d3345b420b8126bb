//! Standard Webhooks signatures (standardwebhooks.com), which the app's receiver checks with the
//! official libraries: `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
//! keyed with the bytes the `whsec_<base64>` secret encodes.

use std::fmt;

use base64::{
    Engine,
    alphabet::STANDARD,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig, general_purpose},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the specification asks of a secret: at least 24 bytes (192 bits), at most 64 (the
/// `KeyError::Length` message says so too).
pub const KEY_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// The official libraries pad the secret before decoding it, so one written without its `=` is
/// the same secret to them; it is to us too.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A signing key, decoded from `whsec_<base64>`. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

/// Why a secret was refused; never quotes it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("must start with whsec_")]
    Prefix,
    #[error("the part after whsec_ must be base64")]
    Base64,
    #[error("must encode 24 to 64 bytes after whsec_, not {0}")]
    Length(usize),
}

impl SigningKey {
    pub fn from_whsec(secret: &str) -> Result<Self, KeyError> {
        let encoded = secret.strip_prefix("whsec_").ok_or(KeyError::Prefix)?;
        let key = SECRET_BASE64.decode(encoded).map_err(|_| KeyError::Base64)?;
        if !KEY_BYTES.contains(&key.len()) {
            return Err(KeyError::Length(key.len()));
        }
        Ok(Self(key))
    }

    /// `v1,<base64 signature>` of one message as sent at `timestamp` (unix seconds).
    fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        format!("v1,{}", general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-signature` header: one signature per key, space-separated. A receiver accepts a
/// message when any one matches, so a secret is rotated by configuring the new one beside the old.
pub fn signature_header(keys: &[SigningKey], id: &str, timestamp: i64, body: &str) -> String {
    keys.iter()
        .map(|key| key.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specifications_test_vector_is_signed_as_it_says() {
        let key = SigningKey::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature_header(
                &[key],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn with_two_keys_the_header_carries_both_signatures() {
        let old = SigningKey::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = SigningKey::from_whsec(&format!("whsec_{}", general_purpose::STANDARD.encode([7u8; 32]))).unwrap();
        let header = signature_header(&[old.clone(), new.clone()], "msg_1", 1, "{}");
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts, [old.sign("msg_1", 1, "{}"), new.sign("msg_1", 1, "{}")]);
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn secrets_are_refused_unless_whsec_and_base64_of_24_to_64_bytes() {
        assert_eq!(
            SigningKey::from_whsec("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            Err(KeyError::Prefix)
        );
        assert_eq!(SigningKey::from_whsec("whsec_not base64!"), Err(KeyError::Base64));
        assert_eq!(SigningKey::from_whsec("whsec_c2hvcnQ="), Err(KeyError::Length(5)));
        let long = general_purpose::STANDARD.encode([1u8; 65]);
        assert_eq!(
            SigningKey::from_whsec(&format!("whsec_{long}")),
            Err(KeyError::Length(65))
        );
        // Padding may be left out, as the official libraries allow.
        let unpadded = general_purpose::STANDARD_NO_PAD.encode([2u8; 25]);
        let padded = general_purpose::STANDARD.encode([2u8; 25]);
        assert_eq!(
            SigningKey::from_whsec(&format!("whsec_{unpadded}")).unwrap(),
            SigningKey::from_whsec(&format!("whsec_{padded}")).unwrap()
        );
    }

    #[test]
    fn a_key_does_not_appear_in_debug_output() {
        let key = SigningKey::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey([redacted])");
    }
}
