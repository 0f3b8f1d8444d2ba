//! Seed 002's reads: a program's daily CSR metrics and a participant's
//! journeys, answered by the csr-consumer and scoped to the caller's tenant.

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse as _, Response};
use hookmesh_contracts::csr::{JourneyQuery, JourneyReport, MetricsQuery};
use hookmesh_contracts::subjects::{CSR_JOURNEY_ENDPOINT, CSR_METRICS_ENDPOINT};
use hookmesh_contracts::{TenantId, ValidationErrors};
use time::{Date, Duration, OffsetDateTime};

use super::{PathId, json_answer, query_value};
use crate::Gateway;
use crate::error::Rejection;
use crate::trace::TraceContext;

/// Days shown when `from` is not given.
const DEFAULT_DAYS: i64 = 30;

fn parse_day(text: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format).ok()
}

/// The metrics query that `?program=&from=&to=` asks (`to` defaults to
/// today, `from` to 29 days before `to`; days are UTC).
pub(crate) fn metrics_query(
    tenant: TenantId,
    query: Option<&str>,
) -> Result<MetricsQuery, Rejection> {
    let mut errors = ValidationErrors::new();
    let program = query_value(query, "program")?.filter(|p| !p.is_empty());
    if program.is_none() {
        errors.push("program", "is required");
    }
    let day = |name: &str, errors: &mut ValidationErrors| -> Result<Option<Date>, Rejection> {
        let Some(text) = query_value(query, name)?.filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        let parsed = parse_day(&text);
        if parsed.is_none() {
            errors.push(name, format!("must be a YYYY-MM-DD day, not {text:?}"));
        }
        Ok(parsed)
    };
    let to = day("to", &mut errors)?.unwrap_or_else(|| OffsetDateTime::now_utc().date());
    let from = day("from", &mut errors)?.unwrap_or(to - Duration::days(DEFAULT_DAYS - 1));
    if from > to {
        errors.push("from", "must not be after to");
    }
    let (Some(program), true) = (program, errors.is_empty()) else {
        return Err(Rejection::Invalid(errors));
    };
    Ok(MetricsQuery {
        tenant_id: tenant,
        program_id: program,
        from: from.to_string(),
        to: to.to_string(),
    })
}

/// `GET /api/csr/metrics?program=&from=&to=`: daily metrics of one program.
pub(super) async fn metrics(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let tenant = gateway.api_tenant(&headers)?;
    let request = metrics_query(tenant, query.as_deref())?;
    let answer = gateway
        .ask("CSR", CSR_METRICS_ENDPOINT, &request, &trace)
        .await?;
    Ok(json_answer(answer))
}

/// `GET /api/csr/participants/{id}/journey`: the participant's journey in
/// each program, with the steps that led there.
pub(super) async fn journey(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    PathId(participant): PathId,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    let tenant = gateway.api_tenant(&headers)?;
    let report = journey_of(&gateway, tenant, participant, &trace).await?;
    Ok(axum::Json(report).into_response())
}

/// A participant's journeys; an unknown participant is 404.
pub(crate) async fn journey_of(
    gateway: &Gateway,
    tenant: TenantId,
    participant: String,
    trace: &TraceContext,
) -> Result<JourneyReport, Rejection> {
    let request = JourneyQuery {
        tenant_id: tenant,
        participant_id: participant,
    };
    let report: JourneyReport = gateway
        .ask_for("CSR", CSR_JOURNEY_ENDPOINT, &request, trace)
        .await?;
    if report.programs.is_empty() {
        return Err(Rejection::NotFound(format!(
            "no journey for participant {:?}",
            request.participant_id
        )));
    }
    Ok(report)
}
