//! The HTTP side of the simulator: 003's endpoints, their authentication
//! and FastAPI-shaped refusals (`{"detail": …}`, 422 for invalid fields).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use hookmesh_contracts::Timestamp;
use hookmesh_contracts::sweep::{ConfigPath, StrategyType};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::runner::{self, SweepRequest};
use crate::{Job, Knobs, SimEvent, State};

type Shared = Arc<State>;

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/strategy/sweep", post(submit))
        .route("/api/v1/sweeps/{sweep_run_id}/best", get(best))
        .route("/sse-proxy/jobs/{job_id}/stream", get(stream_job))
        .route("/_sim/knobs", get(read_knobs).put(write_knobs))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_when_down,
        ))
        .with_state(state)
}

/// While the simulator is "down", open connections get 503 and are closed.
async fn refuse_when_down(
    AxumState(state): AxumState<Shared>,
    request: Request,
    next: Next,
) -> Response {
    if state.down.load(Ordering::SeqCst) {
        let mut response = detail(StatusCode::SERVICE_UNAVAILABLE, "Service unavailable");
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    next.run(request).await
}

fn detail(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "detail": message }))).into_response()
}

/// The refusal of a request without the API key; `None` when it has it.
fn unauthorised(state: &State, headers: &HeaderMap) -> Option<Response> {
    match headers.get("X-API-Key").and_then(|v| v.to_str().ok()) {
        Some(key) if state.api_key.matches(key) => None,
        Some(_) => Some(detail(StatusCode::UNAUTHORIZED, "Invalid API key")),
        None => Some(detail(StatusCode::UNAUTHORIZED, "Missing X-API-Key header")),
    }
}

async fn health() -> Json<Value> {
    Json(json!({
        "status": "healthy",
        "version": "1.0.0",
        "timestamp": Timestamp::now().to_rfc3339(),
    }))
}

#[derive(Deserialize)]
struct Login {
    api_key: String,
}

/// 003's login: the API key in, a session cookie out.
async fn login(AxumState(state): AxumState<Shared>, body: Bytes) -> Response {
    let Ok(login) = serde_json::from_slice::<Login>(&body) else {
        return detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Body must be {\"api_key\": \"…\"}",
        );
    };
    if !state.api_key.matches(&login.api_key) {
        return detail(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    let session = runner::random_token(16);
    state
        .sessions
        .lock()
        .expect("sessions lock")
        .insert(session.clone());
    let mut response = Json(json!({ "authenticated": true })).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "session={session}; Path=/; HttpOnly; SameSite=Lax"
    )) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// One invalid form field, FastAPI's way.
fn invalid(field: &str, message: impl Into<String>) -> Value {
    json!({ "loc": ["body", field], "msg": message.into(), "type": "value_error" })
}

/// `[10, 20]` (003's form) or `10,20`.
fn parse_range(text: &str) -> Option<(u32, u32)> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    let (low, high) = inner.split_once(',')?;
    let (low, high) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    (low >= 1 && low <= high).then_some((low, high))
}

/// Why a sweep form was refused.
#[derive(Debug)]
pub enum FormRefusal {
    /// Not `application/x-www-form-urlencoded` text (400).
    NotAForm,
    /// A form, with these invalid fields, FastAPI's way (422).
    Invalid(Vec<Value>),
}

/// 003's sweep form, from the request body.
pub fn read_sweep_form(body: &[u8]) -> Result<SweepRequest, FormRefusal> {
    let form = serde_urlencoded::from_bytes::<HashMap<String, String>>(body)
        .map_err(|_| FormRefusal::NotAForm)?;
    read_request(&form).map_err(FormRefusal::Invalid)
}

fn read_request(form: &HashMap<String, String>) -> Result<SweepRequest, Vec<Value>> {
    let mut errors = Vec::new();
    let mut required = |field: &str| match form.get(field).map(|v| v.trim()) {
        Some(value) if !value.is_empty() => Some(value.to_owned()),
        _ => {
            errors.push(invalid(field, "field required"));
            None
        }
    };
    let ticker = required("ticker");
    let fast_range = required("fast_range");
    let slow_range = required("slow_range");
    let step = required("step");
    let min_trades = required("min_trades");
    let strategy_type = required("strategy_type");
    let webhook_url = required("webhook_url");
    let mut check = |field: &str,
                     value: Option<String>,
                     parse: &dyn Fn(&str) -> Option<Value>,
                     message: &str| {
        let value = value?;
        let parsed = parse(&value);
        if parsed.is_none() {
            errors.push(invalid(field, message));
        }
        parsed
    };
    let ticker = check(
        "ticker",
        ticker,
        &|t| (t.len() <= 20).then(|| json!(t)),
        "at most 20 characters",
    );
    let fast = check(
        "fast_range",
        fast_range,
        &|t| parse_range(t).map(|r| json!([r.0, r.1])),
        "must be [min, max] with 1 <= min <= max",
    );
    let slow = check(
        "slow_range",
        slow_range,
        &|t| parse_range(t).map(|r| json!([r.0, r.1])),
        "must be [min, max] with 1 <= min <= max",
    );
    let step = check(
        "step",
        step,
        &|t| t.parse::<u32>().ok().filter(|s| *s >= 1).map(|s| json!(s)),
        "must be a positive integer",
    );
    let min_trades = check(
        "min_trades",
        min_trades,
        &|t| t.parse::<u32>().ok().filter(|s| *s >= 1).map(|s| json!(s)),
        "must be a positive integer",
    );
    let strategy = check(
        "strategy_type",
        strategy_type,
        &|t| t.parse::<StrategyType>().ok().map(|s| json!(s)),
        "must be one of SMA, EMA, MACD",
    );
    let webhook_url = check(
        "webhook_url",
        webhook_url,
        &|t| (t.starts_with("http://") || t.starts_with("https://")).then(|| json!(t)),
        "must be an http(s) URL",
    );
    let config_path = match form
        .get("config_path")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
    {
        None => None,
        Some(path) => match path.parse::<ConfigPath>() {
            Ok(path) => Some(path),
            Err(_) => {
                errors.push(invalid("config_path", "must be minimum or standard"));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let pair = |v: Option<Value>| -> (u32, u32) {
        let v = v.unwrap_or_default();
        (
            v[0].as_u64().unwrap_or(0) as u32,
            v[1].as_u64().unwrap_or(0) as u32,
        )
    };
    Ok(SweepRequest {
        ticker: ticker
            .and_then(|t| t.as_str().map(str::to_owned))
            .unwrap_or_default(),
        fast_range: pair(fast),
        slow_range: pair(slow),
        step: step.and_then(|s| s.as_u64()).unwrap_or(1) as u32,
        min_trades: min_trades.and_then(|s| s.as_u64()).unwrap_or(1) as u32,
        strategy: strategy
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or(StrategyType::Sma),
        config_path,
        webhook_url: webhook_url
            .and_then(|u| u.as_str().map(str::to_owned))
            .unwrap_or_default(),
    })
}

/// `POST /api/v1/strategy/sweep`: 003's form in, 003's 202 out; the sweep
/// runs in the background.
async fn submit(AxumState(state): AxumState<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = unauthorised(&state, &headers) {
        return refused;
    }
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return detail(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let request = match read_sweep_form(&body) {
        Ok(request) => request,
        Err(FormRefusal::NotAForm) => {
            return detail(StatusCode::BAD_REQUEST, "The body is not a valid form");
        }
        Err(FormRefusal::Invalid(errors)) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({ "detail": errors })),
            )
                .into_response();
        }
    };
    let knobs = state.knobs();
    let created_at = Timestamp::now();
    let job_id = runner::job_id(&request.ticker, created_at);
    let (events, _) = broadcast::channel(64);
    let queued = SimEvent::Progress {
        percent: 0,
        message: "Queued".to_owned(),
        timestamp: created_at.to_rfc3339(),
    };
    state.jobs.lock().expect("jobs lock").insert(
        job_id.clone(),
        Job {
            last: queued,
            events,
        },
    );
    state.accepted.fetch_add(1, Ordering::Relaxed);
    let body = json!({
        "job_id": job_id,
        "status": "queued",
        "message": "Strategy sweep job queued successfully",
        "parameters": {
            "ticker": request.ticker,
            "fast_range": [request.fast_range.0, request.fast_range.1],
            "slow_range": [request.slow_range.0, request.slow_range.1],
            "step": request.step,
            "combinations": request.grid_size(),
        },
        "estimated_duration_seconds": knobs.run_time_ms.div_ceil(1000),
        "webhook_url": request.webhook_url,
        "created_at": created_at.to_rfc3339(),
    });
    tracing::info!(job_id, ticker = %request.ticker, strategy = %request.strategy, "Sweep accepted.");
    tokio::spawn(runner::run(state.clone(), job_id, request, knobs));
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct BestQuery {
    ticker: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/v1/sweeps/{sweep_run_id}/best?ticker=&limit=`.
async fn best(
    AxumState(state): AxumState<Shared>,
    Path(sweep_run_id): Path<String>,
    Query(query): Query<BestQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = unauthorised(&state, &headers) {
        return refused;
    }
    let runs = state.runs.lock().expect("runs lock");
    let Some(run) = runs.get(&sweep_run_id) else {
        return detail(StatusCode::NOT_FOUND, "Sweep run not found");
    };
    if let Some(ticker) = &query.ticker
        && !ticker.eq_ignore_ascii_case(&run.ticker)
    {
        return detail(
            StatusCode::NOT_FOUND,
            &format!("No results for ticker {ticker} in this sweep run"),
        );
    }
    let limit = query
        .limit
        .unwrap_or(run.results.len())
        .min(run.results.len());
    Json(json!({
        "sweep_run_id": sweep_run_id,
        "ticker": run.ticker,
        "results": &run.results[..limit],
        "total_results": run.results.len(),
        "returned": limit,
        "query_timestamp": Timestamp::now().to_rfc3339(),
    }))
    .into_response()
}

fn has_session(state: &State, headers: &HeaderMap) -> bool {
    let cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("session="));
    let sessions = state.sessions.lock().expect("sessions lock");
    cookies
        .into_iter()
        .any(|session| sessions.contains(session))
}

/// `GET /sse-proxy/jobs/{job_id}/stream`: the job's latest event, then each
/// new one, until it is done or failed.
async fn stream_job(
    AxumState(state): AxumState<Shared>,
    Path(job_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !has_session(&state, &headers)
        && let Some(refused) = unauthorised(&state, &headers)
    {
        return refused;
    }
    let (first, receiver) = {
        let jobs = state.jobs.lock().expect("jobs lock");
        let Some(job) = jobs.get(&job_id) else {
            return detail(StatusCode::NOT_FOUND, "Job not found");
        };
        (job.last.clone(), job.events.subscribe())
    };
    Sse::new(events(first, receiver))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn events(
    first: SimEvent,
    receiver: broadcast::Receiver<SimEvent>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // (the next event to send, the receiver; None once the last was sent)
    stream::unfold(Some((Some(first), receiver)), |state| async move {
        let (pending, mut receiver) = state?;
        let event = match pending {
            Some(event) => event,
            None => loop {
                match receiver.recv().await {
                    Ok(event) => break event,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
        };
        let data = serde_json::to_string(&event).expect("events serialise");
        let next = (!event.is_final()).then_some((None, receiver));
        Some((Ok(Event::default().data(data)), next))
    })
}

async fn read_knobs(AxumState(state): AxumState<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = unauthorised(&state, &headers) {
        return refused;
    }
    Json(state.knobs()).into_response()
}

/// `PUT /_sim/knobs`: the simulator's behaviour for the sweeps accepted
/// from now on.
async fn write_knobs(
    AxumState(state): AxumState<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = unauthorised(&state, &headers) {
        return refused;
    }
    match serde_json::from_slice::<Knobs>(&body) {
        Ok(knobs) => {
            *state.knobs.lock().expect("knobs lock") = knobs.clone();
            Json(knobs).into_response()
        }
        Err(error) => detail(StatusCode::UNPROCESSABLE_ENTITY, &error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_003_form_is_read() {
        let request = read_request(&form(&[
            ("ticker", "BTC-USD"),
            ("fast_range", "[10, 20]"),
            ("slow_range", "[20, 30]"),
            ("step", "5"),
            ("min_trades", "50"),
            ("strategy_type", "SMA"),
            ("config_path", "minimum"),
            (
                "webhook_url",
                "http://webhook-receiver:3000/webhook/sweep-callback",
            ),
        ]))
        .unwrap();
        assert_eq!(request.fast_range, (10, 20));
        assert_eq!(request.slow_range, (20, 30));
        assert_eq!(request.grid_size(), 9);
        assert_eq!(request.combinations().len(), 8);
        assert_eq!(request.config_path, Some(ConfigPath::Minimum));
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = read_request(&form(&[
            ("ticker", "BTC-USD"),
            ("fast_range", "[20, 10]"),
            ("slow_range", "nope"),
            ("step", "0"),
            ("strategy_type", "RSI"),
            ("webhook_url", "ftp://x"),
        ]))
        .unwrap_err();
        let fields: Vec<&str> = errors
            .iter()
            .map(|e| e["loc"][1].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "min_trades",
                "fast_range",
                "slow_range",
                "step",
                "strategy_type",
                "webhook_url"
            ]
        );
    }
}
