//! Verifies the `Stripe-Signature` header on the raw webhook body, before anything parses it.
//!
//! Stripe signs `"{t}.{body}"` with HMAC-SHA256 under the endpoint secret and sends
//! `t=<unix seconds>,v1=<hex>[,v1=<hex>…][,v0=…]`. Several `v1` appear while Stripe rolls a secret;
//! other schemes are ignored. A delivery is accepted when any `v1` matches under any configured
//! secret and `t` is within the tolerance of our clock, in either direction, which bounds replays.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::Secret;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    MissingHeader,
    #[error("malformed Stripe-Signature header")]
    MalformedHeader,
    #[error("no v1 signature matches")]
    NoMatch,
    #[error("signature timestamp outside the tolerance")]
    OutsideTolerance,
}

impl SignatureError {
    /// A short name for the metrics' `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::MalformedHeader => "malformed_header",
            Self::NoMatch => "no_match",
            Self::OutsideTolerance => "outside_tolerance",
        }
    }
}

pub fn verify_stripe_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    tolerance: Duration,
    now_unix: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let (timestamp, signatures) = parse_header(header)?;

    // Checked before the HMAC so a stale replay costs us no hashing; the answer is the same either way.
    let age = now_unix.abs_diff(timestamp);
    if age > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance);
    }

    let timestamp = timestamp.to_string();
    for secret in secrets {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        for signature in &signatures {
            // verify_slice compares in constant time.
            if mac.clone().verify_slice(signature).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

/// Returns the single timestamp and every well-formed `v1` signature.
fn parse_header(header: &str) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part.trim().split_once('=').ok_or(SignatureError::MalformedHeader)?;
        match key {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::MalformedHeader);
                }
                timestamp = Some(value.parse::<i64>().map_err(|_| SignatureError::MalformedHeader)?);
            }
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoMatch);
    }
    Ok((timestamp, signatures))
}

/// Builds a header exactly as Stripe does; used by the emulator and by tests that play Stripe.
pub fn sign_stripe_payload(body: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_700_000_000;
    const TOLERANCE: Duration = Duration::from_secs(300);

    fn verify(header: Option<&str>, body: &[u8], secrets: &[&str]) -> Result<(), SignatureError> {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        verify_stripe_signature(header, body, &secrets, TOLERANCE, NOW)
    }

    #[test]
    fn a_header_signed_like_stripe_is_accepted() {
        let header = sign_stripe_payload(b"{}", SECRET, NOW);
        assert_eq!(verify(Some(&header), b"{}", &[SECRET]), Ok(()));
    }

    #[test]
    fn missing_malformed_and_tampered_inputs_are_refused() {
        let header = sign_stripe_payload(b"{\"a\":1}", SECRET, NOW);
        assert_eq!(verify(None, b"{}", &[SECRET]), Err(SignatureError::MissingHeader));
        assert_eq!(
            verify(Some("garbage"), b"{}", &[SECRET]),
            Err(SignatureError::MalformedHeader)
        );
        assert_eq!(
            verify(Some("t=abc,v1=00"), b"{}", &[SECRET]),
            Err(SignatureError::MalformedHeader)
        );
        assert_eq!(
            verify(Some("v1=00"), b"{}", &[SECRET]),
            Err(SignatureError::MalformedHeader)
        );
        assert_eq!(
            verify(Some(&header), b"{\"a\":2}", &[SECRET]),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(Some(&header), b"{\"a\":1}", &["whsec_other"]),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn timestamps_outside_the_tolerance_fail_in_both_directions() {
        for t in [NOW - 301, NOW + 301] {
            let header = sign_stripe_payload(b"{}", SECRET, t);
            assert_eq!(
                verify(Some(&header), b"{}", &[SECRET]),
                Err(SignatureError::OutsideTolerance)
            );
        }
        for t in [NOW - 300, NOW + 300] {
            let header = sign_stripe_payload(b"{}", SECRET, t);
            assert_eq!(verify(Some(&header), b"{}", &[SECRET]), Ok(()));
        }
    }

    #[test]
    fn only_v1_counts_and_any_v1_may_match_any_secret() {
        let valid = sign_stripe_payload(b"{}", SECRET, NOW);
        let v1 = valid.split_once("v1=").unwrap().1;
        assert_eq!(
            verify(Some(&format!("t={NOW},v0={v1}")), b"{}", &[SECRET]),
            Err(SignatureError::NoMatch)
        );
        let several = format!("t={NOW},v1={},v1={v1},v0=ignored", "ab".repeat(32));
        assert_eq!(verify(Some(&several), b"{}", &[SECRET]), Ok(()));
        assert_eq!(verify(Some(&valid), b"{}", &["whsec_old", SECRET]), Ok(()));
    }
}
