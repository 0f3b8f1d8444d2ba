//! The CSR read API, on the NATS services API (`nats micro ls` lists it as
//! `hookmesh-csr`): `hookmesh.csr.metrics` and `hookmesh.csr.journey`. The
//! gateway answers `GET /api/csr/…` from them. Every query names its tenant
//! and sees only that tenant's rows. Replicas share the endpoints'
//! queue group.

use async_nats::service::{self, ServiceExt as _};
use bytes::Bytes;
use futures_util::StreamExt as _;
use hookmesh_contracts::csr::{JourneyQuery, JourneyReport, MetricsQuery, MetricsReport};
use hookmesh_contracts::subjects::{CSR_JOURNEY_ENDPOINT, CSR_METRICS_ENDPOINT};
use tokio::sync::watch;

use crate::report::{daily_metrics, parse_day, window_start};
use crate::store::Store;

/// Longest span one metrics query may cover.
pub const MAX_DAYS: i64 = 366;

fn refuse(code: usize, status: impl Into<String>) -> service::error::Error {
    service::error::Error {
        status: status.into(),
        code,
    }
}

async fn metrics(store: &Store, request: &[u8]) -> Result<Bytes, service::error::Error> {
    let query: MetricsQuery = serde_json::from_slice(request)
        .map_err(|e| refuse(400, format!("invalid metrics query: {e}")))?;
    let from = parse_day(&query.from).ok_or_else(|| {
        refuse(
            400,
            format!("from: {:?} is not a YYYY-MM-DD day", query.from),
        )
    })?;
    let to = parse_day(&query.to)
        .ok_or_else(|| refuse(400, format!("to: {:?} is not a YYYY-MM-DD day", query.to)))?;
    if to < from {
        return Err(refuse(400, "to: must not be before from"));
    }
    if (to - from).whole_days() >= MAX_DAYS {
        return Err(refuse(
            400,
            format!("a query covers at most {MAX_DAYS} days"),
        ));
    }
    let facts = store
        .program_facts(&query.tenant_id, &query.program_id, window_start(from), to)
        .await
        .map_err(|e| refuse(503, format!("the CSR database is unavailable: {e}")))?;
    let report = MetricsReport {
        days: daily_metrics(&facts, from, to),
        tenant_id: query.tenant_id,
        program_id: query.program_id,
        from: query.from,
        to: query.to,
    };
    Ok(serde_json::to_vec(&report)
        .expect("reports serialise")
        .into())
}

async fn journey(store: &Store, request: &[u8]) -> Result<Bytes, service::error::Error> {
    let query: JourneyQuery = serde_json::from_slice(request)
        .map_err(|e| refuse(400, format!("invalid journey query: {e}")))?;
    let programs = store
        .journeys(&query.tenant_id, &query.participant_id)
        .await
        .map_err(|e| refuse(503, format!("the CSR database is unavailable: {e}")))?;
    let report = JourneyReport {
        tenant_id: query.tenant_id,
        participant_id: query.participant_id,
        programs,
    };
    Ok(serde_json::to_vec(&report)
        .expect("reports serialise")
        .into())
}

/// Serves the read API until shutdown.
pub async fn serve(
    client: async_nats::Client,
    store: Store,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), async_nats::Error> {
    let service = client
        .service_builder()
        .description("CSR metrics per program and day, and participant journeys (seed 002)")
        .start("hookmesh-csr", env!("CARGO_PKG_VERSION"))
        .await?;
    let mut metrics_requests = service.endpoint(CSR_METRICS_ENDPOINT).await?;
    let mut journey_requests = service.endpoint(CSR_JOURNEY_ENDPOINT).await?;
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    break;
                }
            }
            Some(request) = metrics_requests.next() => {
                let store = store.clone();
                tokio::spawn(async move {
                    let answer = metrics(&store, &request.message.payload).await;
                    let _ = request.respond(answer).await;
                });
            }
            Some(request) = journey_requests.next() => {
                let store = store.clone();
                tokio::spawn(async move {
                    let answer = journey(&store, &request.message.payload).await;
                    let _ = request.respond(answer).await;
                });
            }
            else => break,
        }
    }
    let _ = service.stop().await;
    Ok(())
}
