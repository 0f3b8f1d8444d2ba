//! Seed 003's job status API: one job with its results, a tenant's jobs,
//! and a job's events as Server-Sent Events. The sweep-worker answers the
//! reads over NATS request/reply; the events come from the job's subjects
//! in the SWEEPS stream, from the first.

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use futures_util::stream::{self, Stream};
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::{SWEEP_JOB_ENDPOINT, SWEEP_LIST_ENDPOINT};
use hookmesh_contracts::sweep_jobs::{
    JobId, JobListQuery, JobQuery, JobStatus, MAX_PAGE, PipelineJob, SweepJobEvent,
};
use hookmesh_contracts::{TenantId, ValidationErrors};

use super::{PathId, json_answer, page_of, query_value};
use crate::Gateway;
use crate::broker::JobEvents;
use crate::error::Rejection;
use crate::reads::read_answer;
use crate::trace::TraceContext;

/// Jobs per page when `limit` is not given.
const DEFAULT_PAGE: u32 = 20;
/// How long a finished job's stream waits for history before it shows the
/// job's final state itself.
const HISTORY_WAIT: Duration = Duration::from_secs(2);

/// The job from the sweep-worker; a job accepted but not taken by it yet
/// is shown QUEUED from the job registry.
pub(crate) async fn fetch_job(
    gateway: &Gateway,
    tenant: TenantId,
    job_id: &str,
    trace: &TraceContext,
) -> Result<(JobId, Bytes), Rejection> {
    let unknown = || Rejection::NotFound(format!("no job {job_id:?}"));
    let job_id = JobId::parse(job_id).map_err(|_| unknown())?;
    let request = JobQuery {
        tenant_id: tenant.clone(),
        job_id: job_id.clone(),
    };
    let answer = gateway
        .ask("sweep", SWEEP_JOB_ENDPOINT, &request, trace)
        .await;
    let job = match answer {
        Err(Rejection::NotFound(_)) => match gateway.recorded_job(&job_id).await? {
            Some(recorded) if recorded.tenant_id == tenant => {
                let view = recorded.queued_view(&job_id);
                serde_json::to_vec(&view).expect("jobs serialise").into()
            }
            _ => return Err(unknown()),
        },
        other => other?,
    };
    Ok((job_id, job))
}

/// `GET /api/pipelines/{id}`: the job, its parameters, metrics and results
/// (best first); another tenant's job is 404.
pub(super) async fn job(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    PathId(job_id): PathId,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let tenant = gateway.api_tenant(&headers)?;
    let (_, job) = fetch_job(&gateway, tenant, &job_id, &trace).await?;
    Ok(json_answer(job))
}

/// `GET /api/pipelines?status=&ticker=&limit=&cursor=`: the tenant's jobs, newest
/// first; `next_cursor` fetches the next page.
pub(super) async fn list(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let tenant = gateway.api_tenant(&headers)?;
    let mut errors = ValidationErrors::new();
    let status = query_value(query.as_deref(), "status")?.and_then(|text| {
        let parsed = text.to_ascii_uppercase().parse::<JobStatus>();
        if parsed.is_err() {
            errors.push(
                "status",
                format!("must be QUEUED, RUNNING, COMPLETED or FAILED, not {text:?}"),
            );
        }
        parsed.ok()
    });
    let ticker = query_value(query.as_deref(), "ticker")?.filter(|t| !t.trim().is_empty());
    let (limit, cursor) = page_of(query.as_deref(), DEFAULT_PAGE, MAX_PAGE, &mut errors)?;
    if !errors.is_empty() {
        return Err(Rejection::Invalid(errors));
    }
    let request = JobListQuery {
        tenant_id: tenant,
        status,
        ticker,
        limit,
        cursor,
    };
    let answer = gateway
        .ask("sweep", SWEEP_LIST_ENDPOINT, &request, &trace)
        .await?;
    Ok(json_answer(answer))
}

fn sse_event(event: &SweepJobEvent, sequence: Option<u64>) -> Event {
    let sse = Event::default()
        .event(event.event.to_string())
        .json_data(event)
        .unwrap_or_else(|_| Event::default().comment("an event could not be encoded"));
    match sequence {
        Some(sequence) => sse.id(sequence.to_string()),
        None => sse,
    }
}

/// `GET /api/pipelines/{id}/events`: every status change and progress
/// event of the job, from its creation, until it is COMPLETED or FAILED;
/// then the stream closes. Each event's `data` is a `SweepJobEvent`, its
/// `event` the kind (`queued`, `running`, `progress`, `completed`,
/// `failed`).
pub(super) async fn events(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    PathId(job_id): PathId,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let tenant = gateway.api_tenant(&headers)?;
    job_event_stream(&gateway, tenant, &job_id, &trace).await
}

/// The job's events as Server-Sent Events, for the API and the dashboard.
pub(crate) async fn job_event_stream(
    gateway: &Gateway,
    tenant: TenantId,
    job_id: &str,
    trace: &TraceContext,
) -> Result<Response, Rejection> {
    let (job_id, snapshot) = fetch_job(gateway, tenant, job_id, trace).await?;
    let job: PipelineJob = read_answer("sweep", &snapshot)?;
    let events = gateway.broker.job_events(&job_id).await.map_err(|e| {
        Rejection::ServiceUnavailable(format!("the job's events cannot be read: {e}"))
    })?;
    Ok(Sse::new(job_events(job, events))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn job_events(
    job: PipelineJob,
    messages: JobEvents,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // None once the final event went out.
    stream::unfold(Some((job, messages)), |state| async move {
        let (job, mut messages) = state?;
        loop {
            let next = if job.status.is_final() {
                match tokio::time::timeout(HISTORY_WAIT, messages.next()).await {
                    Ok(next) => next,
                    Err(_) => return Some((Ok(sse_event(&job.final_event(), None)), None)),
                }
            } else {
                messages.next().await
            };
            let (sequence, payload) = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(job_id = %job.id, %error, "Reading a job's events failed; closing its stream.");
                    return None;
                }
                None => return None,
            };
            let Ok(event) =
                Envelope::parse(&payload).and_then(|envelope| envelope.data_as::<SweepJobEvent>())
            else {
                continue;
            };
            let sse = sse_event(&event, sequence);
            let next = (!event.done).then_some((job, messages));
            return Some((Ok(sse), next));
        }
    })
}
