//! Dashboard sessions: a key presented once on the sign-in form becomes a
//! signed cookie (`HttpOnly`, `SameSite=Strict`, path `/ui`) naming who
//! signed in, as what, and until when. Nothing is kept on the server; the
//! signing key comes from `HOOKMESH_UI_SESSION_SECRET`, shared by every
//! replica, or is drawn at start when that is unset (then a restart signs
//! everyone out, and a replica refuses the others' sessions).
//!
//! Every state-changing form carries a CSRF token derived from the session
//! cookie with the same key: another site can neither read it nor, with
//! `SameSite=Strict`, send the cookie along.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookmesh_contracts::TenantId;
use hookmesh_contracts::hex::{decode, encode, random_bytes};
use ring::hmac;

use crate::config::GatewayConfig;

/// The session cookie's name.
pub const COOKIE: &str = "hookmesh_session";

/// What a signed-in person may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One tenant's own data.
    Tenant,
    /// Every operator page, and replay and purge.
    Admin,
    /// Every operator page, read only.
    ReadOnlyAdmin,
}

impl Role {
    fn code(self) -> &'static str {
        match self {
            Self::Tenant => "t",
            Self::Admin => "a",
            Self::ReadOnlyAdmin => "r",
        }
    }

    fn from_code(code: &str) -> Option<Self> {
        match code {
            "t" => Some(Self::Tenant),
            "a" => Some(Self::Admin),
            "r" => Some(Self::ReadOnlyAdmin),
            _ => None,
        }
    }

    pub fn is_operator(self) -> bool {
        self != Self::Tenant
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Admin => "admin",
            Self::ReadOnlyAdmin => "read-only admin",
        }
    }
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub role: Role,
    /// The tenant, or the operator's name.
    pub name: TenantId,
}

impl Identity {
    /// The key's owner: a tenant key, an admin key or a read-only admin key.
    /// Every key is compared, so the time taken does not tell which matched.
    pub fn of_key(config: &GatewayConfig, presented: &[u8]) -> Option<Self> {
        let mut found = None;
        let lists = [
            (Role::Tenant, &config.api_keys),
            (Role::Admin, &config.admin_keys),
            (Role::ReadOnlyAdmin, &config.admin_readonly_keys),
        ];
        for (role, keys) in lists {
            for (name, key) in keys {
                if key.matches(presented) && found.is_none() {
                    found = Some(Self {
                        role,
                        name: name.clone(),
                    });
                }
            }
        }
        found
    }

    /// The tenant whose data this person sees; operators see no tenant's.
    pub fn tenant(&self) -> Option<&TenantId> {
        (self.role == Role::Tenant).then_some(&self.name)
    }
}

/// A verified session.
#[derive(Debug, Clone)]
pub struct Session {
    pub identity: Identity,
    pub expires: u64,
    /// The token every state-changing form of this session must carry.
    pub csrf: String,
}

/// Signs and checks session cookies and CSRF tokens.
#[derive(Debug)]
pub struct Sessions {
    key: hmac::Key,
    lifetime: Duration,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl Sessions {
    /// Sessions signed with `key`, or with a key drawn now.
    pub fn new(lifetime: Duration, key: Option<hmac::Key>) -> Self {
        Self {
            key: key.unwrap_or_else(|| hmac::Key::new(hmac::HMAC_SHA256, &random_bytes::<32>())),
            lifetime,
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A new session cookie's value for `identity`.
    pub fn issue(&self, identity: &Identity) -> String {
        self.issue_at(identity, unix_now())
    }

    fn issue_at(&self, identity: &Identity, now: u64) -> String {
        let expires = now + self.lifetime.as_secs();
        let claims = format!("{}.{}.{expires}", identity.role.code(), identity.name);
        let tag = hmac::sign(&self.key, claims.as_bytes());
        format!("{claims}.{}", encode(tag.as_ref()))
    }

    /// The session a cookie value stands for, when it is genuine and has
    /// not expired.
    pub fn verify(&self, cookie: &str) -> Option<Session> {
        self.verify_at(cookie, unix_now())
    }

    fn verify_at(&self, cookie: &str, now: u64) -> Option<Session> {
        let (claims, tag) = cookie.rsplit_once('.')?;
        hmac::verify(&self.key, claims.as_bytes(), &decode(tag)?).ok()?;
        let mut parts = claims.splitn(3, '.');
        let role = Role::from_code(parts.next()?)?;
        let name = TenantId::parse(parts.next()?).ok()?;
        let expires: u64 = parts.next()?.parse().ok()?;
        if expires <= now {
            return None;
        }
        let csrf = hmac::sign(&self.key, format!("csrf.{cookie}").as_bytes());
        Some(Session {
            identity: Identity { role, name },
            expires,
            csrf: encode(csrf.as_ref()),
        })
    }

    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, cookie: &str, token: &str) -> bool {
        decode(token).is_some_and(|token| {
            hmac::verify(&self.key, format!("csrf.{cookie}").as_bytes(), &token).is_ok()
        })
    }
}

/// The session cookie's value among a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE).then_some(value))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(value: &str, lifetime: Duration) -> String {
    format!(
        "{COOKIE}={value}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict",
        lifetime.as_secs()
    )
}

/// `Set-Cookie` that ends the session in the browser.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(role: Role) -> Identity {
        Identity {
            role,
            name: TenantId::parse("acme").unwrap(),
        }
    }

    #[test]
    fn a_session_verifies_until_it_expires() {
        let sessions = Sessions::new(Duration::from_secs(60), None);
        let cookie = sessions.issue_at(&identity(Role::Admin), 1000);
        let session = sessions.verify_at(&cookie, 1059).unwrap();
        assert_eq!(session.identity, identity(Role::Admin));
        assert!(sessions.verify_at(&cookie, 1060).is_none(), "expired");
    }

    #[test]
    fn forged_or_altered_cookies_are_refused() {
        let sessions = Sessions::new(Duration::from_secs(60), None);
        let cookie = sessions.issue_at(&identity(Role::Tenant), 1000);
        let promoted = cookie.replacen("t.", "a.", 1);
        assert!(sessions.verify_at(&promoted, 1001).is_none());
        let other = Sessions::new(Duration::from_secs(60), None);
        assert!(other.verify_at(&cookie, 1001).is_none(), "another key");
        assert!(sessions.verify_at("t.acme.99999999999", 1001).is_none());
    }

    #[test]
    fn replicas_with_the_same_secret_accept_each_others_sessions() {
        let key = || Some(hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]));
        let (one, two) = (
            Sessions::new(Duration::from_secs(60), key()),
            Sessions::new(Duration::from_secs(60), key()),
        );
        let cookie = one.issue_at(&identity(Role::Tenant), 1000);
        let session = two
            .verify_at(&cookie, 1001)
            .expect("the other replica's session");
        assert!(one.csrf_matches(&cookie, &session.csrf));
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let sessions = Sessions::new(Duration::from_secs(60), None);
        let first = sessions.issue_at(&identity(Role::Tenant), 1000);
        let second = sessions.issue_at(&identity(Role::Tenant), 1001);
        let token = sessions.verify_at(&first, 1002).unwrap().csrf;
        assert!(sessions.csrf_matches(&first, &token));
        assert!(!sessions.csrf_matches(&second, &token));
        assert!(!sessions.csrf_matches(&first, "00"));
    }
}
