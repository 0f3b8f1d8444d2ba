//! Trace context and correlation ids, from the HTTP request to NATS headers.
//!
//! A valid incoming W3C `traceparent` keeps its trace id (the gateway adds
//! its own span id); otherwise a new trace starts. The correlation id is the
//! caller's `X-Correlation-Id` (or `X-Request-Id`) when it is sane, else the
//! trace id. Both travel in every published message's headers and the
//! correlation id comes back in the response.

use std::cell::Cell;
use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;

use hookmesh_contracts::hex::{encode as hex_encode, random_bytes};

thread_local! {
    static RNG_STATE: Cell<u64> = Cell::new(u64::from_le_bytes(random_bytes::<8>()));
}

/// A fast per-thread pseudo-random number (wyrand), seeded from the
/// operating system once per thread. Trace and span ids need to be unique,
/// not unpredictable; a system call per request for them costs more than
/// the rest of the id handling.
fn next_random() -> u64 {
    RNG_STATE.with(|state| {
        let x = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

pub const TRACEPARENT: &str = "traceparent";
pub const CORRELATION_ID: &str = "X-Correlation-Id";
/// Where a request's events were stored: `subject=sequence`, comma-separated
/// in the order of the events (so `hookmesh send` can say where they landed).
pub const PUBLISHED: &str = "Hookmesh-Published";

/// The trace position and correlation id of one request.
#[derive(Debug, Clone)]
pub struct TraceContext {
    /// `00-<trace id>-<span id>-<flags>`.
    pub traceparent: String,
    pub correlation_id: String,
    /// What the request published, for the [`PUBLISHED`] header.
    pub published: PublishedLog,
}

/// `(subject, stream sequence)` of each event a request stored.
#[derive(Debug, Clone, Default)]
pub struct PublishedLog(Arc<Mutex<Vec<(String, u64)>>>);

impl PublishedLog {
    pub fn record(&self, subject: String, sequence: u64) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((subject, sequence));
    }

    /// The [`PUBLISHED`] header's value; `None` when nothing was published.
    pub fn header_value(&self) -> Option<String> {
        let published = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (!published.is_empty()).then(|| {
            published
                .iter()
                .map(|(subject, sequence)| format!("{subject}={sequence}"))
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

impl TraceContext {
    /// The context of a request served in `span`: when spans are exported,
    /// `span` continues the caller's trace and the context is the span's
    /// own; otherwise as [`TraceContext::from_headers`].
    pub fn for_span(headers: &HeaderMap, span: &tracing::Span) -> Self {
        let mut context = Self::from_headers(headers);
        if hookmesh_nats::trace::enabled() {
            if let Some(incoming) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
                hookmesh_nats::trace::set_parent(span, incoming);
            }
            if let Some(traceparent) = hookmesh_nats::trace::traceparent_of(span) {
                let random_trace_id = context.traceparent.get(3..35).map(str::to_owned);
                if random_trace_id.as_deref() == Some(context.correlation_id.as_str()) {
                    context.correlation_id = traceparent[3..35].to_owned();
                }
                context.traceparent = traceparent;
            }
        }
        context
    }

    /// `(trace id, span id)` of the traceparent.
    pub fn ids(&self) -> Option<(&str, &str)> {
        Some((self.traceparent.get(3..35)?, self.traceparent.get(36..52)?))
    }

    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut random = [0u8; 24];
        for chunk in random.chunks_mut(8) {
            chunk.copy_from_slice(&next_random().to_le_bytes());
        }
        let incoming = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let (trace_id, flags) = match incoming {
            Some((trace_id, flags)) => (trace_id.to_owned(), flags.to_owned()),
            None => (hex_encode(&random[..16]), "01".to_owned()),
        };
        let span_id = hex_encode(&random[16..]);
        let correlation_id = [CORRELATION_ID, "X-Request-Id"]
            .iter()
            .find_map(|name| {
                headers
                    .get(*name)
                    .and_then(|v| v.to_str().ok())
                    .filter(|id| is_sane_id(id))
            })
            .map_or_else(|| trace_id.clone(), str::to_owned);
        Self {
            traceparent: format!("00-{trace_id}-{span_id}-{flags}"),
            correlation_id,
            published: PublishedLog::default(),
        }
    }
}

fn is_sane_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// `(trace id, flags)` of a version-00 traceparent with non-zero ids.
fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    (version == "00"
        && parts.next().is_none()
        && lower_hex(trace_id, 32)
        && lower_hex(parent_id, 16)
        && lower_hex(flags, 2)
        && nonzero(trace_id)
        && nonzero(parent_id))
    .then_some((trace_id, flags))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn an_incoming_trace_is_continued_with_a_new_span() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let context = TraceContext::from_headers(&headers);
        assert!(
            context
                .traceparent
                .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
        );
        assert!(!context.traceparent.contains("00f067aa0ba902b7"));
        assert_eq!(context.correlation_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn invalid_traces_start_anew_and_sane_correlation_ids_are_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-000-bad-01"));
        headers.insert(CORRELATION_ID, HeaderValue::from_static("req-uuid-123"));
        let context = TraceContext::from_headers(&headers);
        assert_eq!(context.traceparent.len(), 55);
        assert_eq!(context.correlation_id, "req-uuid-123");

        headers.insert(CORRELATION_ID, HeaderValue::from_static("has spaces"));
        let context = TraceContext::from_headers(&headers);
        assert_eq!(context.correlation_id.len(), 32);
    }
}
