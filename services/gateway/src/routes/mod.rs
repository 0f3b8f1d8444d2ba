//! The HTTP routes, and what every route shares: the request observer
//! (trace context, correlation header, metrics, refusal logs), reading a
//! JSON body within the limit, and the authenticate → admit → publish steps.
//!
//! Order of checks on a webhook: route (404) → content type (415) → body size
//! (413) → authentication over the raw bytes (401) → rate limit (429) → JSON
//! and schema (400) → publish (503, or 202 once JetStream has acknowledged).

pub(crate) mod admin;
mod buddy;
mod campaigns;
mod ci;
pub(crate) mod csr;
mod extract;
mod health;
pub(crate) mod pipelines;
mod providers;
pub(crate) mod sweeps;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt as _;
use hookmesh_contracts::{TenantId, ValidationErrors};
use tracing::Instrument as _;

use self::extract::{PathId, query_value};
use crate::Gateway;
use crate::error::{RefusalNote, Rejection};
use crate::publish::{OutgoingEvent, Published};
use crate::source::Source;
use crate::trace::{CORRELATION_ID, PUBLISHED, TraceContext};
use crate::verify::sources::Clock;
use crate::verify::{AuthError, verify_api_key};

/// Builds the router over `gateway`.
pub fn router(gateway: Gateway) -> Router {
    Router::new()
        .route("/api/pipelines/trigger", post(sweeps::trigger))
        .route("/api/pipelines", get(pipelines::list))
        .route("/api/pipelines/{id}", get(pipelines::job))
        .route("/api/pipelines/{id}/events", get(pipelines::events))
        .route("/webhook/sweep-callback", post(sweeps::callback))
        .route("/webhook/trading-sweep", post(sweeps::callback))
        .route("/webhooks/buddy-events", post(buddy::receive))
        .route(
            "/api/campaigns",
            post(campaigns::register).get(campaigns::list),
        )
        .route("/api/campaigns/{id}", get(campaigns::campaign))
        .route("/api/csr/metrics", get(csr::metrics))
        .route("/api/csr/participants/{id}/journey", get(csr::journey))
        .route("/webhooks/ci/{platform}", post(ci::receive))
        .route("/webhooks/providers/{provider}", post(providers::receive))
        .route("/health", get(health::health))
        .route("/health/webhook", get(health::webhook_health))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/api/admin/streams", get(admin::streams))
        .route("/api/admin/ci/failures", get(admin::ci_failures))
        .route("/api/admin/dead-letters", get(admin::dead_letters))
        .route("/api/admin/dead-letters/replay", post(admin::replay))
        .merge(crate::ui::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(gateway.clone(), observe))
        .with_state(gateway)
}

/// The route template of `path`, a bounded metrics label.
fn route_label(path: &str) -> &'static str {
    match path {
        "/api/pipelines/trigger" => "/api/pipelines/trigger",
        "/api/pipelines" => "/api/pipelines",
        p if p.starts_with("/api/pipelines/") && p.ends_with("/events") => {
            "/api/pipelines/{id}/events"
        }
        p if p.starts_with("/api/pipelines/") => "/api/pipelines/{id}",
        "/webhook/sweep-callback" => "/webhook/sweep-callback",
        "/webhook/trading-sweep" => "/webhook/trading-sweep",
        "/webhooks/buddy-events" => "/webhooks/buddy-events",
        "/api/campaigns" => "/api/campaigns",
        p if p.starts_with("/api/campaigns/") => "/api/campaigns/{id}",
        "/api/csr/metrics" => "/api/csr/metrics",
        p if p.starts_with("/api/csr/participants/") => "/api/csr/participants/{id}/journey",
        "/health" => "/health",
        "/health/webhook" => "/health/webhook",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        "/api/admin/streams" => "/api/admin/streams",
        "/api/admin/ci/failures" => "/api/admin/ci/failures",
        "/api/admin/dead-letters" => "/api/admin/dead-letters",
        "/api/admin/dead-letters/replay" => "/api/admin/dead-letters/replay",
        p if p == "/ui" || p.starts_with("/ui/") => "/ui",
        p if p.starts_with("/webhooks/ci/") => "/webhooks/ci/{platform}",
        p if p.starts_with("/webhooks/providers/") => "/webhooks/providers/{provider}",
        _ => "unmatched",
    }
}

/// Wraps every request: trace context in, correlation id out, metrics, and
/// a log line for each refusal saying why; everything the request logs is
/// in its span, which carries the correlation id.
async fn observe(State(gateway): State<Gateway>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(request.uri().path());
    let method = request.method().clone();
    // The trace and span ids go in every log line of the request; when
    // spans are exported, this is the server span, with OpenTelemetry's
    // HTTP conventions (the attributes only then, as every field costs
    // each request something in the logs' formatting).
    let span = if hookmesh_nats::trace::enabled() {
        tracing::info_span!(
            "request",
            otel.name = %format_args!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.request.method = %method,
            http.route = route,
            url.path = request.uri().path(),
            http.response.status_code = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    } else {
        tracing::info_span!(
            "request",
            %method,
            route,
            correlation_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    };
    let trace = TraceContext::for_span(request.headers(), &span);
    span.record("correlation_id", trace.correlation_id.as_str());
    if let Some((trace_id, span_id)) = trace.ids() {
        span.record("trace_id", trace_id);
        span.record("span_id", span_id);
    }
    request.extensions_mut().insert(trace.clone());
    let mut response = next.run(request).instrument(span.clone()).await;
    let _entered = span.enter();
    let status = response.status();
    // As a signed integer: OpenTelemetry's attributes have no unsigned type.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    if let Ok(value) = HeaderValue::from_str(&trace.correlation_id) {
        response.headers_mut().insert(CORRELATION_ID, value);
    }
    if let Some(value) = trace
        .published
        .header_value()
        .and_then(|published| HeaderValue::from_str(&published).ok())
    {
        response.headers_mut().insert(PUBLISHED, value);
    }
    gateway
        .metrics
        .observe_request(route, status.as_u16(), started.elapsed().as_secs_f64());
    let correlation_id = trace.correlation_id.as_str();
    match response.extensions().get::<RefusalNote>() {
        Some(note) if status == StatusCode::UNAUTHORIZED || status.is_server_error() => {
            tracing::warn!(%method, route, status = status.as_u16(), correlation_id, error = note.code, reason = %note.message, "Request refused.");
        }
        Some(note) => {
            tracing::info!(%method, route, status = status.as_u16(), correlation_id, error = note.code, reason = %note.message, "Request refused.");
        }
        None => {
            tracing::debug!(%method, route, status = status.as_u16(), correlation_id, elapsed = ?started.elapsed(), "Request answered.");
        }
    }
    response
}

async fn not_found(request: Request) -> Rejection {
    Rejection::NotFound(format!(
        "no route {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed() -> Rejection {
    Rejection::MethodNotAllowed
}

/// Checks the content type and reads the whole body, at most `limit` bytes.
async fn read_json_body(limit: usize, headers: &HeaderMap, body: Body) -> Result<Bytes, Rejection> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media_type != "application/json" && !media_type.ends_with("+json") {
        return Err(Rejection::UnsupportedMediaType(
            if content_type.is_empty() {
                "Content-Type must be application/json".to_owned()
            } else {
                format!("Content-Type must be application/json, not {content_type:?}")
            },
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|length| length > limit) {
        if declared.is_some_and(|length| length <= DRAIN_MAX) {
            drain(stream).await;
        }
        return Err(Rejection::PayloadTooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| match timed_out(&error) {
            Some(timeout) => Rejection::BodyTimedOut(crate::server::BodyTimedOut(timeout)),
            None => Rejection::Malformed(ValidationErrors::single(
                "",
                format!("the body could not be read: {error}"),
            )),
        })?;
        if bytes.len() + chunk.len() > limit {
            drain(stream).await;
            return Err(Rejection::PayloadTooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

/// The body timeout, when that is why a body could not be read.
fn timed_out(error: &axum::Error) -> Option<std::time::Duration> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if let Some(timed_out) = error.downcast_ref::<crate::server::BodyTimedOut>() {
            return Some(timed_out.0);
        }
        cause = error.source();
    }
    None
}

/// Most of a refused body read and discarded before answering 413.
const DRAIN_MAX: usize = 16 * 1024 * 1024;
/// Longest a refused body is read for.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards what is left of a refused body, within bounds, so
/// that a client still sending it reads the 413 instead of a connection
/// reset; beyond the bounds the connection is closed as it stands.
async fn drain(mut stream: axum::body::BodyDataStream) {
    let until = tokio::time::Instant::now() + DRAIN_FOR;
    let mut read = 0;
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(until, stream.next()).await {
        read += chunk.len();
        if read > DRAIN_MAX {
            break;
        }
    }
}

/// A delivery id from a request header (`X-Webhook-Id`), or a 400 naming it.
fn delivery_header(headers: &HeaderMap, name: &'static str) -> Result<String, Rejection> {
    let value = headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    match value {
        Some(id) if (1..=256).contains(&id.len()) => Ok(id.to_owned()),
        _ => Err(Rejection::Invalid(ValidationErrors::single(
            format!("headers.{name}"),
            "is required (1-256 printable characters): it identifies the delivery",
        ))),
    }
}

impl Gateway {
    fn clock(&self) -> Clock {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs() as i64);
        Clock {
            now,
            tolerance_seconds: self.config.timestamp_tolerance_secs,
        }
    }

    /// Passes an authentication result through, counting failures.
    fn authenticated<T>(
        &self,
        source: Source,
        result: Result<T, AuthError>,
    ) -> Result<T, Rejection> {
        result.map_err(|error| {
            self.metrics
                .authentication_failed(source.label(), error.kind());
            Rejection::Unauthorized(error)
        })
    }

    /// Takes one request from `source`'s rate limit.
    pub(crate) fn admit(&self, source: &str) -> Result<(), Rejection> {
        self.limiter
            .check(source)
            .map_err(|retry_after| Rejection::RateLimited { retry_after })
    }

    /// The tenant whose API key the request carries, after taking one
    /// request from that tenant's rate limit.
    fn api_tenant(&self, headers: &HeaderMap) -> Result<TenantId, Rejection> {
        let tenant = self
            .authenticated(Source::Api, verify_api_key(&self.config.api_keys, headers))?
            .clone();
        self.admit(&format!("{}:{tenant}", Source::Api.rate_family()))?;
        Ok(tenant)
    }

    /// Publishes and waits for JetStream's acknowledgements.
    async fn publish(
        &self,
        source: Source,
        mut events: Vec<OutgoingEvent>,
        trace: &TraceContext,
    ) -> Result<Vec<Published>, Rejection> {
        let started = Instant::now();
        let subjects: Vec<String> = events.iter().map(|event| event.subject.clone()).collect();
        // A producer span per event, children of the request's, each
        // event's traceparent naming its own; they end with the acks.
        let _producers: Vec<tracing::Span> = if hookmesh_nats::trace::enabled() {
            events
                .iter_mut()
                .map(|event| {
                    let span =
                        hookmesh_nats::trace::producer_span(&event.subject, &event.message_id, "");
                    event.traceparent = hookmesh_nats::trace::traceparent_of(&span);
                    span
                })
                .collect()
        } else {
            Vec::new()
        };
        match self.broker.publish(events, trace).await {
            Ok(acks) => {
                let seconds = started.elapsed().as_secs_f64();
                for (ack, subject) in acks.iter().zip(subjects) {
                    self.metrics
                        .published(source.label(), ack.duplicate, seconds);
                    trace.published.record(subject, ack.sequence);
                }
                Ok(acks)
            }
            Err(error) => {
                self.metrics.publish_failed(error.kind());
                Err(Rejection::Unavailable(error))
            }
        }
    }

    /// Publishes one envelope and returns its acknowledgement.
    async fn publish_one(
        &self,
        source: Source,
        event: OutgoingEvent,
        trace: &TraceContext,
    ) -> Result<Published, Rejection> {
        let acks = self.publish(source, vec![event], trace).await?;
        Ok(acks[0])
    }
}

/// A paged list's `limit` (from 1 to `max`, `default` when absent) and
/// `cursor` query parameters; a bad limit is noted in `errors`.
fn page_of(
    query: Option<&str>,
    default: u32,
    max: u32,
    errors: &mut ValidationErrors,
) -> Result<(u32, Option<String>), Rejection> {
    let limit = match query_value(query, "limit")? {
        None => default,
        Some(text) => match text.parse::<u32>() {
            Ok(limit) if (1..=max).contains(&limit) => limit,
            _ => {
                errors.push("limit", format!("must be an integer from 1 to {max}"));
                default
            }
        },
    };
    let cursor = query_value(query, "cursor")?.filter(|c| !c.is_empty());
    Ok((limit, cursor))
}

/// 202 with a JSON body.
fn accepted(body: impl serde::Serialize) -> Response {
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

/// 200 with a service's JSON answer, passed through as it came.
fn json_answer(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_templates() {
        assert_eq!(
            route_label("/webhooks/ci/github"),
            "/webhooks/ci/{platform}"
        );
        assert_eq!(
            route_label("/webhooks/providers/whatever"),
            "/webhooks/providers/{provider}"
        );
        assert_eq!(route_label("/random/path"), "unmatched");
    }

    #[tokio::test]
    async fn bodies_need_a_json_content_type_and_respect_the_limit() {
        let mut headers = HeaderMap::new();
        let body = || Body::from(vec![b'x'; 100]);
        let refused = read_json_body(1000, &headers, body()).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let refused = read_json_body(1000, &headers, body()).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert_eq!(
            read_json_body(1000, &headers, body()).await.unwrap().len(),
            100
        );
        let refused = read_json_body(99, &headers, body()).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);

        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("100"));
        let refused = read_json_body(99, &headers, body()).await.unwrap_err();
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
