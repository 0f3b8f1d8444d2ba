//! Liveness, readiness, the webhook endpoint's health (seed 002) and the
//! Prometheus exposition.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::health::Health;
use serde::Serialize;

use crate::Gateway;

#[derive(Serialize)]
struct WebhookHealth {
    status: &'static str,
    broker: &'static str,
    streams: &'static str,
    /// Per webhook source: `accepting`, or `refusing` while its secret is unset.
    sources: BTreeMap<&'static str, &'static str>,
    /// Why the status is `degraded`, when it is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasons: Vec<&'static str>,
    timestamp: String,
}

/// `GET /health/webhook`: can webhooks be accepted right now? 200 when the
/// broker is connected, the streams are in place and at least one source
/// has its secret; 503 (`degraded`, with the reasons) otherwise.
pub(super) async fn webhook_health(State(gateway): State<Gateway>) -> Response {
    let connected = gateway.broker.is_connected();
    let streams_ready = gateway.broker.streams_ready();
    let secrets = &gateway.config.secrets;
    let state = |configured: bool| if configured { "accepting" } else { "refusing" };
    let sources = BTreeMap::from([
        ("api", state(!gateway.config.api_keys.is_empty())),
        ("buddy", state(secrets.buddy.is_some())),
        ("ci/github", state(secrets.github.is_some())),
        (
            "ci/gitlab",
            state(secrets.gitlab.is_some() || secrets.gitlab_signing.is_some()),
        ),
        ("ci/jenkins", state(secrets.jenkins.is_some())),
        ("ci/circleci", state(secrets.circleci.is_some())),
        ("providers", state(secrets.providers.is_some())),
        ("sweep-callback", state(secrets.callback.is_some())),
    ]);
    let any_source = sources.values().any(|state| *state == "accepting");
    let reasons: Vec<&'static str> = [
        (!connected, "the message broker is not connected"),
        (!streams_ready, "the streams are not ensured yet"),
        (
            !any_source,
            "no source can accept: set HOOKMESH_API_KEYS or a HOOKMESH_SECRET_* variable",
        ),
    ]
    .into_iter()
    .filter_map(|(failing, reason)| failing.then_some(reason))
    .collect();
    let healthy = reasons.is_empty();
    let body = WebhookHealth {
        status: if healthy { "healthy" } else { "degraded" },
        broker: if connected {
            "connected"
        } else {
            "disconnected"
        },
        streams: if streams_ready { "ready" } else { "pending" },
        sources,
        reasons,
        timestamp: Timestamp::now().to_rfc3339(),
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /readyz`: 200 once the broker is reachable and the streams exist.
pub(super) async fn ready(State(gateway): State<Gateway>) -> Response {
    let reason = if !gateway.broker.is_connected() {
        Some("the message broker is not connected")
    } else if !gateway.broker.streams_ready() {
        Some("the streams are not ensured yet")
    } else {
        None
    };
    match reason {
        None => (StatusCode::OK, Json(serde_json::json!({"status": "ready"}))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "not_ready", "reason": reason})),
        )
            .into_response(),
    }
}

/// `GET /health`: the process answers (003's format).
pub(super) async fn health() -> Json<Health> {
    Json(Health::healthy())
}

/// `GET /metrics`: every metric of the process, in the OpenMetrics text format.
pub(super) async fn metrics(State(gateway): State<Gateway>) -> Response {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &gateway.registry) {
        tracing::error!(%error, "Could not encode the metrics.");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
