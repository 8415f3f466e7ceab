//! `X-Linkpulse-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`.
//!
//! The key is the endpoint's secret as text (its 64 hex digits, as `webhooks add` printed them),
//! so a receiver verifies with one line of any language's HMAC. The timestamp is signed with the
//! body, so a captured delivery cannot be replayed later with a fresh `t`: receivers reject a `t`
//! far from their clock. During a rotation both the new and the previous secret sign (two `v1=`
//! entries, new first, as Stripe does): a receiver that still has the old secret, or already the
//! new one, accepts the delivery.
//!
//! HMAC and SHA-256 come from RustCrypto's `hmac` and `sha2` (already in our dependency graph under
//! sqlx), hex from `hex`: no hand-written cryptography.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Linkpulse-Signature";
/// Version tag of the one signature scheme.
pub const SCHEME: &str = "v1";
/// Random bytes of a secret (printed as twice as many hex digits).
pub const SECRET_BYTES: usize = 32;

/// A new secret: [`SECRET_BYTES`] bytes from the operating system's CSPRNG (through `rand`'s
/// thread-local generator, reseeded from it), as lower-case hex.
pub fn generate_secret() -> String {
    let bytes: [u8; SECRET_BYTES] = rand::random();
    hex::encode(bytes)
}

/// The hex HMAC-SHA256 of `"<timestamp>.<body>"` with `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length (long ones are hashed first): `new_from_slice` cannot fail
    // for it, whatever the secret.
    #[allow(clippy::expect_used)]
    Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length")
}

/// The header value for `body` sent at `timestamp`, signed by every secret in `secrets` (the
/// current one first, then the previous one while it is still valid).
pub fn signature_header(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        header.push_str(&format!(",{SCHEME}={}", sign(secret, timestamp, body)));
    }
    header
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The header has no `t=` or no `v1=`, or a `t` that is not a number.
    #[error("malformed signature header")]
    Malformed,
    /// `t` is further from the receiver's clock than the tolerance: a replay, or a clock off.
    #[error("signature timestamp {0} is outside the tolerance")]
    Stale(i64),
    /// No `v1=` entry matches the secret.
    #[error("no signature matches the secret")]
    Mismatch,
}

/// What a receiver does: accepts `header` for `body` if its `t` is within `tolerance_secs` of
/// `now` and one of its `v1=` entries is the HMAC of `"<t>.<body>"` with `secret` (compared in
/// constant time). The tests verify every delivery with it; the README shows the same in Python.
///
/// # Errors
///
/// [`SignatureError`] saying why not.
pub fn verify(header: &str, secret: &str, body: &[u8], now: i64, tolerance_secs: i64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?),
            Some((SCHEME, hex_sig)) => signatures.push(hex_sig),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale(timestamp));
    }
    for candidate in signatures {
        let Ok(candidate) = hex::decode(candidate) else {
            continue;
        };
        let mut mac = mac(secret);
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        if mac.verify_slice(&candidate).is_ok() {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_sha256_of_timestamp_dot_body() {
        // The same as `printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac key` and
        // Python's `hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()`.
        assert_eq!(
            sign("key", 1_700_000_000, br#"{"a":1}"#),
            "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
    }

    #[test]
    fn a_header_verifies_with_either_secret_during_a_rotation_and_not_with_another() {
        let body = br#"{"id":"1"}"#;
        let header = signature_header(&["new-secret", "old-secret"], 1_000, body);
        assert!(header.starts_with("t=1000,v1="), "{header}");
        assert_eq!(header.matches("v1=").count(), 2, "{header}");
        assert_eq!(verify(&header, "new-secret", body, 1_000, 300), Ok(()));
        assert_eq!(verify(&header, "old-secret", body, 1_100, 300), Ok(()));
        assert_eq!(
            verify(&header, "other", body, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn a_changed_body_a_stale_timestamp_or_a_broken_header_is_refused() {
        let body = br#"{"id":"1"}"#;
        let header = signature_header(&["s"], 1_000, body);
        assert_eq!(
            verify(&header, "s", br#"{"id":"2"}"#, 1_000, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&header, "s", body, 1_301, 300),
            Err(SignatureError::Stale(1_000))
        );
        assert_eq!(verify("v1=abc", "s", body, 1_000, 300), Err(SignatureError::Malformed));
        assert_eq!(verify("t=1000", "s", body, 1_000, 300), Err(SignatureError::Malformed));
        assert_eq!(
            verify("t=soon,v1=ab", "s", body, 1_000, 300),
            Err(SignatureError::Malformed)
        );
        // the timestamp is signed: moving it breaks the signature
        let moved = header.replace("t=1000", "t=1001");
        assert_eq!(verify(&moved, "s", body, 1_000, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn secrets_are_64_hex_digits_and_differ() {
        let a = generate_secret();
        let b = generate_secret();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }
}
