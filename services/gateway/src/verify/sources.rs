//! Each source's authentication scheme, as a plain function of the
//! configured secret, the request headers and the raw body.

use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hookmesh_contracts::{TenantId, Timestamp};

use super::standard_webhooks::{ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use super::{AuthError, HmacKey, SecretToken, StandardWebhooksKeys};

/// Options every time-sensitive check needs.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// The server's time, Unix seconds.
    pub now: i64,
    /// Largest accepted distance between a delivery's timestamp and `now`.
    pub tolerance_seconds: u64,
}

/// The value of `name`, which must be present and printable ASCII.
pub fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, AuthError> {
    let value = headers.get(name).ok_or(AuthError::MissingHeader(name))?;
    value.to_str().map_err(|_| AuthError::MalformedHeader {
        header: name,
        reason: "not printable ASCII",
    })
}

fn optional_header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, AuthError> {
    match headers.get(name) {
        None => Ok(None),
        Some(_) => header(headers, name).map(Some),
    }
}

/// Seed 002: `X-Webhook-Signature: sha256=<hex HMAC-SHA256 of the body>` and
/// `X-Webhook-Timestamp` (ISO 8601 or Unix seconds) within the tolerance.
pub fn verify_buddy(
    secret: Option<&HmacKey>,
    headers: &HeaderMap,
    body: &[u8],
    clock: Clock,
) -> Result<(), AuthError> {
    const SIGNATURE: &str = "X-Webhook-Signature";
    const TIMESTAMP: &str = "X-Webhook-Timestamp";
    let key = secret.ok_or(AuthError::NotConfigured {
        variable: "HOOKMESH_SECRET_BUDDY",
    })?;
    let signature = header(headers, SIGNATURE)?;
    let hex = signature
        .strip_prefix("sha256=")
        .ok_or(AuthError::MalformedHeader {
            header: SIGNATURE,
            reason: "expected sha256=<hex>",
        })?;
    if !key.verify_hex(body, hex) {
        return Err(AuthError::BadSignature(SIGNATURE));
    }
    let sent = header(headers, TIMESTAMP)?;
    let sent_at = sent
        .parse::<i64>()
        .ok()
        .or_else(|| {
            Timestamp::parse_rfc3339(sent)
                .ok()
                .map(Timestamp::unix_seconds)
        })
        .ok_or(AuthError::MalformedHeader {
            header: TIMESTAMP,
            reason: "expected an ISO 8601 date-time or Unix seconds",
        })?;
    check_skew(TIMESTAMP, sent_at, clock)
}

fn check_skew(header: &'static str, sent_at: i64, clock: Clock) -> Result<(), AuthError> {
    let skew_seconds = clock.now.saturating_sub(sent_at);
    if skew_seconds.unsigned_abs() > clock.tolerance_seconds {
        return Err(AuthError::StaleTimestamp {
            header,
            skew_seconds,
            tolerance_seconds: clock.tolerance_seconds,
        });
    }
    Ok(())
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
pub fn verify_github(
    secret: Option<&HmacKey>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthError> {
    const SIGNATURE: &str = "X-Hub-Signature-256";
    let key = secret.ok_or(AuthError::NotConfigured {
        variable: "HOOKMESH_SECRET_GITHUB",
    })?;
    let hex =
        header(headers, SIGNATURE)?
            .strip_prefix("sha256=")
            .ok_or(AuthError::MalformedHeader {
                header: SIGNATURE,
                reason: "expected sha256=<hex>",
            })?;
    if key.verify_hex(body, hex) {
        Ok(())
    } else {
        Err(AuthError::BadSignature(SIGNATURE))
    }
}

/// GitLab: the secret token in `X-Gitlab-Token`, and/or a signing token's
/// Standard Webhooks signature. Whatever credential is present and
/// configured must be valid, and at least one must be.
pub fn verify_gitlab(
    token: Option<&SecretToken>,
    signing: Option<&StandardWebhooksKeys>,
    headers: &HeaderMap,
    body: &[u8],
    clock: Clock,
) -> Result<(), AuthError> {
    const TOKEN: &str = "X-Gitlab-Token";
    if token.is_none() && signing.is_none() {
        return Err(AuthError::NotConfigured {
            variable: "HOOKMESH_SECRET_GITLAB",
        });
    }
    let mut authenticated = false;
    if let (Some(keys), Some(signature)) = (signing, optional_header(headers, SIGNATURE_HEADER)?) {
        keys.verify(
            header(headers, ID_HEADER)?,
            header(headers, TIMESTAMP_HEADER)?,
            signature,
            body,
            clock.now,
            clock.tolerance_seconds,
        )?;
        authenticated = true;
    }
    if let (Some(expected), Some(presented)) = (token, optional_header(headers, TOKEN)?) {
        if !expected.matches(presented.as_bytes()) {
            return Err(AuthError::BadCredentials(TOKEN));
        }
        authenticated = true;
    }
    if authenticated {
        Ok(())
    } else if token.is_some() {
        Err(AuthError::MissingHeader(TOKEN))
    } else {
        Err(AuthError::MissingHeader(SIGNATURE_HEADER))
    }
}

/// CircleCI: `circleci-signature: v1=<hex HMAC-SHA256 of the body>`, in a
/// comma-separated list of versions; only `v1` exists, and only it is checked.
pub fn verify_circleci(
    secret: Option<&HmacKey>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), AuthError> {
    const SIGNATURE: &str = "circleci-signature";
    let key = secret.ok_or(AuthError::NotConfigured {
        variable: "HOOKMESH_SECRET_CIRCLECI",
    })?;
    let mut v1 = header(headers, SIGNATURE)?
        .split(',')
        .filter_map(|entry| entry.trim().strip_prefix("v1="))
        .peekable();
    if v1.peek().is_none() {
        return Err(AuthError::MalformedHeader {
            header: SIGNATURE,
            reason: "expected v1=<hex>",
        });
    }
    if v1.any(|hex| key.verify_hex(body, hex)) {
        Ok(())
    } else {
        Err(AuthError::BadSignature(SIGNATURE))
    }
}

/// Jenkins (Notification plugin): HTTP Basic credentials, which the plugin
/// sends when its endpoint URL carries them (`https://jenkins:<secret>@host/…`,
/// kept in a Jenkins secret-text credential). The password must be the
/// secret; the user name is not checked.
pub fn verify_jenkins(secret: Option<&SecretToken>, headers: &HeaderMap) -> Result<(), AuthError> {
    const AUTHORIZATION: &str = "Authorization";
    let expected = secret.ok_or(AuthError::NotConfigured {
        variable: "HOOKMESH_SECRET_JENKINS",
    })?;
    let malformed = AuthError::MalformedHeader {
        header: AUTHORIZATION,
        reason: "expected Basic <base64 of user:password>",
    };
    let encoded = header(headers, AUTHORIZATION)?
        .strip_prefix("Basic ")
        .ok_or_else(|| malformed.clone())?;
    let decoded = BASE64
        .decode(encoded.trim())
        .map_err(|_| malformed.clone())?;
    let colon = decoded.iter().position(|&b| b == b':').ok_or(malformed)?;
    if expected.matches(&decoded[colon + 1..]) {
        Ok(())
    } else {
        Err(AuthError::BadCredentials("Jenkins credentials"))
    }
}

/// Providers: Standard Webhooks headers over the body.
pub fn verify_provider(
    keys: Option<&StandardWebhooksKeys>,
    headers: &HeaderMap,
    body: &[u8],
    clock: Clock,
) -> Result<(), AuthError> {
    let keys = keys.ok_or(AuthError::NotConfigured {
        variable: "HOOKMESH_SECRET_PROVIDERS",
    })?;
    keys.verify(
        header(headers, ID_HEADER)?,
        header(headers, TIMESTAMP_HEADER)?,
        header(headers, SIGNATURE_HEADER)?,
        body,
        clock.now,
        clock.tolerance_seconds,
    )
}

/// `/api/*`: `Authorization: Bearer <key>` or `X-API-Key: <key>`; the key
/// decides the tenant.
pub fn verify_api_key<'a>(
    keys: &'a [(TenantId, SecretToken)],
    headers: &HeaderMap,
) -> Result<&'a TenantId, AuthError> {
    if keys.is_empty() {
        return Err(AuthError::NotConfigured {
            variable: "HOOKMESH_API_KEYS",
        });
    }
    let presented = match optional_header(headers, "Authorization")? {
        Some(value) => value
            .strip_prefix("Bearer ")
            .ok_or(AuthError::MalformedHeader {
                header: "Authorization",
                reason: "expected Bearer <API key>",
            })?
            .trim(),
        None => optional_header(headers, "X-API-Key")?
            .ok_or(AuthError::MissingHeader("Authorization or X-API-Key"))?,
    };
    // Every key is compared, so the time taken does not tell which matched.
    let mut tenant = None;
    for (owner, key) in keys {
        if key.matches(presented.as_bytes()) && tenant.is_none() {
            tenant = Some(owner);
        }
    }
    tenant.ok_or(AuthError::BadCredentials("API key"))
}

/// The sweep callback: `?job_id=<job>&token=<token>`, the token being
/// `hookmesh_contracts::sweep::callback_token(secret, job)`.
pub fn verify_callback(
    secret: Option<&HmacKey>,
    job_id: Option<&str>,
    token: Option<&str>,
) -> Result<(), AuthError> {
    let key = secret.ok_or(AuthError::NotConfigured {
        variable: "HOOKMESH_CALLBACK_SECRET",
    })?;
    let job_id = job_id.ok_or(AuthError::MissingHeader("job_id query parameter"))?;
    let token = token.ok_or(AuthError::MissingHeader("token query parameter"))?;
    if key.verify_hex(format!("sweep-callback:{job_id}").as_bytes(), token) {
        Ok(())
    } else {
        Err(AuthError::BadCredentials("callback token"))
    }
}

/// A delivery that passed authentication, with the id that makes its
/// redeliveries recognisable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDelivery {
    pub delivery_id: String,
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const NOW: i64 = 1_763_000_000;
    const CLOCK: Clock = Clock {
        now: NOW,
        tolerance_seconds: 300,
    };

    #[test]
    fn githubs_documented_example_verifies() {
        let key = HmacKey::new(b"It's a Secret to Everybody");
        let signed = headers(&[(
            "X-Hub-Signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        assert_eq!(verify_github(Some(&key), &signed, b"Hello, World!"), Ok(()));
        assert_eq!(
            verify_github(Some(&key), &signed, b"Hello, World?"),
            Err(AuthError::BadSignature("X-Hub-Signature-256"))
        );
        assert_eq!(
            verify_github(None, &signed, b"Hello, World!"),
            Err(AuthError::NotConfigured {
                variable: "HOOKMESH_SECRET_GITHUB"
            })
        );
        assert_eq!(
            verify_github(Some(&key), &HeaderMap::new(), b"Hello, World!"),
            Err(AuthError::MissingHeader("X-Hub-Signature-256"))
        );
    }

    #[test]
    fn buddy_deliveries_need_a_signature_and_a_fresh_timestamp() {
        let key = HmacKey::new(b"buddy-secret");
        let body = br#"{"id":"e1"}"#;
        let signature = format!("sha256={}", key.sign_hex(body));
        let fresh = headers(&[
            ("X-Webhook-Signature", &signature),
            ("X-Webhook-Timestamp", "2025-11-13T02:13:20Z"),
        ]);
        assert_eq!(verify_buddy(Some(&key), &fresh, body, CLOCK), Ok(()));
        let unix = headers(&[
            ("X-Webhook-Signature", &signature),
            ("X-Webhook-Timestamp", &(NOW - 10).to_string()),
        ]);
        assert_eq!(verify_buddy(Some(&key), &unix, body, CLOCK), Ok(()));
        let stale = headers(&[
            ("X-Webhook-Signature", &signature),
            ("X-Webhook-Timestamp", &(NOW - 301).to_string()),
        ]);
        assert!(matches!(
            verify_buddy(Some(&key), &stale, body, CLOCK),
            Err(AuthError::StaleTimestamp { .. })
        ));
        let unsigned = headers(&[("X-Webhook-Signature", "abc")]);
        assert!(matches!(
            verify_buddy(Some(&key), &unsigned, body, CLOCK),
            Err(AuthError::MalformedHeader { .. })
        ));
    }

    #[test]
    fn circleci_checks_only_v1_entries() {
        // CircleCI's documented vector: body "hello world", secret "secret".
        let key = HmacKey::new(b"secret");
        let body = b"hello world";
        let valid = "734cc62f32841568f45715aeb9f4d7891324e6d948e4c6c60c0621cdac48623a";
        let listed = headers(&[("circleci-signature", &format!("v2=ffff,v1={valid}"))]);
        assert_eq!(verify_circleci(Some(&key), &listed, body), Ok(()));
        let wrong = headers(&[("circleci-signature", "v1=00")]);
        assert_eq!(
            verify_circleci(Some(&key), &wrong, body),
            Err(AuthError::BadSignature("circleci-signature"))
        );
        let only_v2 = headers(&[("circleci-signature", &format!("v2={valid}"))]);
        assert!(matches!(
            verify_circleci(Some(&key), &only_v2, body),
            Err(AuthError::MalformedHeader { .. })
        ));
    }

    #[test]
    fn gitlab_accepts_its_token_or_its_signature() {
        let token = SecretToken::new(b"gl-token");
        let keys = StandardWebhooksKeys::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = b"{}";
        let by_token = headers(&[("X-Gitlab-Token", "gl-token")]);
        assert_eq!(
            verify_gitlab(Some(&token), None, &by_token, body, CLOCK),
            Ok(())
        );
        let wrong_token = headers(&[("X-Gitlab-Token", "nope")]);
        assert_eq!(
            verify_gitlab(Some(&token), Some(&keys), &wrong_token, body, CLOCK),
            Err(AuthError::BadCredentials("X-Gitlab-Token"))
        );
        let signature = keys.sign("idem-1", NOW, body);
        let signed = headers(&[
            ("webhook-id", "idem-1"),
            ("webhook-timestamp", &NOW.to_string()),
            ("webhook-signature", &signature),
        ]);
        assert_eq!(
            verify_gitlab(None, Some(&keys), &signed, body, CLOCK),
            Ok(())
        );
        assert_eq!(
            verify_gitlab(None, Some(&keys), &signed, b"{ }", CLOCK),
            Err(AuthError::BadSignature("webhook-signature"))
        );
        assert_eq!(
            verify_gitlab(Some(&token), None, &HeaderMap::new(), body, CLOCK),
            Err(AuthError::MissingHeader("X-Gitlab-Token"))
        );
    }

    #[test]
    fn jenkins_compares_the_basic_password() {
        let secret = SecretToken::new(b"jenkins-secret");
        let basic = |credentials: &str| {
            headers(&[(
                "Authorization",
                &format!("Basic {}", BASE64.encode(credentials)),
            )])
        };
        assert_eq!(
            verify_jenkins(Some(&secret), &basic("jenkins:jenkins-secret")),
            Ok(())
        );
        assert_eq!(
            verify_jenkins(Some(&secret), &basic("jenkins:wrong")),
            Err(AuthError::BadCredentials("Jenkins credentials"))
        );
        assert!(matches!(
            verify_jenkins(Some(&secret), &basic("no-colon")),
            Err(AuthError::MalformedHeader { .. })
        ));
    }

    #[test]
    fn api_keys_resolve_to_their_tenant() {
        let keys = vec![
            (TenantId::parse("acme").unwrap(), SecretToken::new(b"key-a")),
            (
                TenantId::parse("globex").unwrap(),
                SecretToken::new(b"key-g"),
            ),
        ];
        let bearer = headers(&[("Authorization", "Bearer key-g")]);
        assert_eq!(verify_api_key(&keys, &bearer).unwrap().as_str(), "globex");
        let api_key = headers(&[("X-API-Key", "key-a")]);
        assert_eq!(verify_api_key(&keys, &api_key).unwrap().as_str(), "acme");
        let wrong = headers(&[("X-API-Key", "key-x")]);
        assert_eq!(
            verify_api_key(&keys, &wrong),
            Err(AuthError::BadCredentials("API key"))
        );
        assert!(matches!(
            verify_api_key(&[], &api_key),
            Err(AuthError::NotConfigured { .. })
        ));
    }

    #[test]
    fn callback_tokens_are_the_contracts_tokens() {
        let key = HmacKey::new(b"cb-secret");
        let token = hookmesh_contracts::sweep::callback_token(b"cb-secret", "job_1");
        assert_eq!(
            verify_callback(Some(&key), Some("job_1"), Some(&token)),
            Ok(())
        );
        assert_eq!(
            verify_callback(Some(&key), Some("job_2"), Some(&token)),
            Err(AuthError::BadCredentials("callback token"))
        );
        assert!(verify_callback(Some(&key), Some("job_1"), None).is_err());
    }
}
