//! The admin API, for operators (`HOOKMESH_ADMIN_KEYS`; reads also with
//! `HOOKMESH_ADMIN_READONLY_KEYS`): streams and consumers, dead letters,
//! and their replay. A tenant's API key gets 403 here.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use hookmesh_contracts::ValidationErrors;
use hookmesh_contracts::ci::{
    CiFailureListQuery, CiPlatform, MAX_CI_FAILURE_DAYS, MAX_CI_FAILURE_PAGE,
};
use hookmesh_contracts::subjects::CI_FAILURES_ENDPOINT;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::validation::parse_json;
use serde::{Deserialize, Serialize};

use super::extract::query_value;
use super::{json_answer, page_of, read_json_body};
use crate::Gateway;
use crate::error::Rejection;
use crate::operators::{ReplayOutcome, filter_from_pairs};
use crate::trace::TraceContext;
use crate::ui::form_pairs;
use crate::ui::session::{Identity, Role};
use crate::verify::AuthError;

/// Dead letters listed when `limit` is not given, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

impl Gateway {
    /// The operator whose key the request carries; a tenant key is 403,
    /// and so is a read-only key when `write` is asked.
    fn operator(&self, headers: &HeaderMap, write: bool) -> Result<Identity, Rejection> {
        if self.config.admin_keys.is_empty() && self.config.admin_readonly_keys.is_empty() {
            return Err(Rejection::Unauthorized(AuthError::NotConfigured {
                variable: "HOOKMESH_ADMIN_KEYS",
            }));
        }
        let presented = presented_key(headers)?;
        let identity = Identity::of_key(&self.config, presented.as_bytes()).ok_or(
            Rejection::Unauthorized(AuthError::BadCredentials("admin key")),
        )?;
        match identity.role {
            Role::Tenant => Err(Rejection::Forbidden(
                "the admin API needs an operator key (HOOKMESH_ADMIN_KEYS), not a tenant's".into(),
            )),
            Role::ReadOnlyAdmin if write => Err(Rejection::Forbidden(
                "this operator key is read-only (HOOKMESH_ADMIN_READONLY_KEYS)".into(),
            )),
            _ => Ok(identity),
        }
    }
}

/// The key of `Authorization: Bearer <key>` or `X-API-Key: <key>`.
fn presented_key(headers: &HeaderMap) -> Result<String, Rejection> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let key = match header("Authorization") {
        Some(value) => value
            .strip_prefix("Bearer ")
            .ok_or(AuthError::MalformedHeader {
                header: "Authorization",
                reason: "expected Bearer <key>",
            })?,
        None => {
            header("X-API-Key").ok_or(AuthError::MissingHeader("Authorization or X-API-Key"))?
        }
    };
    Ok(key.trim().to_owned())
}

/// `GET /api/admin/streams`: every stream and consumer, with pending,
/// ack-pending, redelivered, oldest pending time and rates.
pub(super) async fn streams(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    gateway.operator(&headers, false)?;
    Ok(Json(gateway.stream_rows().await?).into_response())
}

#[derive(Serialize)]
struct DeadLetterPage {
    /// How many match the filter.
    count: usize,
    dead_letters: Vec<DeadLetterView>,
}

#[derive(Serialize)]
struct DeadLetterView {
    #[serde(flatten)]
    letter: hookmesh_nats::dead_letters::StoredDeadLetter,
    payload: String,
}

fn limit_of(pairs: &[(String, String)]) -> Result<usize, Rejection> {
    match crate::ui::field(pairs, "limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                Rejection::Invalid(ValidationErrors::single(
                    "limit",
                    format!("must be an integer from 1 to {MAX_LIMIT}"),
                ))
            }),
    }
}

/// `GET /api/admin/dead-letters?subject=&source=&type=&since=&until=&payload=&error=&limit=`:
/// the matching dead letters, newest first, and how many match.
pub(super) async fn dead_letters(
    State(gateway): State<Gateway>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    gateway.operator(&headers, false)?;
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    let filter = filter_from_pairs(&pairs)
        .map_err(|reason| Rejection::Invalid(ValidationErrors::single("query", reason)))?;
    let limit = limit_of(&pairs)?;
    let (count, letters) = gateway.matching_dead_letters(&filter, limit).await?;
    Ok(Json(DeadLetterPage {
        count,
        dead_letters: letters
            .into_iter()
            .map(|letter| DeadLetterView {
                payload: String::from_utf8_lossy(&letter.payload).into_owned(),
                letter,
            })
            .collect(),
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    sequences: Vec<u64>,
}

#[derive(Serialize)]
struct ReplayAnswer {
    replayed: usize,
    failed: usize,
    outcomes: Vec<ReplayOutcome>,
}

/// `POST /api/admin/dead-letters/replay` with `{"sequences": [..]}`: each
/// dead letter back on its original subject, and out of the dead letters.
pub(super) async fn replay(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Rejection> {
    let body = read_json_body(gateway.config.max_body_bytes, &headers, body).await?;
    let operator = gateway.operator(&headers, true)?;
    let request: ReplayRequest =
        serde_json::from_value(parse_json(&body).map_err(Rejection::Malformed)?).map_err(
            |error| Rejection::Invalid(ValidationErrors::single("sequences", error.to_string())),
        )?;
    tracing::info!(operator = %operator.name, count = request.sequences.len(), "Replaying dead letters.");
    let outcomes = gateway.replay_dead_letters(&request.sequences).await;
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    Ok(Json(ReplayAnswer {
        replayed: outcomes.len() - failed,
        failed,
        outcomes,
    })
    .into_response())
}

/// Failures a page lists when `limit` is not given.
const DEFAULT_CI_FAILURES: u32 = 50;
/// Days of per-platform counts when `days` is not given.
const DEFAULT_CI_DAYS: u32 = 14;

/// The query of `hookmesh.ci.failures` that `?platform=&repository=&limit=&cursor=&days=` asks.
pub(crate) fn ci_failure_query(query: Option<&str>) -> Result<CiFailureListQuery, Rejection> {
    let mut errors = ValidationErrors::new();
    let (limit, cursor) = page_of(query, DEFAULT_CI_FAILURES, MAX_CI_FAILURE_PAGE, &mut errors)?;
    let platform = match query_value(query, "platform")?.filter(|p| !p.is_empty()) {
        None => None,
        Some(text) => {
            let platform = CiPlatform::from_wire(&text);
            if platform.is_none() {
                errors.push(
                    "platform",
                    format!("must be github, gitlab, jenkins or circleci, not {text:?}"),
                );
            }
            platform
        }
    };
    let days = match query_value(query, "days")?.filter(|d| !d.is_empty()) {
        None => DEFAULT_CI_DAYS,
        Some(text) => match text.parse::<u32>() {
            Ok(days) if (1..=MAX_CI_FAILURE_DAYS).contains(&days) => days,
            _ => {
                errors.push(
                    "days",
                    format!("must be an integer from 1 to {MAX_CI_FAILURE_DAYS}"),
                );
                DEFAULT_CI_DAYS
            }
        },
    };
    if !errors.is_empty() {
        return Err(Rejection::Invalid(errors));
    }
    Ok(CiFailureListQuery {
        platform,
        repository: query_value(query, "repository")?.filter(|r| !r.is_empty()),
        limit,
        cursor,
        days,
    })
}

/// `GET /api/admin/ci/failures?platform=&repository=&limit=&cursor=&days=`:
/// recent CI failures with their classification, newest first, and
/// failures per platform and day. CI webhooks are the organisation's, not
/// a tenant's, so this is an operator's read.
pub(super) async fn ci_failures(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Rejection> {
    gateway.operator(&headers, false)?;
    let request = ci_failure_query(query.as_deref())?;
    let answer = gateway
        .ask("batch-processor", CI_FAILURES_ENDPOINT, &request, &trace)
        .await?;
    Ok(json_answer(answer))
}
