//! Seeds 000/003 in the dashboard: a tenant's sweep jobs, the New Trading
//! Sweep form, a job's live status, results, heatmap and CSV export.

use askama::Template;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Extension, extract::Path};
use hookmesh_contracts::FieldError;
use hookmesh_contracts::subjects::SWEEP_LIST_ENDPOINT;
use hookmesh_contracts::sweep::SweepResult;
use hookmesh_contracts::sweep_jobs::{JobListQuery, JobStatus, PipelineJob, PipelineJobPage};
use serde_json::{Value, json};

use super::charts::{self, ScoreCell};
use super::{Layout, UiError, Viewer, field, form_pairs, html, query_escape, same_origin, utc};
use crate::Gateway;
use crate::error::Rejection;
use crate::reads::read_answer;
use crate::routes::pipelines::{fetch_job, job_event_stream};
use crate::trace::TraceContext;

/// Jobs per page of the list.
const PAGE: u32 = 20;

pub fn router() -> Router<Gateway> {
    Router::new()
        .route("/ui/pipelines", get(list).post(create))
        .route("/ui/pipelines/new", get(new_form))
        .route("/ui/pipelines/{id}", get(detail))
        .route("/ui/pipelines/{id}/events", get(events))
        .route("/ui/pipelines/{id}/results", get(results_part))
        .route("/ui/pipelines/{id}/results.csv", get(csv))
}

/// A job as a row of the list.
struct JobRow {
    id: String,
    ticker: String,
    strategy: String,
    status: String,
    combinations: usize,
    created_at: String,
}

#[derive(Template)]
#[template(path = "pipelines.html")]
struct PipelinesPage {
    layout: Layout,
    jobs: Vec<JobRow>,
    status: String,
    ticker: String,
    statuses: [&'static str; 4],
    /// The link to the next page, when there is one.
    next_page: Option<String>,
    first_page: Option<String>,
}

async fn list(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant()?.clone();
    let pairs = form_pairs(query.as_deref().unwrap_or(""));
    let status_text = field(&pairs, "status").unwrap_or("").to_ascii_uppercase();
    let status = match status_text.as_str() {
        "" => None,
        text => Some(text.parse::<JobStatus>().map_err(|_| {
            UiError::from(Rejection::Invalid(
                hookmesh_contracts::ValidationErrors::single(
                    "status",
                    format!("must be QUEUED, RUNNING, COMPLETED or FAILED, not {text:?}"),
                ),
            ))
        })?),
    };
    let ticker = field(&pairs, "ticker").map(str::to_owned);
    let cursor = field(&pairs, "cursor").map(str::to_owned);
    let request = JobListQuery {
        tenant_id: tenant,
        status,
        ticker: ticker.clone(),
        limit: PAGE,
        cursor: cursor.clone(),
    };
    let page: PipelineJobPage = gateway
        .ask_for("sweep", SWEEP_LIST_ENDPOINT, &request, &trace)
        .await?;
    let filters = format!(
        "status={}&ticker={}",
        query_escape(&status_text),
        query_escape(ticker.as_deref().unwrap_or(""))
    );
    Ok(html(&PipelinesPage {
        layout: viewer.layout("Pipelines", "pipelines"),
        jobs: page
            .jobs
            .iter()
            .map(|job| JobRow {
                id: job.id.clone(),
                ticker: job.parameters.ticker.clone(),
                strategy: job.parameters.strategy_type.to_string(),
                status: job.status.to_string(),
                combinations: job.parameters.combination_count(),
                created_at: utc(&job.created_at),
            })
            .collect(),
        status: status_text,
        ticker: ticker.unwrap_or_default(),
        statuses: ["QUEUED", "RUNNING", "COMPLETED", "FAILED"],
        next_page: page
            .next_cursor
            .map(|next| format!("/ui/pipelines?{filters}&cursor={}", query_escape(&next))),
        first_page: cursor.map(|_| format!("/ui/pipelines?{filters}")),
    }))
}

/// The form's values as typed, to show them again with the errors.
#[derive(Debug, Clone)]
struct SweepForm {
    ticker: String,
    fast_min: String,
    fast_max: String,
    slow_min: String,
    slow_max: String,
    step: String,
    min_trades: String,
    strategy_type: String,
    config_path: String,
}

impl Default for SweepForm {
    /// 003's example request.
    fn default() -> Self {
        Self {
            ticker: "BTC-USD".into(),
            fast_min: "10".into(),
            fast_max: "20".into(),
            slow_min: "20".into(),
            slow_max: "30".into(),
            step: "5".into(),
            min_trades: "50".into(),
            strategy_type: "SMA".into(),
            config_path: "minimum".into(),
        }
    }
}

/// A number as typed: an integer stays one, anything else is passed as
/// text so that the API's validation names it.
fn number(text: &str) -> Value {
    text.trim()
        .parse::<i64>()
        .map_or_else(|_| Value::from(text.trim()), Value::from)
}

impl SweepForm {
    fn from_pairs(pairs: &[(String, String)]) -> Self {
        let value = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.trim().to_owned())
                .unwrap_or_default()
        };
        Self {
            ticker: value("ticker"),
            fast_min: value("fast_min"),
            fast_max: value("fast_max"),
            slow_min: value("slow_min"),
            slow_max: value("slow_max"),
            step: value("step"),
            min_trades: value("min_trades"),
            strategy_type: value("strategy_type"),
            config_path: value("config_path"),
        }
    }

    /// The API request this form stands for (003's trigger body).
    fn request(&self) -> Value {
        let mut request = json!({
            "ticker": self.ticker,
            "fast_range": [number(&self.fast_min), number(&self.fast_max)],
            "slow_range": [number(&self.slow_min), number(&self.slow_max)],
            "step": number(&self.step),
        });
        let object = request.as_object_mut().expect("an object");
        if !self.min_trades.is_empty() {
            object.insert("min_trades".into(), number(&self.min_trades));
        }
        if !self.strategy_type.is_empty() {
            object.insert(
                "strategy_type".into(),
                Value::from(self.strategy_type.as_str()),
            );
        }
        if !self.config_path.is_empty() {
            object.insert("config_path".into(), Value::from(self.config_path.as_str()));
        }
        request
    }
}

/// The API's field errors, placed next to the form's controls.
#[derive(Debug, Default)]
struct FormErrors {
    ticker: Vec<String>,
    fast_range: Vec<String>,
    slow_range: Vec<String>,
    step: Vec<String>,
    min_trades: Vec<String>,
    strategy_type: Vec<String>,
    config_path: Vec<String>,
    /// About the request as a whole (too many combinations).
    general: Vec<String>,
}

impl FormErrors {
    fn place(errors: &[FieldError]) -> Self {
        let mut placed = Self::default();
        for error in errors {
            let top = error.field.split(['.', '[']).next().unwrap_or_default();
            let message = match error.field.find('[') {
                // "fast_range[1]: must be …" says which end of the range.
                Some(at) => format!(
                    "{} {}",
                    if error.field[at..].starts_with("[0]") {
                        "min:"
                    } else {
                        "max:"
                    },
                    error.message
                ),
                None => error.message.clone(),
            };
            let slot = match top {
                "ticker" => &mut placed.ticker,
                "fast_range" => &mut placed.fast_range,
                "slow_range" => &mut placed.slow_range,
                "step" => &mut placed.step,
                "min_trades" => &mut placed.min_trades,
                "strategy_type" => &mut placed.strategy_type,
                "config_path" => &mut placed.config_path,
                _ => &mut placed.general,
            };
            slot.push(message);
        }
        placed
    }

    fn is_empty(&self) -> bool {
        [
            &self.ticker,
            &self.fast_range,
            &self.slow_range,
            &self.step,
            &self.min_trades,
            &self.strategy_type,
            &self.config_path,
            &self.general,
        ]
        .iter()
        .all(|errors| errors.is_empty())
    }
}

#[derive(Template)]
#[template(path = "sweep_new.html")]
struct SweepFormPage {
    layout: Layout,
    form: SweepForm,
    errors: FormErrors,
    has_errors: bool,
    csrf: String,
}

async fn new_form(viewer: Viewer) -> Result<Response, UiError> {
    viewer.tenant()?;
    Ok(html(&SweepFormPage {
        layout: viewer.layout("New Trading Sweep", "new"),
        form: SweepForm::default(),
        errors: FormErrors::default(),
        has_errors: false,
        csrf: viewer.csrf.clone(),
    }))
}

/// `POST /ui/pipelines`: the form → the same trigger as the API; a refusal
/// shows the form again with each message next to its field, and nothing
/// is published.
async fn create(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    headers: HeaderMap,
    body: String,
) -> Result<Response, UiError> {
    same_origin(&headers)?;
    let tenant = viewer.tenant()?.clone();
    let pairs = form_pairs(&body);
    viewer.check_csrf(&gateway, field(&pairs, "csrf").unwrap_or(""))?;
    gateway
        .admit(&format!("api:{tenant}"))
        .map_err(UiError::from)?;
    let form = SweepForm::from_pairs(&pairs);
    match gateway
        .trigger_sweep(tenant, &form.request(), None, &trace)
        .await
    {
        Ok(accepted) => {
            Ok(Redirect::to(&format!("/ui/pipelines/{}", accepted.job_id)).into_response())
        }
        Err(Rejection::Invalid(errors) | Rejection::Malformed(errors)) => {
            let errors = FormErrors::place(errors.errors());
            let has_errors = !errors.is_empty();
            Ok((
                StatusCode::BAD_REQUEST,
                html(&SweepFormPage {
                    layout: viewer.layout("New Trading Sweep (check the form)", "new"),
                    form,
                    errors,
                    has_errors,
                    csrf: viewer.csrf.clone(),
                }),
            )
                .into_response())
        }
        Err(other) => Err(other.into()),
    }
}

/// A result as a row of the table.
struct ResultRow {
    rank: usize,
    fast: u32,
    slow: u32,
    score: String,
    sharpe: String,
    sortino: String,
    total_return: String,
    annualized: String,
    drawdown: String,
    win_rate: String,
    profit_factor: String,
    trades: u32,
    per_month: String,
    duration: String,
}

/// The results, best score first.
fn sorted_results(job: &PipelineJob) -> Vec<SweepResult> {
    let mut results = job.results.clone().unwrap_or_default();
    results.sort_by(|a, b| b.score.total_cmp(&a.score));
    results
}

#[derive(Template)]
#[template(path = "job_results.html")]
struct ResultsPart {
    job_id: String,
    status: String,
    error_message: Option<String>,
    rows: Vec<ResultRow>,
    heatmap: String,
    duration: Option<String>,
    tested: Option<u64>,
}

impl ResultsPart {
    fn of(job: &PipelineJob) -> Self {
        let results = sorted_results(job);
        let fast: Vec<u32> = job
            .parameters
            .fast_range
            .periods(job.parameters.step)
            .collect();
        let slow: Vec<u32> = job
            .parameters
            .slow_range
            .periods(job.parameters.step)
            .collect();
        let cells: Vec<ScoreCell> = results
            .iter()
            .map(|r| ScoreCell {
                fast: r.fast_period,
                slow: r.slow_period,
                score: r.score,
            })
            .collect();
        Self {
            job_id: job.id.clone(),
            status: job.status.to_string(),
            error_message: job.error_message.clone(),
            heatmap: if results.is_empty() {
                String::new()
            } else {
                charts::heatmap(&fast, &slow, &cells)
            },
            rows: results
                .iter()
                .enumerate()
                .map(|(index, r)| ResultRow {
                    rank: index + 1,
                    fast: r.fast_period,
                    slow: r.slow_period,
                    score: format!("{:.3}", r.score),
                    sharpe: format!("{:.2}", r.sharpe_ratio),
                    sortino: format!("{:.2}", r.sortino_ratio),
                    total_return: format!("{:.2}", r.total_return_pct),
                    annualized: format!("{:.2}", r.annualized_return),
                    drawdown: format!("{:.2}", r.max_drawdown_pct),
                    win_rate: format!("{:.1}", r.win_rate_pct),
                    profit_factor: format!("{:.2}", r.profit_factor),
                    trades: r.total_trades,
                    per_month: format!("{:.1}", r.trades_per_month),
                    duration: r.avg_trade_duration.clone(),
                })
                .collect(),
            duration: job.metrics.map(|m| format!("{:.1}", m.duration_seconds)),
            tested: job.metrics.map(|m| m.combinations_tested),
        }
    }
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    layout: Layout,
    id: String,
    status: String,
    is_final: bool,
    ticker: String,
    strategy: String,
    fast: String,
    slow: String,
    step: u32,
    min_trades: u32,
    config_path: String,
    combinations: usize,
    created_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    results: String,
}

fn no_such_job(id: &str) -> String {
    format!("There is no job {id:?} of yours.")
}

async fn job_of(
    gateway: &Gateway,
    viewer: &Viewer,
    id: &str,
    trace: &TraceContext,
) -> Result<PipelineJob, UiError> {
    let tenant = viewer.tenant()?.clone();
    let (_, job) = UiError::unless_missing(fetch_job(gateway, tenant, id, trace).await, || {
        no_such_job(id)
    })?;
    Ok(read_answer("sweep", &job)?)
}

async fn detail(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let job = job_of(&gateway, &viewer, &id, &trace).await?;
    let results = ResultsPart::of(&job).render().map_err(|e| UiError::Page {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        message: format!("the results could not be drawn: {e}"),
    })?;
    let p = &job.parameters;
    Ok(html(&JobPage {
        layout: viewer.layout(format!("Job {}", job.id), "pipelines"),
        id: job.id.clone(),
        status: job.status.to_string(),
        is_final: job.status.is_final(),
        ticker: p.ticker.clone(),
        strategy: p.strategy_type.to_string(),
        fast: format!("{}–{}", p.fast_range.min(), p.fast_range.max()),
        slow: format!("{}–{}", p.slow_range.min(), p.slow_range.max()),
        step: p.step,
        min_trades: p.min_trades,
        config_path: p
            .config_path
            .as_ref()
            .map_or_else(|| "—".to_owned(), ToString::to_string),
        combinations: p.combination_count(),
        created_at: utc(&job.created_at),
        started_at: job.started_at.as_ref().map(utc),
        completed_at: job.completed_at.as_ref().map(utc),
        results,
    }))
}

/// The status, results and heatmap alone, which the job page's script
/// fetches when the job finishes.
async fn results_part(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let job = job_of(&gateway, &viewer, &id, &trace).await?;
    Ok(html(&ResultsPart::of(&job)))
}

/// `GET /ui/pipelines/{id}/events`: the API's event stream, for the session.
async fn events(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let tenant = viewer.tenant()?.clone();
    UiError::unless_missing(
        job_event_stream(&gateway, tenant, &id, &trace).await,
        || no_such_job(&id),
    )
}

/// A CSV field, quoted when it must be.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// `GET /ui/pipelines/{id}/results.csv`: every result with every 003
/// metric, best score first.
async fn csv(
    State(gateway): State<Gateway>,
    Extension(trace): Extension<TraceContext>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let job = job_of(&gateway, &viewer, &id, &trace).await?;
    let mut text = String::from(
        "ticker,strategy_type,fast_period,slow_period,score,sharpe_ratio,sortino_ratio,\
         total_return_pct,annualized_return,max_drawdown_pct,win_rate_pct,profit_factor,\
         total_trades,trades_per_month,avg_trade_duration\r\n",
    );
    for r in sorted_results(&job) {
        text.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\r\n",
            csv_field(&r.ticker),
            r.strategy_type,
            r.fast_period,
            r.slow_period,
            r.score,
            r.sharpe_ratio,
            r.sortino_ratio,
            r.total_return_pct,
            r.annualized_return,
            r.max_drawdown_pct,
            r.win_rate_pct,
            r.profit_factor,
            r.total_trades,
            r.trades_per_month,
            csv_field(&r.avg_trade_duration)
        ));
    }
    let file = format!("attachment; filename=\"{}-results.csv\"", job.id);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, file),
        ],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_the_api_request() {
        let form = SweepForm::default();
        assert_eq!(
            form.request(),
            json!({"ticker": "BTC-USD", "fast_range": [10, 20], "slow_range": [20, 30], "step": 5, "min_trades": 50, "strategy_type": "SMA", "config_path": "minimum"})
        );
        let typed = SweepForm {
            step: "five".into(),
            ..SweepForm::default()
        };
        assert_eq!(typed.request()["step"], "five", "left for the API to name");
    }

    #[test]
    fn errors_land_next_to_their_fields() {
        let placed = FormErrors::place(&[
            FieldError {
                field: "fast_range".into(),
                message: "Fast range max must be less than slow range max".into(),
            },
            FieldError {
                field: "slow_range[1]".into(),
                message: "must be at most 500".into(),
            },
            FieldError {
                field: String::new(),
                message: "too many".into(),
            },
        ]);
        assert_eq!(
            placed.fast_range,
            ["Fast range max must be less than slow range max"]
        );
        assert_eq!(placed.slow_range, ["max: must be at most 500"]);
        assert_eq!(placed.general, ["too many"]);
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("5.2 days"), "5.2 days");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
    }
}
