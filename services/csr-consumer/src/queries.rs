//! The CSR read API, on the NATS services API (`nats micro ls` lists it as
//! `hookmesh-csr`): `hookmesh.csr.metrics` and `hookmesh.csr.journey`. The
//! gateway answers `GET /api/csr/…` from them. Every query names its tenant
//! and sees only that tenant's rows.

use hookmesh_contracts::csr::{JourneyQuery, JourneyReport, MetricsQuery, MetricsReport};
use hookmesh_contracts::subjects::{CSR_JOURNEY_ENDPOINT, CSR_METRICS_ENDPOINT};
use hookmesh_runtime::reads::{ReadApi, Refusal, endpoint};

use crate::report::{daily_metrics, parse_day, window_start};
use crate::store::Store;

/// Longest span one metrics query may cover.
pub const MAX_DAYS: i64 = 366;

fn unavailable(error: sqlx::Error) -> Refusal {
    Refusal::unavailable("CSR database", error)
}

async fn metrics(store: Store, query: MetricsQuery) -> Result<MetricsReport, Refusal> {
    let from = parse_day(&query.from).ok_or_else(|| {
        Refusal::invalid(format!("from: {:?} is not a YYYY-MM-DD day", query.from))
    })?;
    let to = parse_day(&query.to)
        .ok_or_else(|| Refusal::invalid(format!("to: {:?} is not a YYYY-MM-DD day", query.to)))?;
    if to < from {
        return Err(Refusal::invalid("to: must not be before from"));
    }
    if (to - from).whole_days() >= MAX_DAYS {
        return Err(Refusal::invalid(format!(
            "a query covers at most {MAX_DAYS} days"
        )));
    }
    let facts = store
        .program_facts(&query.tenant_id, &query.program_id, window_start(from), to)
        .await
        .map_err(unavailable)?;
    Ok(MetricsReport {
        days: daily_metrics(&facts, from, to),
        tenant_id: query.tenant_id,
        program_id: query.program_id,
        from: query.from,
        to: query.to,
    })
}

async fn journey(store: Store, query: JourneyQuery) -> Result<JourneyReport, Refusal> {
    let programs = store
        .journeys(&query.tenant_id, &query.participant_id)
        .await
        .map_err(unavailable)?;
    Ok(JourneyReport {
        tenant_id: query.tenant_id,
        participant_id: query.participant_id,
        programs,
    })
}

/// The read API over `store`.
pub fn api(store: &Store) -> ReadApi {
    let (for_metrics, for_journey) = (store.clone(), store.clone());
    ReadApi {
        name: "hookmesh-csr",
        description: "CSR metrics per program and day, and participant journeys (seed 002)",
        endpoints: vec![
            endpoint(CSR_METRICS_ENDPOINT, move |query| {
                metrics(for_metrics.clone(), query)
            }),
            endpoint(CSR_JOURNEY_ENDPOINT, move |query| {
                journey(for_journey.clone(), query)
            }),
        ],
    }
}
