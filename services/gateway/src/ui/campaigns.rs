//! Seed 004 in the dashboard: a tenant's delivery campaigns with their
//! counters and completion, and one campaign with the registrations that
//! were refused, as the batch-processor answers them.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use hookmesh_contracts::delivery::{CampaignListQuery, CampaignPage, CampaignQuery, CampaignView};
use hookmesh_contracts::subjects::{CAMPAIGN_ENDPOINT, CAMPAIGN_LIST_ENDPOINT};

use super::{Layout, UiError, Viewer, field, form_pairs, html, query_escape, utc};
use crate::Gateway;
use crate::trace::TraceContext;

/// Campaigns per page of the list.
const PAGE: u32 = 20;

pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/ui/campaigns", get(list))
        .route("/ui/campaigns/{id}", get(detail))
}

/// A campaign as the pages show it.
struct CampaignRow {
    id: String,
    link: String,
    size: u64,
    registered: u64,
    settled: u64,
    /// Settled of size, in percent, for the progress bar.
    percent: u64,
    delivered: u64,
    opened: u64,
    clicked: u64,
    bounced: u64,
    complained: u64,
    failed: u64,
    created_at: String,
    completed_at: Option<String>,
}

fn row(campaign: &CampaignView) -> CampaignRow {
    CampaignRow {
        id: campaign.campaign_id.clone(),
        link: format!("/ui/campaigns/{}", query_escape(&campaign.campaign_id)),
        size: campaign.size,
        registered: campaign.registered,
        settled: campaign.settled,
        percent: (campaign.settled * 100)
            .checked_div(campaign.size)
            .unwrap_or(0)
            .min(100),
        delivered: campaign.counts.delivered,
        opened: campaign.counts.opened,
        clicked: campaign.counts.clicked,
        bounced: campaign.counts.bounced,
        complained: campaign.counts.complained,
        failed: campaign.counts.failed,
        created_at: utc(&campaign.created_at),
        completed_at: campaign.completed_at.as_ref().map(utc),
    }
}

#[derive(Template)]
#[template(path = "campaigns.html")]
struct CampaignsPage {
    layout: Layout,
    campaigns: Vec<CampaignRow>,
    next_page: Option<String>,
    first_page: bool,
}

async fn list(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant()?.clone();
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    let cursor = field(&pairs, "cursor").map(str::to_owned);
    let request = CampaignListQuery {
        tenant_id: tenant,
        limit: PAGE,
        cursor: cursor.clone(),
    };
    let page: CampaignPage = gateway
        .ask_for("campaigns", CAMPAIGN_LIST_ENDPOINT, &request, &trace)
        .await?;
    Ok(html(&CampaignsPage {
        layout: viewer.layout("Campaigns", "campaigns"),
        campaigns: page.campaigns.iter().map(row).collect(),
        next_page: page
            .next_cursor
            .map(|next| format!("/ui/campaigns?cursor={}", query_escape(&next))),
        first_page: cursor.is_some(),
    }))
}

struct RefusedRow {
    id: String,
    reason: String,
    recipients: u64,
    at: String,
}

#[derive(Template)]
#[template(path = "campaign.html")]
struct CampaignPageView {
    layout: Layout,
    campaign: CampaignRow,
    refused: Vec<RefusedRow>,
}

async fn detail(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant()?.clone();
    let request = CampaignQuery {
        tenant_id: tenant,
        campaign_id: id.clone(),
    };
    let campaign: CampaignView = UiError::unless_missing(
        gateway
            .ask_for("campaigns", CAMPAIGN_ENDPOINT, &request, &trace)
            .await,
        || format!("There is no campaign {id:?} of yours."),
    )?;
    Ok(html(&CampaignPageView {
        layout: viewer.layout(format!("Campaign {id}"), "campaigns"),
        campaign: row(&campaign),
        refused: campaign
            .rejected_registrations
            .iter()
            .flatten()
            .map(|refused| RefusedRow {
                id: refused.registration_id.clone(),
                reason: refused.reason.clone(),
                recipients: refused.recipients,
                at: utc(&refused.rejected_at),
            })
            .collect(),
    }))
}
