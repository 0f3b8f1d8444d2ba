//! Seed 001: CI/CD pipeline events from GitHub Actions, GitLab CI, Jenkins
//! and CircleCI, each verified its own way and normalised to one schema.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hookmesh_contracts::TenantId;
use hookmesh_contracts::ci::CiPlatform;
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects;
use hookmesh_contracts::validation::{StrEnum, parse_json};
use serde::Serialize;

use super::{PathId, accepted, read_json_body};
use crate::Gateway;
use crate::error::Rejection;
use crate::normalize::{Normalized, normalize};
use crate::publish::OutgoingEvent;
use crate::source::Source;
use crate::trace::TraceContext;
use crate::verify::{verify_circleci, verify_github, verify_gitlab, verify_jenkins};

#[derive(Serialize)]
struct CiAccepted {
    published: bool,
    event_id: String,
    event_type: &'static str,
    subject: String,
    duplicate: bool,
}

#[derive(Serialize)]
struct CiIgnored {
    published: bool,
    reason: String,
}

/// `POST /webhooks/ci/{platform}` → `ci.pipeline.<platform>.<started|failed|completed>`.
pub(super) async fn receive(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    PathId(platform): PathId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    let platform = CiPlatform::from_wire(&platform).ok_or_else(|| {
        Rejection::NotFound(format!(
            "unknown CI platform {platform:?} (known: github, gitlab, jenkins, circleci)"
        ))
    })?;
    let body = read_json_body(gateway.config.max_body_bytes, &headers, body).await?;
    let secrets = &gateway.config.secrets;
    let source = Source::Ci(platform);
    let verified = match platform {
        CiPlatform::Github => verify_github(secrets.github.as_ref(), &headers, &body),
        CiPlatform::Gitlab => verify_gitlab(
            secrets.gitlab.as_ref(),
            secrets.gitlab_signing.as_ref(),
            &headers,
            &body,
            gateway.clock(),
        ),
        CiPlatform::Circleci => verify_circleci(secrets.circleci.as_ref(), &headers, &body),
        CiPlatform::Jenkins => verify_jenkins(secrets.jenkins.as_ref(), &headers),
    };
    gateway.authenticated(source, verified)?;
    gateway.admit(source.rate_family())?;
    let payload = parse_json(&body).map_err(Rejection::Malformed)?;
    let event = match normalize(platform, &headers, &payload).map_err(Rejection::Invalid)? {
        Normalized::Event(event) => event,
        Normalized::Ignored(reason) => {
            tracing::info!(platform = source.label(), %reason, correlation_id = %trace.correlation_id, "CI delivery acknowledged without publishing.");
            return Ok((
                StatusCode::OK,
                Json(CiIgnored {
                    published: false,
                    reason,
                }),
            )
                .into_response());
        }
    };
    let subject = subjects::ci_pipeline(platform, event.event_type);
    let event_id = event.id.clone();
    let event_type = event.event_type.as_str();
    let envelope = Envelope::new(
        event_id.clone(),
        format!("/webhooks/ci/{}", source.label()),
        event.timestamp,
        TenantId::default_tenant(),
        Some(event.repository.clone()),
        *event,
    );
    let ack = gateway
        .publish_one(
            source,
            OutgoingEvent {
                subject: subject.clone(),
                message_id: format!("ci.{}:{event_id}", source.label()),
                payload: envelope.to_json().into(),
                traceparent: None,
            },
            &trace,
        )
        .await?;
    Ok(accepted(CiAccepted {
        published: true,
        event_id,
        event_type,
        subject,
        duplicate: ack.duplicate,
    }))
}
