//! The campaigns read API, on the NATS services API (`nats micro ls` lists
//! it as `hookmesh-campaigns`): `hookmesh.delivery.campaign` and
//! `hookmesh.delivery.campaigns`. The gateway answers `GET /api/campaigns…`
//! from them. Every query names its tenant and sees only its campaigns.

use hookmesh_contracts::delivery::{
    CampaignListQuery, CampaignPage, CampaignQuery, CampaignView, MAX_CAMPAIGN_PAGE,
};
use hookmesh_contracts::subjects::{CAMPAIGN_ENDPOINT, CAMPAIGN_LIST_ENDPOINT};
use hookmesh_runtime::reads::{ReadApi, Refusal, endpoint};

use crate::delivery::store::{DeliveryStore, parse_campaign_cursor};

fn unavailable(error: sqlx::Error) -> Refusal {
    Refusal::unavailable("delivery database", error)
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
    let after = match &query.cursor {
        None => None,
        Some(cursor) => Some(
            parse_campaign_cursor(cursor)
                .ok_or_else(|| Refusal::invalid("cursor: not a cursor this API gave"))?,
        ),
    };
    let (campaigns, next_cursor) = store
        .campaign_page(&query.tenant_id, query.limit, after)
        .await
        .map_err(unavailable)?;
    Ok(CampaignPage {
        campaigns,
        next_cursor,
    })
}

/// The read API over `store`.
pub fn api(store: &DeliveryStore) -> ReadApi {
    let (for_one, for_list) = (store.clone(), store.clone());
    ReadApi {
        name: "hookmesh-campaigns",
        description: "Delivery campaigns with their counters and refused registrations (seed 004)",
        endpoints: vec![
            endpoint(CAMPAIGN_ENDPOINT, move |query| {
                campaign(for_one.clone(), query)
            }),
            endpoint(CAMPAIGN_LIST_ENDPOINT, move |query| {
                campaigns(for_list.clone(), query)
            }),
        ],
    }
}
