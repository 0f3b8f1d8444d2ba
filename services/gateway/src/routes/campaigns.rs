//! Seed 004's recipients: the sending application registers each
//! campaign's messages, so that delivery events can be counted toward it.

use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use hookmesh_contracts::delivery::{
    CampaignListQuery, CampaignQuery, CampaignRegistration, MAX_CAMPAIGN_PAGE,
};
use hookmesh_contracts::envelope::{Envelope, EventData as _};
use hookmesh_contracts::subjects::{
    CAMPAIGN_ENDPOINT, CAMPAIGN_LIST_ENDPOINT, CAMPAIGN_REGISTRATION,
};
use hookmesh_contracts::validation::parse_json;
use hookmesh_contracts::{Timestamp, ValidationErrors};
use ring::digest;
use serde::Serialize;

use super::{PathId, accepted, json_answer, page_of, read_json_body};
use crate::Gateway;
use crate::error::Rejection;
use crate::publish::OutgoingEvent;
use crate::source::Source;
use crate::trace::TraceContext;
use hookmesh_contracts::hex;

#[derive(Serialize)]
struct RegistrationAccepted {
    campaign_id: String,
    /// Recipients in this request.
    recipients: usize,
    /// The campaign's size.
    size: u64,
    duplicate: bool,
}

/// `POST /api/campaigns` → `delivery.campaign.registration`. The same body
/// again is the same registration (its `Nats-Msg-Id` is the body's digest),
/// and applying it twice changes nothing.
pub(super) async fn register(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    let body = read_json_body(gateway.config.max_body_bytes, &headers, body).await?;
    let tenant = gateway.api_tenant(&headers)?;
    let registration =
        CampaignRegistration::parse(&parse_json(&body).map_err(Rejection::Malformed)?)
            .map_err(Rejection::Invalid)?;
    let mut errors = ValidationErrors::new();
    for (index, recipient) in registration.recipients.iter().enumerate() {
        if !gateway.config.providers.contains(&recipient.provider) {
            errors.push(
                format!("recipients[{index}].provider"),
                format!(
                    "{:?} is not a configured provider (configured: {})",
                    recipient.provider,
                    gateway.config.providers.join(", ")
                ),
            );
        }
    }
    if !errors.is_empty() {
        return Err(Rejection::Invalid(errors));
    }
    let digest = digest::digest(&digest::SHA256, &body);
    let id = format!(
        "{tenant}:{}:{}",
        registration.campaign_id,
        hex::encode(&digest.as_ref()[..12])
    );
    let (campaign_id, recipients, size) = (
        registration.campaign_id.clone(),
        registration.recipients.len(),
        registration.campaign_size(),
    );
    let envelope = Envelope::new(
        id.clone(),
        "/api/campaigns",
        Timestamp::now(),
        tenant,
        Some(campaign_id.clone()),
        registration,
    );
    let ack = gateway
        .publish_one(
            Source::Campaigns,
            OutgoingEvent {
                subject: CAMPAIGN_REGISTRATION.to_owned(),
                message_id: format!("{CAMPAIGN_REGISTRATION}:{id}"),
                payload: envelope.to_json().into(),
                traceparent: None,
            },
            &trace,
        )
        .await?;
    Ok(accepted(RegistrationAccepted {
        campaign_id,
        recipients,
        size,
        duplicate: ack.duplicate,
    }))
}

/// Campaigns per page when `limit` is not given.
const DEFAULT_PAGE: u32 = 20;

/// `GET /api/campaigns/{id}`: the campaign's size, registered recipients,
/// counters, completion and refused registrations, from the
/// batch-processor; another tenant's campaign is 404.
pub(super) async fn campaign(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    PathId(campaign_id): PathId,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let tenant = gateway.api_tenant(&headers)?;
    let request = CampaignQuery {
        tenant_id: tenant,
        campaign_id,
    };
    let answer = gateway
        .ask("campaigns", CAMPAIGN_ENDPOINT, &request, &trace)
        .await?;
    Ok(json_answer(answer))
}

/// `GET /api/campaigns?limit=&cursor=`: the tenant's campaigns, newest
/// first; `next_cursor` fetches the next page.
pub(super) async fn list(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let tenant = gateway.api_tenant(&headers)?;
    let mut errors = ValidationErrors::new();
    let (limit, cursor) = page_of(
        query.as_deref(),
        DEFAULT_PAGE,
        MAX_CAMPAIGN_PAGE,
        &mut errors,
    )?;
    if !errors.is_empty() {
        return Err(Rejection::Invalid(errors));
    }
    let request = CampaignListQuery {
        tenant_id: tenant,
        limit,
        cursor,
    };
    let answer = gateway
        .ask("campaigns", CAMPAIGN_LIST_ENDPOINT, &request, &trace)
        .await?;
    Ok(json_answer(answer))
}
