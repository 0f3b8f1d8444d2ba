//! Reading what a request names outside its body — path parameters and
//! query values — as strictly as bodies: malformed escapes, control and
//! bidirectional characters and path separators are refused with 400
//! naming the parameter, never passed on or silently dropped.

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use hookmesh_contracts::ValidationErrors;

use crate::error::Rejection;

/// Longest id a path may carry.
const MAX_ID: usize = 256;

/// Why `text` cannot be an id: empty or too long, control or
/// bidirectional-formatting characters (which make a log line or a page
/// read otherwise than it is), path separators or dot-segments.
pub(crate) fn check_id(text: &str) -> Result<(), String> {
    let bidi = |c: char| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if text.is_empty() || text.chars().count() > MAX_ID {
        Err(format!("must be 1-{MAX_ID} characters"))
    } else if text.chars().any(|c| c.is_control() || bidi(c)) {
        Err("must not contain control or bidirectional-formatting characters".to_owned())
    } else if text.contains(['/', '\\']) || text == "." || text == ".." {
        Err("must not contain path separators or be a dot-segment".to_owned())
    } else {
        Ok(())
    }
}

/// The one path parameter of a route, checked as an id.
#[derive(Debug, Clone)]
pub(crate) struct PathId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                Rejection::Invalid(ValidationErrors::single("path", rejection.body_text()))
            })?;
        let (name, value) = params
            .iter()
            .next()
            .ok_or_else(|| Rejection::Invalid(ValidationErrors::single("path", "no id")))?;
        check_id(value).map_err(|reason| {
            Rejection::Invalid(ValidationErrors::single(format!("path.{name}"), reason))
        })?;
        Ok(Self(value.to_owned()))
    }
}

/// The value of `name` in a URL query string, percent-decoded (`+` is a
/// space); `None` when absent. A malformed escape, text that is not UTF-8,
/// or a control or bidirectional-formatting character is a 400 naming it.
pub(crate) fn query_value(query: Option<&str>, name: &str) -> Result<Option<String>, Rejection> {
    let Some(raw) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    else {
        return Ok(None);
    };
    let refuse = |reason: &str| Rejection::Invalid(ValidationErrors::single(name, reason));
    let value = hookmesh_contracts::hex::percent_decode(raw, true)
        .ok_or_else(|| refuse("is not valid percent-encoded UTF-8"))?;
    // No query of the gateway takes free text: a value is an id, a day, a
    // status, a cursor, a token or a number, and none holds these.
    if !value.is_empty() {
        check_id(&value).map_err(|reason| refuse(&reason))?;
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_controls_bidi_and_separators() {
        assert!(check_id("job_1").is_ok());
        assert!(check_id("p-1042").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id("a\u{202E}b").is_err());
        assert!(check_id("a\nb").is_err());
        assert!(check_id("../x").is_err());
        assert!(check_id("..").is_err());
        assert!(check_id(&"x".repeat(257)).is_err());
    }

    #[test]
    fn query_values_are_decoded_or_refused_naming_the_parameter() {
        let query = Some("token=ab%2Fcd&job_id=job_1+x&empty=");
        assert_eq!(
            query_value(query, "job_id").unwrap().as_deref(),
            Some("job_1 x")
        );
        assert_eq!(query_value(query, "missing").unwrap(), None);
        assert_eq!(query_value(query, "empty").unwrap().as_deref(), Some(""));
        let refused = query_value(Some("cursor=%ff%fe%00"), "cursor").unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(query_value(Some("cursor=%zz"), "cursor").is_err());
        assert!(query_value(Some("program=a%E2%80%AEb"), "program").is_err());
    }
}
