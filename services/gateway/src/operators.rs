//! What operators look at, as plain code: filters over stored messages and
//! dead letters (subject, source, type, time range, partial-JSON match on
//! the payload), and rates from samples of sequence numbers. The admin API
//! and the dashboard's operator pages both use it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hookmesh_contracts::Timestamp;
use hookmesh_nats::dead_letters::StoredDeadLetter;
use hookmesh_nats::subject_matches;
use serde_json::Value;

use crate::Gateway;
use crate::broker::StreamView;
use crate::error::Rejection;

/// Whether `pattern` is contained in `value`: every member of a pattern
/// object is in the value's object and matches there; every element of a
/// pattern array matches some element of the value's array; a string
/// pattern matches a string value containing it (case-insensitive); other
/// scalars are equal.
pub fn json_contains(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(value), Value::Object(pattern)) => pattern.iter().all(|(key, wanted)| {
            value
                .get(key)
                .is_some_and(|found| json_contains(found, wanted))
        }),
        (Value::Array(value), Value::Array(pattern)) => pattern
            .iter()
            .all(|wanted| value.iter().any(|found| json_contains(found, wanted))),
        (Value::String(value), Value::String(pattern)) => {
            value.to_lowercase().contains(&pattern.to_lowercase())
        }
        (value, pattern) => value == pattern,
    }
}

/// A payload match as typed: JSON (`{"data":{"program_id":"p-1"}}`),
/// matched as [`json_contains`]; anything else, as text in the payload.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadMatch {
    Json(Value),
    Text(String),
}

impl PayloadMatch {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(match serde_json::from_str::<Value>(text) {
            Ok(json @ (Value::Object(_) | Value::Array(_))) => Self::Json(json),
            _ => Self::Text(text.to_lowercase()),
        })
    }

    pub fn matches(&self, payload: &[u8]) -> bool {
        match self {
            Self::Json(pattern) => serde_json::from_slice::<Value>(payload)
                .is_ok_and(|value| json_contains(&value, pattern)),
            Self::Text(text) => String::from_utf8_lossy(payload)
                .to_lowercase()
                .contains(text.as_str()),
        }
    }
}

/// Filters of the tail view and the dead-letter list; unset ones pass all.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    /// A NATS subject filter (`buddy.>`, `ci.pipeline.*.failed`).
    pub subject: Option<String>,
    /// The envelope's `source` contains this.
    pub source: Option<String>,
    /// The envelope's `type` contains this.
    pub event_type: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub payload: Option<PayloadMatch>,
    /// The dead letter's error or consumer contains this.
    pub error: Option<String>,
}

/// What a filter looks at in one message.
#[derive(Debug)]
pub struct Candidate<'a> {
    pub subject: &'a str,
    pub time: Timestamp,
    pub payload: &'a [u8],
    /// The dead letter's error and consumer, when it is one.
    pub error: Option<(&'a str, &'a str)>,
}

fn contains(haystack: Option<&str>, needle: &Option<String>) -> bool {
    needle.as_deref().is_none_or(|needle| {
        haystack.is_some_and(|found| found.to_lowercase().contains(&needle.to_lowercase()))
    })
}

impl MessageFilter {
    pub fn is_empty(&self) -> bool {
        self.subject.is_none()
            && self.source.is_none()
            && self.event_type.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.payload.is_none()
            && self.error.is_none()
    }

    pub fn matches(&self, candidate: &Candidate<'_>) -> bool {
        if self
            .subject
            .as_deref()
            .is_some_and(|subject| !subject_matches(subject, candidate.subject))
        {
            return false;
        }
        if self.since.is_some_and(|since| candidate.time < since)
            || self.until.is_some_and(|until| candidate.time > until)
        {
            return false;
        }
        if self.source.is_some() || self.event_type.is_some() {
            let envelope = serde_json::from_slice::<Value>(candidate.payload).unwrap_or_default();
            let field = |name: &str| {
                envelope
                    .get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            if !contains(field("source").as_deref(), &self.source)
                || !contains(field("type").as_deref(), &self.event_type)
            {
                return false;
            }
        }
        if let Some(wanted) = &self.error {
            let found = candidate
                .error
                .map(|(error, consumer)| format!("{error} {consumer}"));
            if !contains(found.as_deref(), &Some(wanted.clone())) {
                return false;
            }
        }
        self.payload
            .as_ref()
            .is_none_or(|payload| payload.matches(candidate.payload))
    }
}

/// How far back a rate looks.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Samples of counters (a stream's last sequence, a consumer's delivered
/// sequence) taken whenever an operator page is drawn, giving each a rate
/// per second over about the last minute.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

impl Rates {
    /// Records `value` for `key` now and returns its rate per second since
    /// the oldest sample within [`RATE_WINDOW`] (None on the first sample).
    pub fn observe(&self, key: &str, value: u64) -> Option<f64> {
        self.observe_at(key, value, Instant::now())
    }

    fn observe_at(&self, key: &str, value: u64, now: Instant) -> Option<f64> {
        let mut samples = self.samples.lock().expect("never poisoned");
        let history = samples.entry(key.to_owned()).or_default();
        while history
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            history.pop_front();
        }
        let rate = history.front().and_then(|(at, first)| {
            let seconds = now.duration_since(*at).as_secs_f64();
            (seconds >= 0.5).then(|| value.saturating_sub(*first) as f64 / seconds)
        });
        history.push_back((now, value));
        rate
    }
}

/// Reads a filter from decoded query or form pairs: `subject`, `source`,
/// `type`, `since`, `until` (RFC 3339, or a browser's local
/// `YYYY-MM-DDTHH:MM`, taken as UTC), `payload`, `error`.
pub fn filter_from_pairs(pairs: &[(String, String)]) -> Result<MessageFilter, String> {
    let value = |name: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.trim().to_owned())
            .filter(|value| !value.is_empty())
    };
    let time = |name: &str| -> Result<Option<Timestamp>, String> {
        value(name)
            .map(|text| {
                Timestamp::parse_rfc3339(&text)
                    .or_else(|_| Timestamp::parse_rfc3339(&format!("{text}:00Z")))
                    .or_else(|_| Timestamp::parse_rfc3339(&format!("{text}Z")))
                    .map_err(|_| format!("{name}: {text:?} is not a time (2025-01-27T10:30:00Z)"))
            })
            .transpose()
    };
    Ok(MessageFilter {
        subject: value("subject"),
        source: value("source"),
        event_type: value("type"),
        since: time("since")?,
        until: time("until")?,
        payload: value("payload").and_then(|text| PayloadMatch::parse(&text)),
        error: value("error"),
    })
}

/// A stream with the rates its samples give.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamRow {
    #[serde(flatten)]
    pub stream: StreamView,
    /// Messages stored per second over about the last minute.
    pub rate: Option<f64>,
    /// Each consumer's deliveries per second, in the order of `consumers`.
    pub consumer_rates: Vec<Option<f64>>,
}

/// What happened to one dead letter asked to be replayed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplayOutcome {
    pub sequence: u64,
    /// Where it went, when it was replayed.
    pub subject: Option<String>,
    pub stream_sequence: Option<u64>,
    pub error: Option<String>,
}

impl Gateway {
    fn broker_error(error: impl std::fmt::Display) -> Rejection {
        Rejection::ServiceUnavailable(format!("JetStream could not be read: {error}"))
    }

    /// Every stream and consumer, with rates.
    pub async fn stream_rows(&self) -> Result<Vec<StreamRow>, Rejection> {
        let streams = self.broker.streams().await.map_err(Self::broker_error)?;
        Ok(streams
            .into_iter()
            .map(|stream| {
                let rate = self
                    .rates
                    .observe(&format!("stream:{}", stream.name), stream.last_sequence);
                let consumer_rates = stream
                    .consumers
                    .iter()
                    .map(|consumer| {
                        self.rates.observe(
                            &format!("consumer:{}:{}", stream.name, consumer.name),
                            consumer.delivered_sequence,
                        )
                    })
                    .collect();
                StreamRow {
                    stream,
                    rate,
                    consumer_rates,
                }
            })
            .collect())
    }

    /// The dead letters `filter` matches, newest first: how many, and the
    /// first `limit` of them.
    pub async fn matching_dead_letters(
        &self,
        filter: &MessageFilter,
        limit: usize,
    ) -> Result<(usize, Vec<StoredDeadLetter>), Rejection> {
        let letters = self
            .broker
            .dead_letters(filter.subject.as_deref(), usize::MAX)
            .await
            .map_err(Self::broker_error)?;
        let mut matching: Vec<StoredDeadLetter> = letters
            .into_iter()
            .filter(|letter| {
                filter.matches(&Candidate {
                    subject: &letter.subject,
                    time: letter.time,
                    payload: &letter.payload,
                    error: Some((&letter.error, &letter.consumer)),
                })
            })
            .collect();
        matching.reverse();
        let count = matching.len();
        matching.truncate(limit);
        Ok((count, matching))
    }

    /// Replays each dead letter, one after the other, saying how each went.
    pub async fn replay_dead_letters(&self, sequences: &[u64]) -> Vec<ReplayOutcome> {
        let mut outcomes = Vec::with_capacity(sequences.len());
        for &sequence in sequences {
            let outcome = match self.broker.replay_dead_letter(sequence).await {
                Ok((subject, stream_sequence)) => ReplayOutcome {
                    sequence,
                    subject: Some(subject),
                    stream_sequence: Some(stream_sequence),
                    error: None,
                },
                Err(error) => ReplayOutcome {
                    sequence,
                    subject: None,
                    stream_sequence: None,
                    error: Some(error.to_string()),
                },
            };
            tracing::info!(sequence, replayed = outcome.error.is_none(), error = ?outcome.error, "Dead letter replay.");
            outcomes.push(outcome);
        }
        outcomes
    }

    /// Removes each dead letter for good; returns how many went and the errors.
    pub async fn purge_dead_letters(&self, sequences: &[u64]) -> (usize, Vec<String>) {
        let mut purged = 0;
        let mut errors = Vec::new();
        for &sequence in sequences {
            match self.broker.purge_dead_letter(sequence).await {
                Ok(()) => purged += 1,
                Err(error) => errors.push(format!("dead letter {sequence}: {error}")),
            }
        }
        tracing::info!(purged, failed = errors.len(), "Dead letters purged.");
        (purged, errors)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn partial_json_matches_nested_members_and_array_elements() {
        let value = json!({"type": "buddy.match.created", "data": {"program_id": "ukraine-2025", "tags": ["a", "b"], "n": 3}});
        assert!(json_contains(
            &value,
            &json!({"data": {"program_id": "ukraine"}})
        ));
        assert!(json_contains(
            &value,
            &json!({"data": {"tags": ["b"], "n": 3}})
        ));
        assert!(!json_contains(&value, &json!({"data": {"n": 4}})));
        assert!(!json_contains(&value, &json!({"data": {"missing": 1}})));
        assert!(!json_contains(&value, &json!({"data": {"tags": ["c"]}})));
    }

    #[test]
    fn filters_combine() {
        let payload = br#"{"source":"/webhooks/buddy-events","type":"buddy.match.created","data":{"match_id":"m-77"}}"#;
        let candidate = Candidate {
            subject: "buddy.match.created",
            time: Timestamp::from_unix_seconds(1000).unwrap(),
            payload,
            error: None,
        };
        let mut filter = MessageFilter {
            subject: Some("buddy.>".into()),
            event_type: Some("match".into()),
            payload: PayloadMatch::parse(r#"{"data":{"match_id":"m-77"}}"#),
            ..MessageFilter::default()
        };
        assert!(filter.matches(&candidate));
        filter.since = Timestamp::from_unix_seconds(1001);
        assert!(!filter.matches(&candidate));
        filter.since = None;
        filter.payload = PayloadMatch::parse("m-78");
        assert!(!filter.matches(&candidate));
        filter.payload = PayloadMatch::parse("M-77");
        assert!(filter.matches(&candidate), "text matches ignore case");
        filter.subject = Some("ci.>".into());
        assert!(!filter.matches(&candidate));
    }

    #[test]
    fn rates_come_from_samples_within_the_window() {
        let rates = Rates::default();
        let start = Instant::now();
        assert_eq!(rates.observe_at("s", 100, start), None);
        let rate = rates.observe_at("s", 160, start + Duration::from_secs(30));
        assert_eq!(rate, Some(2.0));
        // The first sample falls out of the window.
        let rate = rates.observe_at("s", 190, start + Duration::from_secs(75));
        assert_eq!(rate, Some(30.0 / 45.0));
    }
}
