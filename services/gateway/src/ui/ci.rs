//! Seed 001 in the dashboard, for operators (CI webhooks are the
//! organisation's, one secret per platform, not a tenant's): recent CI
//! failures with their classification and a link to the run, and failures
//! per platform and day as stacked columns.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hookmesh_contracts::ci::{CiFailurePage, CiPlatform};
use hookmesh_contracts::subjects::CI_FAILURES_ENDPOINT;
use hookmesh_contracts::validation::StrEnum as _;
use time::{Duration, OffsetDateTime};

use super::charts::{self, Series};
use super::{Layout, UiError, Viewer, field, form_pairs, html, query_escape, utc};
use crate::Gateway;
use crate::error::Rejection;
use crate::routes::admin::ci_failure_query;
use crate::trace::TraceContext;

pub fn router() -> Router<Gateway> {
    Router::new().route("/ui/ci", get(failures))
}

/// The filter form as typed, with the API's messages for its fields.
#[derive(Debug, Default)]
struct FilterForm {
    platform: String,
    repository: String,
    days: String,
    platform_error: Option<String>,
    days_error: Option<String>,
}

struct FailureRow {
    platform: &'static str,
    repository: String,
    pipeline: String,
    job: Option<String>,
    attempt: u64,
    branch: String,
    commit: String,
    patterns: Vec<&'static str>,
    reason: String,
    logs_url: Option<String>,
    status_now: Option<&'static str>,
    detected_at: String,
}

#[derive(Template)]
#[template(path = "ci_failures.html")]
struct FailuresPage {
    layout: Layout,
    form: FilterForm,
    platforms: Vec<&'static str>,
    failures: Vec<FailureRow>,
    chart: String,
    /// Failures per platform over the chart's days.
    totals: Vec<(&'static str, u64)>,
    days: u32,
    next_page: Option<String>,
    first_page: Option<String>,
}

/// Only links a browser should follow from a platform's payload.
fn web_link(url: Option<&str>) -> Option<String> {
    url.filter(|url| url.starts_with("https://") || url.starts_with("http://"))
        .map(str::to_owned)
}

/// `GET /ui/ci?platform=&repository=&days=&cursor=`.
async fn failures(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, UiError> {
    viewer.operator("CI failures")?;
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    let mut form = FilterForm {
        platform: field(&pairs, "platform").unwrap_or("").to_owned(),
        repository: field(&pairs, "repository").unwrap_or("").to_owned(),
        days: field(&pairs, "days").unwrap_or("").to_owned(),
        ..FilterForm::default()
    };
    let platforms: Vec<&'static str> = CiPlatform::VARIANTS.iter().map(|(name, _)| *name).collect();
    let request = match ci_failure_query(query.as_deref()) {
        Ok(request) => request,
        Err(Rejection::Invalid(errors)) => {
            for error in errors.errors() {
                match error.field.as_str() {
                    "platform" => form.platform_error = Some(error.message.clone()),
                    "days" => form.days_error = Some(error.message.clone()),
                    _ => form.days_error = Some(format!("{}: {}", error.field, error.message)),
                }
            }
            let page = FailuresPage {
                layout: viewer.layout("CI failures (check the filters)", "ci"),
                form,
                platforms,
                failures: Vec::new(),
                chart: String::new(),
                totals: Vec::new(),
                days: 0,
                next_page: None,
                first_page: None,
            };
            return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
        }
        Err(other) => return Err(other.into()),
    };
    let page: CiFailurePage = gateway
        .ask_for("batch-processor", CI_FAILURES_ENDPOINT, &request, &trace)
        .await?;

    let today = OffsetDateTime::now_utc().date();
    let days: Vec<String> = (0..i64::from(request.days))
        .rev()
        .map(|back| (today - Duration::days(back)).to_string())
        .collect();
    let series: Vec<Series> = CiPlatform::VARIANTS
        .iter()
        .map(|(name, platform)| Series {
            name: (*name).to_owned(),
            values: days
                .iter()
                .map(|day| {
                    page.per_platform
                        .iter()
                        .find(|count| count.platform == *platform && &count.day == day)
                        .map(|count| count.failures as f64)
                })
                .collect(),
        })
        .collect();
    let totals = CiPlatform::VARIANTS
        .iter()
        .map(|(name, platform)| {
            let total = page
                .per_platform
                .iter()
                .filter(|count| count.platform == *platform)
                .map(|count| count.failures)
                .sum();
            (*name, total)
        })
        .collect();
    let filters = format!(
        "platform={}&repository={}&days={}",
        query_escape(&form.platform),
        query_escape(&form.repository),
        request.days
    );
    Ok(html(&FailuresPage {
        layout: viewer.layout("CI failures", "ci"),
        platforms,
        failures: page
            .failures
            .iter()
            .map(|failure| FailureRow {
                platform: failure.platform.as_str(),
                repository: failure.repository.clone(),
                pipeline: failure
                    .pipeline_name
                    .clone()
                    .unwrap_or_else(|| failure.pipeline_id.clone()),
                job: failure.job_name.clone().or_else(|| failure.job_id.clone()),
                attempt: failure.run_attempt,
                branch: failure.branch.clone().unwrap_or_default(),
                commit: failure
                    .commit_sha
                    .as_deref()
                    .map(|sha| sha.chars().take(10).collect())
                    .unwrap_or_default(),
                patterns: failure.error_patterns.iter().map(|p| p.as_str()).collect(),
                reason: failure.failure_reason.clone().unwrap_or_default(),
                logs_url: web_link(failure.logs_url.as_deref()),
                status_now: failure.current_status.map(|status| status.as_str()),
                detected_at: utc(&failure.detected_at),
            })
            .collect(),
        chart: charts::stacked_columns(
            "ci-per-platform",
            "CI failures per platform and day",
            &days,
            &series,
        ),
        totals,
        days: request.days,
        next_page: page
            .next_cursor
            .map(|next| format!("/ui/ci?{filters}&cursor={}", query_escape(&next))),
        first_page: request.cursor.map(|_| format!("/ui/ci?{filters}")),
        form,
    }))
}
