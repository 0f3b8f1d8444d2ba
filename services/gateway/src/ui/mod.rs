//! The dashboard at `/ui`: server-rendered HTML (askama templates compiled
//! into the binary from `templates/`), a little plain JavaScript for the
//! live parts (Server-Sent Events, polling of the tail), and SVG charts
//! drawn on the server. Every asset is embedded: no CDN, no Node.
//!
//! It reads what the public API reads, the same way (the owning service
//! over NATS request/reply, JetStream reads for operators), and starts
//! sweeps through the same code as `POST /api/pipelines/trigger`.

mod campaigns;
mod charts;
mod ci;
mod csr;
mod operators;
mod pipelines;
pub mod session;

use askama::Template;
use axum::Router;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::hex::percent_decode;

use self::session::{Identity, Role, Session};
use crate::Gateway;
use crate::error::Rejection;

/// The dashboard's routes, under `/ui`.
pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/sign-in", get(sign_in_form).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/assets/app.css", get(stylesheet))
        .route("/ui/assets/app.js", get(script))
        .merge(pipelines::router())
        .merge(csr::router())
        .merge(campaigns::router())
        .merge(operators::router())
        .merge(ci::router())
}

/// Why a dashboard page is not drawn, as the browser should see it.
#[derive(Debug)]
pub enum UiError {
    /// No session, or it expired: sign in, then come back to `next`.
    SignIn { next: String },
    /// An HTML page saying what went wrong, with its status.
    Page { status: StatusCode, message: String },
}

impl From<Rejection> for UiError {
    fn from(rejection: Rejection) -> Self {
        let message = match &rejection {
            Rejection::Invalid(errors) | Rejection::Malformed(errors) => {
                format!("{rejection}: {errors}")
            }
            other => other.to_string(),
        };
        Self::Page {
            status: rejection.status(),
            message,
        }
    }
}

impl UiError {
    pub fn forbidden(what: &str) -> Self {
        Self::Page {
            status: StatusCode::FORBIDDEN,
            message: format!("{what} needs an operator key (HOOKMESH_ADMIN_KEYS)."),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::Page {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    /// A read's result, with its 404 said the dashboard's way: `message`.
    pub fn unless_missing<T>(
        read: Result<T, Rejection>,
        message: impl FnOnce() -> String,
    ) -> Result<T, Self> {
        match read {
            Err(Rejection::NotFound(_)) => Err(Self::not_found(message())),
            other => Ok(other?),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn { next } => {
                let target = format!("/ui/sign-in?next={}", query_escape(&next));
                Redirect::to(&target).into_response()
            }
            Self::Page { status, message } => {
                let page = ErrorPage {
                    layout: Layout::anonymous(status.canonical_reason().unwrap_or("Error")),
                    status: status.as_u16(),
                    message,
                };
                (status, html(&page)).into_response()
            }
        }
    }
}

/// A signed-in person, with the session's CSRF token; extracting it sends
/// whoever has no valid session to sign-in, and back here afterwards.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub identity: Identity,
    pub csrf: String,
    /// The session cookie's value, against which form tokens are checked.
    cookie: String,
}

impl Viewer {
    /// The tenant whose data this viewer sees; operators are sent away.
    pub fn tenant(&self) -> Result<&hookmesh_contracts::TenantId, UiError> {
        self.identity.tenant().ok_or_else(|| UiError::Page {
            status: StatusCode::FORBIDDEN,
            message: "Tenant pages show one tenant's data: sign in with that tenant's API key."
                .to_owned(),
        })
    }

    /// Operators only (admin or read-only admin).
    pub fn operator(&self, what: &str) -> Result<(), UiError> {
        if self.identity.role.is_operator() {
            Ok(())
        } else {
            Err(UiError::forbidden(what))
        }
    }

    /// Operators who may change things.
    pub fn admin(&self, what: &str) -> Result<(), UiError> {
        match self.identity.role {
            Role::Admin => Ok(()),
            Role::ReadOnlyAdmin => Err(UiError::Page {
                status: StatusCode::FORBIDDEN,
                message: format!("{what} needs a full admin key: this key is read-only."),
            }),
            Role::Tenant => Err(UiError::forbidden(what)),
        }
    }

    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, gateway: &Gateway, token: &str) -> Result<(), UiError> {
        if gateway.sessions.csrf_matches(&self.cookie, token) {
            Ok(())
        } else {
            Err(UiError::Page {
                status: StatusCode::FORBIDDEN,
                message: "The form's security token is missing or stale: reload the page and \
                          try again."
                    .to_owned(),
            })
        }
    }

    pub fn layout(&self, title: impl Into<String>, section: &'static str) -> Layout {
        Layout {
            title: title.into(),
            section,
            who: Some(Who {
                name: self.identity.name.to_string(),
                role: self.identity.role.label(),
                operator: self.identity.role.is_operator(),
                csrf: self.csrf.clone(),
            }),
        }
    }
}

impl FromRequestParts<Gateway> for Viewer {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, gateway: &Gateway) -> Result<Self, UiError> {
        let next = parts
            .uri
            .path_and_query()
            .map_or("/ui", |path| path.as_str())
            .to_owned();
        let cookie = session::cookie_value(&parts.headers).unwrap_or_default();
        match gateway.sessions.verify(cookie) {
            Some(Session { identity, csrf, .. }) => Ok(Self {
                identity,
                csrf,
                cookie: cookie.to_owned(),
            }),
            None => Err(UiError::SignIn { next }),
        }
    }
}

/// What the layout around every page needs.
#[derive(Debug)]
pub struct Layout {
    pub title: String,
    /// The navigation entry to mark as current.
    pub section: &'static str,
    pub who: Option<Who>,
}

/// The signed-in person, for the layout.
#[derive(Debug)]
pub struct Who {
    pub name: String,
    pub role: &'static str,
    pub operator: bool,
    pub csrf: String,
}

impl Layout {
    fn anonymous(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            section: "",
            who: None,
        }
    }
}

/// Renders a template as an HTML response.
pub fn html(page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            body,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, "A dashboard page could not be drawn.");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be drawn",
            )
                .into_response()
        }
    }
}

/// Percent-encodes a query value.
pub fn query_escape(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The decoded `name=value` pairs of a query string or form body.
pub fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect()
}

/// The first value of `name` in `pairs`, trimmed; None when absent or blank.
pub fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// A time for a `<time>` element: RFC 3339 in UTC; the page's script shows
/// it in the viewer's zone, with UTC on hover.
pub fn utc(time: &Timestamp) -> String {
    time.to_rfc3339()
}

/// Where `next` may send a person after sign-in: a dashboard page only.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next) if next.starts_with("/ui") && !next.starts_with("//") => next,
        _ => "/ui",
    }
}

/// State-changing forms must come from the dashboard's own origin.
pub fn same_origin(headers: &HeaderMap) -> Result<(), UiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    if origin_host == host {
        Ok(())
    } else {
        Err(UiError::Page {
            status: StatusCode::FORBIDDEN,
            message: "Forms are accepted from the dashboard's own pages only.".to_owned(),
        })
    }
}

async fn home(State(gateway): State<Gateway>, headers: HeaderMap) -> Response {
    let cookie = session::cookie_value(&headers).unwrap_or_default();
    match gateway.sessions.verify(cookie) {
        None => Redirect::to("/ui/sign-in").into_response(),
        Some(session) if session.identity.role.is_operator() => {
            Redirect::to("/ui/overview").into_response()
        }
        Some(_) => Redirect::to("/ui/pipelines").into_response(),
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    layout: Layout,
    next: String,
    error: Option<String>,
}

async fn sign_in_form(RawQuery(query): RawQuery) -> Response {
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    let next = safe_next(field(&pairs, "next")).to_owned();
    html(&SignInPage {
        layout: Layout::anonymous("Sign in"),
        next,
        error: None,
    })
}

async fn sign_in(State(gateway): State<Gateway>, headers: HeaderMap, body: String) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused.into_response();
    }
    let pairs = form_pairs(&body);
    let next = safe_next(field(&pairs, "next")).to_owned();
    let key = field(&pairs, "key").unwrap_or("");
    let rate_family = "ui-sign-in";
    if gateway.admit(rate_family).is_err() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            html(&SignInPage {
                layout: Layout::anonymous("Sign in"),
                next,
                error: Some("Too many attempts: wait a second and try again.".to_owned()),
            }),
        )
            .into_response();
    }
    match Identity::of_key(&gateway.config, key.as_bytes()) {
        Some(identity) => {
            tracing::info!(name = %identity.name, role = identity.role.label(), "Signed in to the dashboard.");
            let cookie = gateway.sessions.issue(&identity);
            let lifetime = gateway.sessions.lifetime();
            (
                [(header::SET_COOKIE, session::set_cookie(&cookie, lifetime))],
                Redirect::to(&next),
            )
                .into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            html(&SignInPage {
                layout: Layout::anonymous("Sign in"),
                next,
                error: Some(
                    "This key is not a tenant API key or an operator key of this gateway."
                        .to_owned(),
                ),
            }),
        )
            .into_response(),
    }
}

async fn sign_out(
    State(gateway): State<Gateway>,
    viewer: Viewer,
    headers: HeaderMap,
    body: String,
) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let pairs = form_pairs(&body);
    viewer.check_csrf(&gateway, field(&pairs, "csrf").unwrap_or(""))?;
    Ok((
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/ui/sign-in"),
    )
        .into_response())
}

const STYLESHEET: &str = include_str!("assets/app.css");
const SCRIPT: &str = include_str!("assets/app.js");

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLESHEET,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(
            safe_next(Some("/ui/pipelines?status=FAILED")),
            "/ui/pipelines?status=FAILED"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui");
        assert_eq!(safe_next(Some("//evil.example/ui")), "/ui");
        assert_eq!(safe_next(None), "/ui");
    }

    #[test]
    fn forms_decode() {
        let pairs = form_pairs("key=a%2Bb+c&next=%2Fui%2Fx&empty=");
        assert_eq!(field(&pairs, "key"), Some("a+b c"));
        assert_eq!(field(&pairs, "next"), Some("/ui/x"));
        assert_eq!(field(&pairs, "empty"), None);
        assert_eq!(query_escape("/ui/p?a=b c"), "/ui/p%3Fa%3Db%20c");
    }
}
