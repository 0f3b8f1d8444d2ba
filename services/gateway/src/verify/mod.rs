//! Authenticating deliveries: each source's own signature or credential
//! scheme, checked over the raw body bytes before any JSON parsing.
//!
//! Every comparison of a secret or signature is constant-time: signatures
//! through `ring::hmac::verify`, plain tokens and passwords through
//! [`SecretToken`] (an HMAC of both sides under a per-process random key).
//! Keys and tokens never appear in `Debug` output or logs.

pub mod sign;
pub mod sources;
pub mod standard_webhooks;

use std::fmt;

use hookmesh_contracts::hex::{self, random_bytes};
use ring::hmac;

pub use sources::{
    VerifiedDelivery, verify_api_key, verify_buddy, verify_callback, verify_circleci,
    verify_github, verify_gitlab, verify_jenkins, verify_provider,
};
pub use standard_webhooks::StandardWebhooksKeys;

/// Why a delivery was not authenticated. Each variant says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this route accepts no deliveries until its secret is configured ({variable})")]
    NotConfigured { variable: &'static str },
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("{header} header is malformed: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error("{0} does not match the request body")]
    BadSignature(&'static str),
    #[error(
        "{header} is {skew_seconds} s away from the server's clock (tolerance {tolerance_seconds} s)"
    )]
    StaleTimestamp {
        header: &'static str,
        skew_seconds: i64,
        tolerance_seconds: u64,
    },
    #[error("invalid {0}")]
    BadCredentials(&'static str),
}

impl AuthError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotConfigured { .. } => "not_configured",
            Self::MissingHeader(_) => "missing_credentials",
            Self::MalformedHeader { .. } => "malformed_credentials",
            Self::BadSignature(_) => "bad_signature",
            Self::StaleTimestamp { .. } => "stale_timestamp",
            Self::BadCredentials(_) => "bad_credentials",
        }
    }
}

/// An HMAC-SHA256 key.
#[derive(Clone)]
pub struct HmacKey(hmac::Key);

impl HmacKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// Lowercase hex of the tag over `message` (what senders put in headers).
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(hmac::sign(&self.0, message).as_ref())
    }

    /// Whether `tag` is this key's tag over `message`, in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.0, message, tag).is_ok()
    }

    /// As [`HmacKey::verify`], for a hex tag; malformed hex never verifies.
    pub fn verify_hex(&self, message: &[u8], hex_tag: &str) -> bool {
        hex::decode(hex_tag).is_some_and(|tag| self.verify(message, &tag))
    }

    pub(crate) fn key(&self) -> &hmac::Key {
        &self.0
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey([redacted])")
    }
}

/// A plain shared secret (GitLab token, Jenkins password, API key), compared
/// in constant time: both sides are HMACed under a random per-process key
/// and the tags compared with `ring::hmac::verify`.
#[derive(Clone)]
pub struct SecretToken {
    key: hmac::Key,
    expected: hmac::Tag,
}

impl SecretToken {
    pub fn new(secret: &[u8]) -> Self {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>());
        let expected = hmac::sign(&key, secret);
        Self { key, expected }
    }

    pub fn matches(&self, presented: &[u8]) -> bool {
        hmac::verify(&self.key, presented, self.expected.as_ref()).is_ok()
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_tokens_match_only_the_secret() {
        let token = SecretToken::new(b"s3cret");
        assert!(token.matches(b"s3cret"));
        assert!(!token.matches(b"s3cret "));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "SecretToken([redacted])");
    }

    #[test]
    fn hmac_keys_verify_their_own_hex_tags() {
        let key = HmacKey::new(b"key");
        let tag = key.sign_hex(b"message");
        assert!(key.verify_hex(b"message", &tag));
        assert!(key.verify_hex(b"message", &tag.to_uppercase()));
        assert!(!key.verify_hex(b"message!", &tag));
        assert!(!key.verify_hex(b"message", "not hex"));
        assert_eq!(format!("{key:?}"), "HmacKey([redacted])");
    }
}
