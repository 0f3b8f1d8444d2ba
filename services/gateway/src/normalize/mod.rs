//! Platform payloads → seed 001's pipeline event.
//!
//! Each platform module is a plain function from the delivery's headers and
//! JSON to [`Normalized`]: an event to publish, or a reason the delivery is
//! acknowledged without publishing (a ping, an event or phase the mesh does
//! not consume). Only the fields a normaliser reads are required; a missing
//! one is reported with its JSON path.

pub mod circleci;
pub mod github;
pub mod gitlab;
pub mod jenkins;

use axum::http::HeaderMap;
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::ci::CiPipelineEvent;
use hookmesh_contracts::ci::{CiPlatform, FailureContext, LOG_EXCERPT_MAX, PipelineEventType};
use hookmesh_contracts::validation::ValidationErrors;
use serde_json::Value;

/// What to do with a verified CI delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalized {
    /// Publish this event.
    Event(Box<CiPipelineEvent>),
    /// Acknowledge without publishing, for this reason.
    Ignored(String),
}

/// Normalises a delivery from `platform`.
pub fn normalize(
    platform: CiPlatform,
    headers: &HeaderMap,
    body: &Value,
) -> Result<Normalized, ValidationErrors> {
    match platform {
        CiPlatform::Github => github::normalize(headers, body),
        CiPlatform::Gitlab => gitlab::normalize(headers, body),
        CiPlatform::Circleci => circleci::normalize(body),
        CiPlatform::Jenkins => jenkins::normalize(body),
    }
}

/// Reads the fields of a platform payload by dotted path, recording the
/// required ones that are missing.
#[derive(Debug)]
pub(crate) struct Payload<'a> {
    root: &'a Value,
    errors: ValidationErrors,
}

impl<'a> Payload<'a> {
    pub(crate) fn new(root: &'a Value) -> Result<Self, ValidationErrors> {
        if root.is_object() {
            Ok(Self {
                root,
                errors: ValidationErrors::new(),
            })
        } else {
            Err(ValidationErrors::single("", "must be a JSON object"))
        }
    }

    /// The value at `a.b.c`; null counts as absent.
    pub(crate) fn get(&self, path: &str) -> Option<&'a Value> {
        path.split('.')
            .try_fold(self.root, |value, key| value.get(key))
            .filter(|value| !value.is_null())
    }

    /// A non-empty string at `path`.
    pub(crate) fn text(&self, path: &str) -> Option<&'a str> {
        self.get(path)?.as_str().filter(|text| !text.is_empty())
    }

    /// An id at `path`, given as a string or an integer.
    pub(crate) fn id(&self, path: &str) -> Option<String> {
        match self.get(path)? {
            Value::String(text) if !text.is_empty() => Some(text.clone()),
            Value::Number(number) if number.is_u64() || number.is_i64() => Some(number.to_string()),
            _ => None,
        }
    }

    pub(crate) fn number(&self, path: &str) -> Option<f64> {
        self.get(path)?.as_f64()
    }

    /// A date-time at `path`: RFC 3339, or GitLab's `2024-05-14 09:12:05 UTC`.
    pub(crate) fn time(&self, path: &str) -> Option<Timestamp> {
        parse_time(self.text(path)?)
    }

    pub(crate) fn require_text(&mut self, path: &str) -> Option<&'a str> {
        let value = self.text(path);
        if value.is_none() {
            self.errors.push(path, "is required (a non-empty string)");
        }
        value
    }

    pub(crate) fn require_id(&mut self, path: &str) -> Option<String> {
        let value = self.id(path);
        if value.is_none() {
            self.errors
                .push(path, "is required (a string or integer id)");
        }
        value
    }

    pub(crate) fn finish(
        self,
        event: Option<CiPipelineEvent>,
    ) -> Result<Normalized, ValidationErrors> {
        self.errors
            .finish(event)
            .map(|event| Normalized::Event(Box::new(event)))
    }
}

/// RFC 3339, or GitLab's `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn parse_time(text: &str) -> Option<Timestamp> {
    Timestamp::parse_rfc3339(text).ok().or_else(|| {
        let rfc3339 = text.strip_suffix(" UTC")?.replacen(' ', "T", 1) + "Z";
        Timestamp::parse_rfc3339(&rfc3339).ok()
    })
}

/// Milliseconds between two instants, when both are known and ordered.
pub(crate) fn duration_ms(start: Option<Timestamp>, end: Option<Timestamp>) -> Option<u64> {
    let seconds = start?.seconds_until(end?);
    (seconds >= 0.0).then(|| (seconds * 1000.0).round() as u64)
}

/// A delivery id from a header, or the error naming it.
pub(crate) fn header_id(
    headers: &HeaderMap,
    names: &[&'static str],
) -> Result<String, ValidationErrors> {
    for name in names {
        if let Some(value) = headers.get(*name).and_then(|v| v.to_str().ok()) {
            let value = value.trim();
            if !value.is_empty() && value.len() <= 256 {
                return Ok(value.to_owned());
            }
        }
    }
    Err(ValidationErrors::single(
        format!("headers.{}", names[0]),
        format!(
            "is required: it identifies the delivery (accepted: {})",
            names.join(", ")
        ),
    ))
}

/// The last `LOG_EXCERPT_MAX` characters of a log.
pub(crate) fn log_excerpt(log: &str) -> Option<String> {
    let log = log.trim_end();
    if log.is_empty() {
        return None;
    }
    let count = log.chars().count();
    Some(
        log.chars()
            .skip(count.saturating_sub(LOG_EXCERPT_MAX))
            .collect(),
    )
}

/// A failure context only for failed events.
pub(crate) fn failure_context_if_failed(
    event_type: PipelineEventType,
    context: FailureContext,
) -> Option<FailureContext> {
    (event_type == PipelineEventType::Failed).then_some(context)
}

/// `org/repo` from a clone or web URL (`https://host/org/repo.git`,
/// `git@host:org/repo.git`).
pub(crate) fn repository_from_url(url: &str) -> Option<String> {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/')?.1,
        // scp-like: git@host:org/repo.git
        None => url.split_once(':')?.1,
    };
    let path = path.trim_matches('/').trim_end_matches(".git");
    (path.contains('/')).then(|| path.to_owned())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use hookmesh_contracts::ci::CiPipelineEvent;
    use serde_json::Value;

    use super::Normalized;

    /// The event of a normalised delivery; fails the test if it was ignored.
    pub fn expect_event(normalized: Normalized) -> CiPipelineEvent {
        match normalized {
            Normalized::Event(event) => *event,
            Normalized::Ignored(reason) => panic!("ignored: {reason}"),
        }
    }

    /// A fixture from `tests/fixtures/ci/<platform>/<name>.json`.
    pub fn load(platform: &str, name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/ci/{platform}/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_and_rfc3339_times_both_parse() {
        assert_eq!(
            parse_time("2024-05-14 09:12:05 UTC").unwrap().to_rfc3339(),
            "2024-05-14T09:12:05Z"
        );
        assert_eq!(
            parse_time("2024-05-14T11:11:41+02:00")
                .unwrap()
                .to_rfc3339(),
            "2024-05-14T09:11:41Z"
        );
        assert_eq!(parse_time("last tuesday"), None);
    }

    #[test]
    fn repositories_are_read_from_clone_urls() {
        for url in [
            "https://github.com/acme/payments-api.git",
            "git@github.com:acme/payments-api.git",
            "https://gitlab.example.com/acme/payments-api",
        ] {
            assert_eq!(
                repository_from_url(url).as_deref(),
                Some("acme/payments-api"),
                "{url}"
            );
        }
        assert_eq!(repository_from_url("https://example.com/"), None);
    }

    #[test]
    fn log_excerpts_keep_the_end() {
        let log = "x".repeat(LOG_EXCERPT_MAX) + "END\n";
        let excerpt = log_excerpt(&log).unwrap();
        assert!(excerpt.ends_with("END"));
        assert_eq!(excerpt.chars().count(), LOG_EXCERPT_MAX);
        assert_eq!(log_excerpt("  \n"), None);
    }
}
