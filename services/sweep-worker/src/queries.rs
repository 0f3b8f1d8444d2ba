//! The sweep read API, on the NATS services API (`nats micro ls` lists it
//! as `hookmesh-sweeps`): `hookmesh.sweeps.job` and `hookmesh.sweeps.list`.
//! The gateway answers `GET /api/pipelines/…` from them. Every query names
//! its tenant and sees only that tenant's jobs; replicas share the
//! endpoints' queue group.

use async_nats::service::{self, ServiceExt as _};
use bytes::Bytes;
use futures_util::StreamExt as _;
use hookmesh_contracts::subjects::{SWEEP_JOB_ENDPOINT, SWEEP_LIST_ENDPOINT};
use hookmesh_contracts::sweep_jobs::{JobListQuery, JobQuery, MAX_PAGE, PipelineJobPage};
use tokio::sync::watch;

use crate::store::{SweepStore, parse_cursor};

fn refuse(code: usize, status: impl Into<String>) -> service::error::Error {
    service::error::Error {
        status: status.into(),
        code,
    }
}

fn unavailable(error: sqlx::Error) -> service::error::Error {
    refuse(503, format!("the sweep database is unavailable: {error}"))
}

async fn job(store: &SweepStore, request: &[u8]) -> Result<Bytes, service::error::Error> {
    let query: JobQuery = serde_json::from_slice(request)
        .map_err(|e| refuse(400, format!("invalid job query: {e}")))?;
    let job = store
        .job(&query.job_id)
        .await
        .map_err(unavailable)?
        .filter(|job| job.tenant == query.tenant_id)
        .ok_or_else(|| refuse(404, format!("no job {:?}", query.job_id)))?;
    let results = store.results(&job.id).await.map_err(unavailable)?;
    Ok(serde_json::to_vec(&job.view(Some(results)))
        .expect("jobs serialise")
        .into())
}

async fn list(store: &SweepStore, request: &[u8]) -> Result<Bytes, service::error::Error> {
    let query: JobListQuery = serde_json::from_slice(request)
        .map_err(|e| refuse(400, format!("invalid list query: {e}")))?;
    if !(1..=MAX_PAGE).contains(&query.limit) {
        return Err(refuse(400, format!("limit: must be 1-{MAX_PAGE}")));
    }
    let after = match &query.cursor {
        None => None,
        Some(cursor) => Some(
            parse_cursor(cursor)
                .ok_or_else(|| refuse(400, "cursor: not a cursor this API gave"))?,
        ),
    };
    let (jobs, next_cursor) = store
        .list(&query.tenant_id, query.status, query.limit, after)
        .await
        .map_err(unavailable)?;
    let page = PipelineJobPage {
        jobs: jobs.into_iter().map(|job| job.view(None)).collect(),
        next_cursor,
    };
    Ok(serde_json::to_vec(&page).expect("pages serialise").into())
}

/// Serves the read API until shutdown.
pub async fn serve(
    client: async_nats::Client,
    store: SweepStore,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), async_nats::Error> {
    let service = client
        .service_builder()
        .description("Trading sweep jobs and their results (seeds 000, 003)")
        .start("hookmesh-sweeps", env!("CARGO_PKG_VERSION"))
        .await?;
    let mut job_requests = service.endpoint(SWEEP_JOB_ENDPOINT).await?;
    let mut list_requests = service.endpoint(SWEEP_LIST_ENDPOINT).await?;
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
            Some(request) = job_requests.next() => {
                let store = store.clone();
                tokio::spawn(async move {
                    let answer = job(&store, &request.message.payload).await;
                    let _ = request.respond(answer).await;
                });
            }
            Some(request) = list_requests.next() => {
                let store = store.clone();
                tokio::spawn(async move {
                    let answer = list(&store, &request.message.payload).await;
                    let _ = request.respond(answer).await;
                });
            }
            else => break,
        }
    }
    let _ = service.stop().await;
    Ok(())
}
