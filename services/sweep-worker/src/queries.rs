//! The sweep read API, on the NATS services API (`nats micro ls` lists it
//! as `hookmesh-sweeps`): `hookmesh.sweeps.job` and `hookmesh.sweeps.list`.
//! The gateway answers `GET /api/pipelines/…` from them. Every query names
//! its tenant and sees only that tenant's jobs.

use hookmesh_contracts::subjects::{SWEEP_JOB_ENDPOINT, SWEEP_LIST_ENDPOINT};
use hookmesh_contracts::sweep_jobs::{
    JobListQuery, JobQuery, MAX_PAGE, PipelineJob, PipelineJobPage,
};
use hookmesh_runtime::reads::{ReadApi, Refusal, endpoint};

use crate::store::{SweepStore, parse_cursor};

fn unavailable(error: sqlx::Error) -> Refusal {
    Refusal::unavailable("sweep database", error)
}

async fn job(store: SweepStore, query: JobQuery) -> Result<PipelineJob, Refusal> {
    let job = store
        .job(query.job_id.as_str())
        .await
        .map_err(unavailable)?
        .filter(|job| job.tenant == query.tenant_id)
        .ok_or_else(|| Refusal::not_found(format!("no job {:?}", query.job_id)))?;
    let results = store.results(&job.id).await.map_err(unavailable)?;
    Ok(job.view(Some(results)))
}

async fn list(store: SweepStore, query: JobListQuery) -> Result<PipelineJobPage, Refusal> {
    if !(1..=MAX_PAGE).contains(&query.limit) {
        return Err(Refusal::invalid(format!("limit: must be 1-{MAX_PAGE}")));
    }
    let after = match &query.cursor {
        None => None,
        Some(cursor) => Some(
            parse_cursor(cursor)
                .ok_or_else(|| Refusal::invalid("cursor: not a cursor this API gave"))?,
        ),
    };
    let (jobs, next_cursor) = store
        .list(
            &query.tenant_id,
            query.status,
            query.ticker.as_deref(),
            query.limit,
            after,
        )
        .await
        .map_err(unavailable)?;
    Ok(PipelineJobPage {
        jobs: jobs.into_iter().map(|job| job.view(None)).collect(),
        next_cursor,
    })
}

/// The read API over `store`.
pub fn api(store: &SweepStore) -> ReadApi {
    let (for_job, for_list) = (store.clone(), store.clone());
    ReadApi {
        name: "hookmesh-sweeps",
        description: "Trading sweep jobs and their results (seeds 000, 003)",
        endpoints: vec![
            endpoint(SWEEP_JOB_ENDPOINT, move |query| job(for_job.clone(), query)),
            endpoint(SWEEP_LIST_ENDPOINT, move |query| {
                list(for_list.clone(), query)
            }),
        ],
    }
}
