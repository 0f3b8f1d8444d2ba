//! The senders' side of each scheme in [`sources`](super::sources): the
//! header values a producer computes over a body. One place, used by
//! `hookmesh send` and `hookmesh sign`, the benchmark and the tests, so that
//! what is signed is checked by the same code that verifies it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{HmacKey, StandardWebhooksKeys};

/// `sha256=<hex HMAC-SHA256 of the body>`: seed 002's `X-Webhook-Signature`
/// and GitHub's `X-Hub-Signature-256`.
pub fn sha256_header(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", HmacKey::new(secret.as_bytes()).sign_hex(body))
}

/// `v1=<hex HMAC-SHA256 of the body>`: CircleCI's `circleci-signature`.
pub fn circleci(secret: &str, body: &[u8]) -> String {
    format!("v1={}", HmacKey::new(secret.as_bytes()).sign_hex(body))
}

/// `Basic base64(user:password)`: what Jenkins' Notification plugin sends
/// for an endpoint URL with credentials.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

/// Standard Webhooks' `webhook-signature` over `id.timestamp.body`, with the
/// first of the `whsec_…` secrets given; an error when they do not parse.
pub fn standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    Ok(StandardWebhooksKeys::parse(secret)?.sign(id, timestamp, body))
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::verify::sources::{Clock, verify_buddy, verify_circleci, verify_jenkins};
    use crate::verify::{SecretToken, verify_provider};

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const CLOCK: Clock = Clock {
        now: 1_763_000_000,
        tolerance_seconds: 300,
    };

    #[test]
    fn what_is_signed_here_verifies_there() {
        let body = br#"{"id":"e1"}"#;
        let buddy = headers(&[
            ("X-Webhook-Signature", sha256_header("s", body)),
            ("X-Webhook-Timestamp", CLOCK.now.to_string()),
        ]);
        assert_eq!(
            verify_buddy(Some(&HmacKey::new(b"s")), &buddy, body, CLOCK),
            Ok(())
        );
        let circle = headers(&[("circleci-signature", circleci("c", body))]);
        assert_eq!(
            verify_circleci(Some(&HmacKey::new(b"c")), &circle, body),
            Ok(())
        );
        let jenkins = headers(&[("Authorization", basic("jenkins", "pw"))]);
        assert_eq!(
            verify_jenkins(Some(&SecretToken::new(b"pw")), &jenkins),
            Ok(())
        );
        let secret = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
        let provider = headers(&[
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", CLOCK.now.to_string()),
            (
                "webhook-signature",
                standard(secret, "msg_1", CLOCK.now, body).unwrap(),
            ),
        ]);
        let keys = StandardWebhooksKeys::parse(secret).unwrap();
        assert_eq!(verify_provider(Some(&keys), &provider, body, CLOCK), Ok(()));
        assert!(standard("not base64!", "msg_1", CLOCK.now, body).is_err());
    }
}
