//! Trace context across the broker: W3C `traceparent` in NATS headers, and
//! the OpenTelemetry spans of publishing and consuming.
//!
//! Spans are exported only when the process set up an exporter
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, see `hookmesh/src/telemetry.rs`), which
//! calls [`enable`]. Until then every function here is a no-op or returns
//! `None`, and no span is made: the mesh costs what it did without tracing,
//! and `traceparent` still travels as the gateway made it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const CORRELATION_ID: &str = "X-Correlation-Id";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Spans are exported from now on (called once an exporter is installed).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether spans are exported.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The remote span context a version-00 `traceparent` names.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace_id.len() != 32 || span_id.len() != 16 {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

/// `00-<trace id>-<span id>-<flags>` of `context`.
pub fn format(context: &SpanContext) -> String {
    format!(
        "00-{:032x}-{:016x}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The exported span context of `span`; `None` when nothing is exported.
fn context_of(span: &Span) -> Option<SpanContext> {
    if !enabled() || span.is_none() {
        return None;
    }
    let context = span.context().span().span_context().clone();
    context.is_valid().then_some(context)
}

/// The `traceparent` that makes a message a child of `span`, when spans
/// are exported.
pub fn traceparent_of(span: &Span) -> Option<String> {
    context_of(span).map(|context| format(&context))
}

/// Makes `span` a child of the remote span `traceparent` names (when spans
/// are exported and it is valid).
pub fn set_parent(span: &Span, traceparent: &str) {
    if !enabled() {
        return;
    }
    if let Some(remote) = parse(traceparent) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to the remote span `traceparent` names (a batch to each of
/// its messages).
pub fn link(span: &Span, traceparent: &str) {
    if enabled()
        && let Some(remote) = parse(traceparent)
    {
        span.add_link(remote);
    }
}

/// Records `span`'s exported trace and span ids in its `trace_id` and
/// `span_id` fields, so that its log lines can be found from the trace.
pub fn record_ids(span: &Span) {
    if let Some(context) = context_of(span) {
        span.record("trace_id", format!("{:032x}", context.trace_id()));
        span.record("span_id", format!("{:016x}", context.span_id()));
    }
}

/// A producer span for publishing `message_id` on `subject`, a child of
/// `parent` (a `traceparent`; empty: of the current span). A disabled span
/// when nothing is exported.
pub fn producer_span(subject: &str, message_id: &str, parent: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {subject}"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %subject,
        messaging.message.id = %message_id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    if !parent.is_empty() {
        set_parent(&span, parent);
    }
    record_ids(&span);
    span
}

/// A client span for a statement or transaction on the database
/// (`system`: `sqlite`, `postgresql`).
pub fn database_span(system: &'static str, operation: &'static str, table: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "database",
        otel.name = %format_args!("{operation} {table}"),
        otel.kind = "client",
        db.system.name = system,
        db.operation.name = operation,
        db.collection.name = %table,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    record_ids(&span);
    span
}

/// A client span for an operation on a JetStream key-value bucket.
pub fn kv_span(operation: &'static str, bucket: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "kv",
        otel.name = %format_args!("{operation} {bucket}"),
        otel.kind = "client",
        db.system.name = "nats_kv",
        db.operation.name = operation,
        db.namespace = %bucket,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    record_ids(&span);
    span
}

/// A client span for an HTTP request to another service (`name`: what it
/// is for, e.g. `trading_api submit`).
pub fn http_client_span(name: &str, method: &str, url: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        "http",
        otel.name = %format_args!("{method} {name}"),
        otel.kind = "client",
        http.request.method = %method,
        url.full = %hookmesh_contracts::redact::url(url),
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    record_ids(&span);
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_round_trip_and_bad_ones_are_refused() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = parse(value).unwrap();
        assert!(context.is_remote());
        assert!(context.is_sampled());
        assert_eq!(format(&context), value);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn nothing_is_made_while_spans_are_not_exported() {
        assert!(producer_span("a.b", "id", "").is_none());
        assert_eq!(traceparent_of(&Span::current()), None);
    }
}
