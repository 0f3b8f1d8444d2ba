//! Seed 004: delivery events from message providers, one or many per
//! request, signed with Standard Webhooks.

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use hookmesh_contracts::TenantId;
use hookmesh_contracts::delivery::{DeliveryEvent, DeliveryWebhookBody};
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects;
use hookmesh_contracts::validation::parse_json;
use serde::Serialize;

use super::{PathId, accepted, delivery_header, read_json_body};
use crate::Gateway;
use crate::error::Rejection;
use crate::publish::OutgoingEvent;
use crate::source::Source;
use crate::trace::TraceContext;
use crate::verify::verify_provider;

#[derive(Serialize)]
struct ProvidersAccepted {
    /// Events in the request, all now stored.
    accepted: usize,
    /// How many of them JetStream already had.
    duplicates: usize,
    /// The whole delivery was a redelivery.
    duplicate: bool,
    event_ids: Vec<String>,
}

/// `POST /webhooks/providers/{provider}` → `providers.<provider>.<event_type>`,
/// one envelope per event. The event id is `webhook-id` (suffixed `:<index>`
/// for arrays), stable across the provider's retries.
pub(super) async fn receive(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    PathId(provider): PathId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    if !gateway.config.providers.contains(&provider) {
        return Err(Rejection::NotFound(format!(
            "unknown provider {provider:?} (configured: {})",
            gateway.config.providers.join(", ")
        )));
    }
    let body = read_json_body(gateway.config.max_body_bytes, &headers, body).await?;
    gateway.authenticated(
        Source::Providers,
        verify_provider(
            gateway.config.secrets.providers.as_ref(),
            &headers,
            &body,
            gateway.clock(),
        ),
    )?;
    let webhook_id = delivery_header(&headers, "webhook-id")?;
    gateway.admit(&format!("{}:{provider}", Source::Providers.rate_family()))?;
    let parsed = DeliveryWebhookBody::parse(&parse_json(&body).map_err(Rejection::Malformed)?)
        .map_err(Rejection::Invalid)?;
    let single = matches!(parsed, DeliveryWebhookBody::One(_));
    let source = format!("/webhooks/providers/{provider}");
    let mut event_ids = Vec::new();
    let events: Vec<OutgoingEvent> = parsed
        .into_events()
        .into_iter()
        .enumerate()
        .map(|(index, delivery)| {
            let event_id = if single {
                webhook_id.clone()
            } else {
                format!("{webhook_id}:{index}")
            };
            let subject = subjects::provider_delivery(&provider, delivery.event_type);
            let envelope = Envelope::new(
                event_id.clone(),
                source.clone(),
                delivery.timestamp,
                TenantId::default_tenant(),
                Some(delivery.message_id.clone()),
                DeliveryEvent {
                    provider: provider.clone(),
                    delivery,
                },
            );
            let message_id = format!("providers.{provider}:{event_id}");
            event_ids.push(event_id);
            OutgoingEvent {
                subject,
                message_id,
                payload: envelope.to_json().into(),
                traceparent: None,
            }
        })
        .collect();
    let acks = gateway.publish(Source::Providers, events, &trace).await?;
    let duplicates = acks.iter().filter(|ack| ack.duplicate).count();
    Ok(accepted(ProvidersAccepted {
        accepted: acks.len(),
        duplicates,
        duplicate: duplicates == acks.len(),
        event_ids,
    }))
}
