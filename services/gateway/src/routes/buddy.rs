//! Seed 002: buddy-system events for the CSR platform.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use hookmesh_contracts::buddy::BuddyWebhookEvent;
use hookmesh_contracts::subjects;
use hookmesh_contracts::validation::parse_json;
use serde::Serialize;

use super::{accepted, delivery_header, read_json_body};
use crate::Gateway;
use crate::error::Rejection;
use crate::publish::OutgoingEvent;
use crate::source::Source;
use crate::trace::TraceContext;
use crate::verify::verify_buddy;

const SOURCE: &str = "/webhooks/buddy-events";

#[derive(Serialize)]
struct BuddyAccepted {
    acknowledged: bool,
    #[serde(rename = "eventId")]
    event_id: String,
    duplicate: bool,
}

/// `POST /webhooks/buddy-events`: 002's envelope, signed, → `buddy.<entity>.<action>`.
/// `X-Webhook-Id` is the idempotency key.
pub(super) async fn receive(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    let body = read_json_body(gateway.config.max_body_bytes, &headers, body).await?;
    gateway.authenticated(
        Source::Buddy,
        verify_buddy(
            gateway.config.secrets.buddy.as_ref(),
            &headers,
            &body,
            gateway.clock(),
        ),
    )?;
    let webhook_id = delivery_header(&headers, "X-Webhook-Id")?;
    gateway.admit(Source::Buddy.rate_family())?;
    let event = BuddyWebhookEvent::parse(&parse_json(&body).map_err(Rejection::Malformed)?)
        .map_err(Rejection::Invalid)?;
    let envelope = event
        .payload
        .envelope_json(&event.id, SOURCE, event.timestamp);
    let ack = gateway
        .publish_one(
            Source::Buddy,
            OutgoingEvent {
                subject: subjects::buddy(event.payload.event_type()).to_owned(),
                message_id: format!("buddy:{webhook_id}"),
                payload: envelope.into(),
                traceparent: None,
            },
            &trace,
        )
        .await?;
    Ok(accepted(BuddyAccepted {
        acknowledged: true,
        event_id: event.id,
        duplicate: ack.duplicate,
    }))
}
