//! Seed 002 in the dashboard: a program's daily CSR metrics over a chosen
//! range as line charts (with the numbers in a table), and a participant's
//! journey as a timeline. Tenant pages: the csr-consumer answers for the
//! viewer's tenant only.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hookmesh_contracts::csr::{DailyMetrics, MetricsReport};
use hookmesh_contracts::subjects::CSR_METRICS_ENDPOINT;
use hookmesh_contracts::validation::StrEnum as _;

use super::charts::{self, Series};
use super::{Layout, UiError, Viewer, field, form_pairs, html, query_escape, utc};
use crate::Gateway;
use crate::error::Rejection;
use crate::routes::csr::{journey_of, metrics_query};
use crate::trace::TraceContext;

pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/ui/csr", get(metrics))
        .route("/ui/csr/journey", get(journey_lookup))
        .route("/ui/csr/participants/{id}", get(journey))
}

/// The range form as typed, and the API's messages for its fields.
#[derive(Debug, Default)]
struct RangeForm {
    program: String,
    from: String,
    to: String,
    program_error: Option<String>,
    from_error: Option<String>,
    to_error: Option<String>,
}

/// One day of the table beside the charts.
struct DayRow {
    date: String,
    active_matches: u64,
    checkins: u64,
    event_attendance: u64,
    engagement: String,
}

fn engagement(day: &DailyMetrics) -> String {
    day.engagement_rate
        .map_or_else(|| "—".to_owned(), |rate| format!("{:.1} %", rate * 100.0))
}

#[derive(Template)]
#[template(path = "csr.html")]
struct MetricsPage {
    layout: Layout,
    form: RangeForm,
    /// Set once a program's metrics were read.
    report: Option<ReportView>,
}

struct ReportView {
    program: String,
    from: String,
    to: String,
    counts_chart: String,
    engagement_chart: String,
    days: Vec<DayRow>,
    json_link: String,
}

fn report_view(report: &MetricsReport) -> ReportView {
    let dates: Vec<String> = report.days.iter().map(|day| day.date.clone()).collect();
    let series = |name: &str, value: fn(&DailyMetrics) -> Option<f64>| Series {
        name: name.to_owned(),
        values: report.days.iter().map(value).collect(),
    };
    let counts = [
        series("Active matches", |d| Some(d.active_matches as f64)),
        series("Check-ins", |d| Some(d.checkins as f64)),
        series("Event attendance", |d| Some(d.event_attendance as f64)),
    ];
    let rate = [series("Engagement", |d| d.engagement_rate)];
    ReportView {
        program: report.program_id.clone(),
        from: report.from.clone(),
        to: report.to.clone(),
        counts_chart: charts::line_chart(
            "csr-counts",
            "Active matches, check-ins and event attendance per day",
            &dates,
            &counts,
            false,
        ),
        engagement_chart: charts::line_chart(
            "csr-engagement",
            "Engagement: active participants of those enrolled",
            &dates,
            &rate,
            true,
        ),
        days: report
            .days
            .iter()
            .map(|day| DayRow {
                date: day.date.clone(),
                active_matches: day.active_matches,
                checkins: day.checkins,
                event_attendance: day.event_attendance,
                engagement: engagement(day),
            })
            .collect(),
        json_link: format!(
            "/api/csr/metrics?program={}&from={}&to={}",
            query_escape(&report.program_id),
            report.from,
            report.to
        ),
    }
}

/// `GET /ui/csr?program=&from=&to=`: the form, and the charts once a
/// program is named. A bad range is shown next to its field, as the API
/// words it.
async fn metrics(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant()?.clone();
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    let mut form = RangeForm {
        program: field(&pairs, "program").unwrap_or("").to_owned(),
        from: field(&pairs, "from").unwrap_or("").to_owned(),
        to: field(&pairs, "to").unwrap_or("").to_owned(),
        ..RangeForm::default()
    };
    if form.program.is_empty() && form.from.is_empty() && form.to.is_empty() {
        return Ok(html(&MetricsPage {
            layout: viewer.layout("CSR metrics", "csr"),
            form,
            report: None,
        }));
    }
    let request = match metrics_query(tenant, query.as_deref()) {
        Ok(request) => request,
        Err(Rejection::Invalid(errors)) => {
            for error in errors.errors() {
                let slot = match error.field.as_str() {
                    "program" => &mut form.program_error,
                    "from" => &mut form.from_error,
                    _ => &mut form.to_error,
                };
                *slot = Some(error.message.clone());
            }
            let page = MetricsPage {
                layout: viewer.layout("CSR metrics (check the form)", "csr"),
                form,
                report: None,
            };
            return Ok((StatusCode::BAD_REQUEST, html(&page)).into_response());
        }
        Err(other) => return Err(other.into()),
    };
    let report: MetricsReport = gateway
        .ask_for("CSR", CSR_METRICS_ENDPOINT, &request, &trace)
        .await?;
    form.from = report.from.clone();
    form.to = report.to.clone();
    Ok(html(&MetricsPage {
        layout: viewer.layout(format!("CSR metrics of {}", report.program_id), "csr"),
        form,
        report: Some(report_view(&report)),
    }))
}

/// `GET /ui/csr/journey?participant=`: the lookup form's target.
async fn journey_lookup(viewer: Viewer, RawQuery(query): RawQuery) -> Result<Response, UiError> {
    viewer.tenant()?;
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    match field(&pairs, "participant") {
        Some(participant) => Ok(axum::response::Redirect::to(&format!(
            "/ui/csr/participants/{}",
            query_escape(participant)
        ))
        .into_response()),
        None => Err(UiError::Page {
            status: StatusCode::BAD_REQUEST,
            message: "participant: is required".to_owned(),
        }),
    }
}

struct StepRow {
    stage: &'static str,
    from_stage: Option<&'static str>,
    at: String,
}

struct ProgramRow {
    program: String,
    stage: &'static str,
    steps: Vec<StepRow>,
}

#[derive(Template)]
#[template(path = "journey.html")]
struct JourneyPage {
    layout: Layout,
    participant: String,
    programs: Vec<ProgramRow>,
}

/// `GET /ui/csr/participants/{id}`: each program's journey, its steps in
/// order; a participant the tenant does not have is 404.
async fn journey(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    Path(participant): Path<String>,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant()?.clone();
    let report = UiError::unless_missing(
        journey_of(&gateway, tenant, participant.clone(), &trace).await,
        || format!("There is no participant {participant:?} in your programs."),
    )?;
    Ok(html(&JourneyPage {
        layout: viewer.layout(format!("Journey of {participant}"), "csr"),
        participant,
        programs: report
            .programs
            .iter()
            .map(|program| ProgramRow {
                program: program.program_id.clone(),
                stage: program.stage.as_str(),
                steps: program
                    .steps
                    .iter()
                    .map(|step| StepRow {
                        stage: step.stage.as_str(),
                        from_stage: step.from_stage.map(|stage| stage.as_str()),
                        at: utc(&step.at),
                    })
                    .collect(),
            })
            .collect(),
    }))
}
