//! The batch-processor's read API, on the NATS services API (`nats micro
//! ls` lists it as `hookmesh-batch`): `hookmesh.delivery.campaign` and
//! `hookmesh.delivery.campaigns`, from which the gateway answers
//! `GET /api/campaigns…` (every query names its tenant and sees only its
//! campaigns), and `hookmesh.ci.failures`, from which it answers the
//! operators' `GET /api/admin/ci/failures`.

use hookmesh_contracts::Timestamp;
use hookmesh_contracts::ci::{
    CiFailureListQuery, CiFailurePage, MAX_CI_FAILURE_DAYS, MAX_CI_FAILURE_PAGE,
};
use hookmesh_contracts::delivery::{
    CampaignListQuery, CampaignPage, CampaignQuery, CampaignView, MAX_CAMPAIGN_PAGE,
};
use hookmesh_contracts::subjects::{
    CAMPAIGN_ENDPOINT, CAMPAIGN_LIST_ENDPOINT, CI_FAILURES_ENDPOINT,
};
use hookmesh_runtime::db::Keyset;
use hookmesh_runtime::reads::{ReadApi, Refusal, endpoint};

use crate::ci::failures::FailureFilter;
use crate::ci::store::CiStore;
use crate::delivery::store::DeliveryStore;

fn unavailable(error: sqlx::Error) -> Refusal {
    Refusal::unavailable("delivery database", error)
}

fn after(cursor: Option<&str>) -> Result<Option<Keyset>, Refusal> {
    cursor
        .map(|cursor| {
            Keyset::parse(cursor)
                .ok_or_else(|| Refusal::invalid("cursor: not a cursor this API gave"))
        })
        .transpose()
}

async fn campaign(store: DeliveryStore, query: CampaignQuery) -> Result<CampaignView, Refusal> {
    store
        .campaign_view(&query.tenant_id, &query.campaign_id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| Refusal::not_found(format!("no campaign {:?}", query.campaign_id)))
}

async fn campaigns(
    store: DeliveryStore,
    query: CampaignListQuery,
) -> Result<CampaignPage, Refusal> {
    if !(1..=MAX_CAMPAIGN_PAGE).contains(&query.limit) {
        return Err(Refusal::invalid(format!(
            "limit: must be 1-{MAX_CAMPAIGN_PAGE}"
        )));
    }
    let (campaigns, next_cursor) = store
        .campaign_page(
            &query.tenant_id,
            query.limit,
            after(query.cursor.as_deref())?,
        )
        .await
        .map_err(unavailable)?;
    Ok(CampaignPage {
        campaigns,
        next_cursor,
    })
}

async fn ci_failures(store: CiStore, query: CiFailureListQuery) -> Result<CiFailurePage, Refusal> {
    if !(1..=MAX_CI_FAILURE_PAGE).contains(&query.limit) {
        return Err(Refusal::invalid(format!(
            "limit: must be 1-{MAX_CI_FAILURE_PAGE}"
        )));
    }
    if !(1..=MAX_CI_FAILURE_DAYS).contains(&query.days) {
        return Err(Refusal::invalid(format!(
            "days: must be 1-{MAX_CI_FAILURE_DAYS}"
        )));
    }
    let filter = FailureFilter {
        platform: query.platform,
        repository: query.repository,
    };
    let (failures, next_cursor) = store
        .failure_page(&filter, query.limit, after(query.cursor.as_deref())?)
        .await
        .map_err(unavailable)?;
    let per_platform = store
        .failure_counts(Timestamp::now(), query.days)
        .await
        .map_err(unavailable)?;
    Ok(CiFailurePage {
        failures,
        next_cursor,
        per_platform,
    })
}

/// The read API over the stores.
pub fn api(store: &DeliveryStore, ci: &CiStore) -> ReadApi {
    let (for_one, for_list, ci) = (store.clone(), store.clone(), ci.clone());
    ReadApi {
        name: "hookmesh-batch",
        description: "Delivery campaigns with their counters and refused registrations (seed 004), \
                      and recent CI failures (seed 001)",
        endpoints: vec![
            endpoint(CAMPAIGN_ENDPOINT, move |query| {
                campaign(for_one.clone(), query)
            }),
            endpoint(CAMPAIGN_LIST_ENDPOINT, move |query| {
                campaigns(for_list.clone(), query)
            }),
            endpoint(CI_FAILURES_ENDPOINT, move |query| {
                ci_failures(ci.clone(), query)
            }),
        ],
    }
}
