//! Standard Webhooks (<https://www.standardwebhooks.com>) signatures, used by
//! provider webhooks and by GitLab's signing token.
//!
//! `webhook-signature` holds space-separated `v1,<base64 HMAC-SHA256>`
//! entries over `{webhook-id}.{webhook-timestamp}.{body}`; several entries
//! (and several configured secrets) allow secret rotation. Secrets are
//! `whsec_<base64 key>`; `webhook-timestamp` (Unix seconds) must be within
//! the tolerance of the server's clock.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

use super::{AuthError, HmacKey};

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// One or more signing secrets; a signature made with any of them verifies.
#[derive(Clone)]
pub struct StandardWebhooksKeys(Vec<HmacKey>);

impl fmt::Debug for StandardWebhooksKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StandardWebhooksKeys({} [redacted])", self.0.len())
    }
}

impl StandardWebhooksKeys {
    /// Reads `whsec_…` secrets separated by commas or spaces.
    pub fn parse(secrets: &str) -> Result<Self, String> {
        let keys = secrets
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(|secret| {
                let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
                BASE64
                    .decode(encoded)
                    .ok()
                    .filter(|key| !key.is_empty())
                    .map(|key| HmacKey::new(&key))
                    .ok_or_else(|| {
                        "each secret must be whsec_ followed by base64, e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
                            .to_owned()
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no secret given".to_owned());
        }
        Ok(Self(keys))
    }

    /// The `webhook-signature` value a sender would put on this message,
    /// signed with the first secret.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = hmac::sign(
            self.0[0].key(),
            &signed_content(id, &timestamp.to_string(), body),
        );
        format!("v1,{}", BASE64.encode(tag.as_ref()))
    }

    /// Checks a delivery's headers against its body at `now` (Unix seconds).
    pub fn verify(
        &self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: i64,
        tolerance_seconds: u64,
    ) -> Result<(), AuthError> {
        let sent_at: i64 = timestamp.parse().map_err(|_| AuthError::MalformedHeader {
            header: TIMESTAMP_HEADER,
            reason: "expected Unix seconds",
        })?;
        let skew_seconds = now.saturating_sub(sent_at);
        if skew_seconds.unsigned_abs() > tolerance_seconds {
            return Err(AuthError::StaleTimestamp {
                header: TIMESTAMP_HEADER,
                skew_seconds,
                tolerance_seconds,
            });
        }
        let content = signed_content(id, timestamp, body);
        let mut saw_v1 = false;
        for entry in signature.split(' ').filter(|e| !e.is_empty()) {
            let Some(("v1", encoded)) = entry.split_once(',') else {
                continue;
            };
            saw_v1 = true;
            let Ok(tag) = BASE64.decode(encoded) else {
                continue;
            };
            if self.0.iter().any(|key| key.verify(&content, &tag)) {
                return Ok(());
            }
        }
        if saw_v1 {
            Err(AuthError::BadSignature(SIGNATURE_HEADER))
        } else {
            Err(AuthError::MalformedHeader {
                header: SIGNATURE_HEADER,
                reason: "expected space-separated v1,<base64> signatures",
            })
        }
    }
}

fn signed_content(id: &str, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TIMESTAMP: i64 = 1649367553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn verify(keys: &StandardWebhooksKeys, signature: &str, now: i64) -> Result<(), AuthError> {
        keys.verify(ID, &TIMESTAMP.to_string(), signature, BODY, now, 300)
    }

    #[test]
    fn the_specs_published_example_verifies() {
        let keys = StandardWebhooksKeys::parse(SECRET).unwrap();
        assert_eq!(keys.sign(ID, TIMESTAMP, BODY), SIGNATURE);
        assert_eq!(verify(&keys, SIGNATURE, TIMESTAMP), Ok(()));
    }

    #[test]
    fn any_of_several_signatures_or_secrets_verifies() {
        let keys = StandardWebhooksKeys::parse(SECRET).unwrap();
        let header = format!("v1,Zm9vYmFy v1a,ignored {SIGNATURE}");
        assert_eq!(verify(&keys, &header, TIMESTAMP), Ok(()));

        let rotated = StandardWebhooksKeys::parse(&format!(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw {SECRET}"
        ))
        .unwrap();
        assert_eq!(verify(&rotated, SIGNATURE, TIMESTAMP), Ok(()));
    }

    #[test]
    fn a_tampered_body_or_wrong_secret_fails() {
        let keys = StandardWebhooksKeys::parse(SECRET).unwrap();
        let tampered = keys.verify(ID, &TIMESTAMP.to_string(), SIGNATURE, b"{}", TIMESTAMP, 300);
        assert_eq!(tampered, Err(AuthError::BadSignature(SIGNATURE_HEADER)));
        let other = StandardWebhooksKeys::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            verify(&other, SIGNATURE, TIMESTAMP),
            Err(AuthError::BadSignature(SIGNATURE_HEADER))
        );
    }

    #[test]
    fn timestamps_outside_five_minutes_fail_either_way() {
        let keys = StandardWebhooksKeys::parse(SECRET).unwrap();
        assert_eq!(verify(&keys, SIGNATURE, TIMESTAMP + 300), Ok(()));
        assert!(matches!(
            verify(&keys, SIGNATURE, TIMESTAMP + 301),
            Err(AuthError::StaleTimestamp {
                skew_seconds: 301,
                ..
            })
        ));
        assert!(matches!(
            verify(&keys, SIGNATURE, TIMESTAMP - 301),
            Err(AuthError::StaleTimestamp {
                skew_seconds: -301,
                ..
            })
        ));
    }

    #[test]
    fn malformed_headers_and_secrets_are_refused() {
        let keys = StandardWebhooksKeys::parse(SECRET).unwrap();
        assert!(matches!(
            verify(&keys, "sha256=abc", TIMESTAMP),
            Err(AuthError::MalformedHeader { .. })
        ));
        assert!(matches!(
            keys.verify(ID, "yesterday", SIGNATURE, BODY, TIMESTAMP, 300),
            Err(AuthError::MalformedHeader { .. })
        ));
        assert!(StandardWebhooksKeys::parse("whsec_!!!").is_err());
        assert!(StandardWebhooksKeys::parse("").is_err());
    }
}
