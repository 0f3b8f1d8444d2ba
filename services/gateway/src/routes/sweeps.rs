//! Seeds 003 and 000: triggering a sweep, and the Trading API's callback.

use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use hookmesh_contracts::envelope::{Envelope, EventData as _};
use hookmesh_contracts::subjects::{SWEEP_CALLBACK, SWEEP_TRIGGER};
use hookmesh_contracts::sweep::{SweepCallback, SweepTrigger};
use hookmesh_contracts::sweep_jobs::{JobId, RecordedJob};
use hookmesh_contracts::validation::{StrEnum as _, parse_json};
use hookmesh_contracts::{TenantId, Timestamp, ValidationErrors};
use serde::Serialize;

use super::{accepted, query_value, read_json_body};
use crate::Gateway;
use crate::error::Rejection;
use crate::publish::OutgoingEvent;
use crate::source::Source;
use crate::trace::TraceContext;
use crate::verify::verify_callback;

const TRIGGER_SOURCE: &str = "/api/pipelines/trigger";

#[derive(Debug, Serialize)]
pub(crate) struct TriggerAccepted {
    pub(crate) job_id: JobId,
    status: &'static str,
    message: &'static str,
    combinations: usize,
    duplicate: bool,
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    match headers.get("Idempotency-Key") {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|key| (1..=255).contains(&key.len()))
            .map(Some)
            .ok_or_else(|| {
                Rejection::Invalid(ValidationErrors::single(
                    "headers.Idempotency-Key",
                    "must be 1-255 printable characters",
                ))
            }),
    }
}

/// `POST /api/pipelines/trigger`: 003's TradingSweepTriggerSchema → `sweeps.trigger`.
pub(super) async fn trigger(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    let body = read_json_body(gateway.config.max_body_bytes, &headers, body).await?;
    let tenant = gateway.api_tenant(&headers)?;
    let request = parse_json(&body).map_err(Rejection::Malformed)?;
    let key = idempotency_key(&headers)?;
    let triggered = gateway.trigger_sweep(tenant, &request, key, &trace).await?;
    Ok(accepted(triggered))
}

impl Gateway {
    /// Validates a trigger request (003's schema, both refinements, the
    /// combination limit) and publishes it to `sweeps.trigger`; nothing is
    /// published when it is refused. The API and the dashboard's form both
    /// come here, so they refuse with the same messages.
    pub(crate) async fn trigger_sweep(
        &self,
        tenant: TenantId,
        request: &serde_json::Value,
        key: Option<&str>,
        trace: &TraceContext,
    ) -> Result<TriggerAccepted, Rejection> {
        let trigger = SweepTrigger::parse(request).map_err(Rejection::Invalid)?;
        let combinations = trigger.combination_count();
        let limit = self.config.sweep_max_combinations;
        if combinations > limit {
            return Err(Rejection::Invalid(ValidationErrors::single(
                "",
                format!(
                    "the sweep has {combinations} (fast, slow) combinations, more than the {limit} \
                     this gateway accepts (HOOKMESH_SWEEP_MAX_COMBINATIONS); narrow the ranges or \
                     raise the step"
                ),
            )));
        }
        let job_id = JobId::for_trigger(&tenant, key);
        if let Some(key) = key {
            // The IETF Idempotency-Key draft: the same key with another request
            // is a client error, not the first request's answer.
            match self.recorded_job(&job_id).await {
                Ok(Some(first)) if first.parameters != trigger => {
                    return Err(Rejection::IdempotencyKeyReused(format!(
                        "Idempotency-Key {key:?} was already used for a different sweep request \
                         (job {job_id}); use a new key for a new request"
                    )));
                }
                Ok(_) => {}
                // JetStream's duplicate window still answers for a repeat.
                Err(error) => {
                    tracing::warn!(%error, "The job registry could not be read; the trigger's key is not compared.");
                }
            }
        }
        let now = Timestamp::now();
        let recorded = RecordedJob {
            tenant_id: tenant.clone(),
            parameters: trigger.clone(),
            created_at: now,
        };
        let envelope = Envelope::new(
            job_id.to_string(),
            TRIGGER_SOURCE,
            now,
            tenant,
            Some(job_id.to_string()),
            trigger,
        );
        let ack = self
            .publish_one(
                Source::SweepTrigger,
                OutgoingEvent {
                    subject: SWEEP_TRIGGER.to_owned(),
                    message_id: format!("{SWEEP_TRIGGER}:{job_id}"),
                    payload: envelope.to_json().into(),
                    traceparent: None,
                },
                trace,
            )
            .await?;
        if !ack.duplicate {
            self.record_job(&job_id, &recorded).await;
        }
        Ok(TriggerAccepted {
            job_id,
            status: "QUEUED",
            message: "Trading sweep job queued successfully",
            combinations,
            duplicate: ack.duplicate,
        })
    }
}

#[derive(Serialize)]
struct CallbackAccepted {
    acknowledged: bool,
    job_id: JobId,
    duplicate: bool,
}

/// `POST /webhook/sweep-callback` and `POST /webhook/trading-sweep`: the
/// Trading API's completion or failure callback → `sweeps.callback`, with the
/// hookmesh job as the envelope's subject.
pub(super) async fn callback(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    let body = read_json_body(gateway.config.max_body_bytes, &headers, body).await?;
    let job_id = query_value(query.as_deref(), "job_id")?;
    let token = query_value(query.as_deref(), "token")?;
    gateway.authenticated(
        Source::SweepCallback,
        verify_callback(
            gateway.config.secrets.callback.as_ref(),
            job_id.as_deref(),
            token.as_deref(),
        ),
    )?;
    let job_id = job_id.unwrap_or_default();
    gateway.admit(Source::SweepCallback.rate_family())?;
    // 003 refuses callbacks for jobs it never created, so a forged or
    // stray callback cannot reach the stream.
    let unknown = |id: &str| Rejection::NotFound(format!("no sweep job {id:?}"));
    let job_id = JobId::parse(&job_id).map_err(|_| unknown(&job_id))?;
    let tenant = gateway
        .recorded_job(&job_id)
        .await?
        .ok_or_else(|| unknown(job_id.as_str()))?
        .tenant_id;
    let callback = SweepCallback::parse(&parse_json(&body).map_err(Rejection::Malformed)?)
        .map_err(Rejection::Invalid)?;
    let outcome = callback.status.as_str();
    let event_id = format!("{job_id}:{outcome}");
    let time = callback.timestamp;
    let envelope = Envelope::new(
        event_id.clone(),
        "/webhook/sweep-callback",
        time,
        tenant,
        Some(job_id.to_string()),
        callback,
    );
    let ack = gateway
        .publish_one(
            Source::SweepCallback,
            OutgoingEvent {
                subject: SWEEP_CALLBACK.to_owned(),
                message_id: format!("{SWEEP_CALLBACK}:{event_id}"),
                payload: envelope.to_json().into(),
                traceparent: None,
            },
            &trace,
        )
        .await?;
    Ok(accepted(CallbackAccepted {
        acknowledged: true,
        job_id,
        duplicate: ack.duplicate,
    }))
}
