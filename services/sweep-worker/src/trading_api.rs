//! The Trading API client, to seed 003's contract: health check, sweep
//! submission (form-encoded, `X-API-Key`), best results, and the SSE job
//! stream (after a login for its session cookie), which serves both to
//! poll a sweep's state and to follow its progress.

use std::time::{Duration, Instant};
use tracing::Instrument as _;

use hookmesh_contracts::ValidationErrors;
use hookmesh_contracts::sweep::{BestResults, SweepTrigger};
use hookmesh_contracts::validation::StrEnum as _;
use serde_json::Value;

use crate::job::RemoteState;
use crate::telemetry::{SweepMetrics, endpoint};

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("the Trading API is unreachable: {0}")]
    Unreachable(String),
    #[error("the Trading API answered {status}: {detail}")]
    Status { status: u16, detail: String },
    #[error("the Trading API answered unreadably: {0}")]
    Unreadable(String),
    #[error("the Trading API reports its health as {0}")]
    Unhealthy(String),
    /// A configuration fault, not an outage: retrying cannot help.
    #[error("the Trading API cannot be used as configured: {0}")]
    Redirected(String),
}

impl ApiError {
    /// Whether trying again later could help: the API is away or
    /// overloaded, not refusing the request itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Unreadable(_) | Self::Unhealthy(_) => true,
            Self::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
            Self::Redirected(_) => false,
        }
    }
}

/// The accepted submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The Trading API's id of the sweep (`sweep_20250127_103045_btcusd`).
    pub job_id: String,
}

/// A progress event of the job stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub percent: u32,
    pub message: String,
}

/// A client of one Trading API.
#[derive(Debug, Clone)]
pub struct TradingApi {
    base: String,
    key: String,
    http: reqwest::Client,
    stream_http: reqwest::Client,
    metrics: SweepMetrics,
}

/// Escapes a path segment or query value (RFC 3986 unreserved kept).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `detail` of a FastAPI error body, or the start of the body.
fn detail_of(body: &str) -> String {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("detail").cloned())
        .map(|d| match d {
            Value::String(text) => text,
            other => other.to_string(),
        })
        .unwrap_or_else(|| body.trim().to_owned());
    detail.chars().take(500).collect()
}

impl TradingApi {
    /// `timeout` bounds every call but the job stream's.
    pub fn new(
        base_url: &str,
        api_key: &str,
        timeout: Duration,
        metrics: SweepMetrics,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            base: base_url.trim_end_matches('/').to_owned(),
            key: api_key.to_owned(),
            http: hookmesh_runtime::http::client_builder()
                .timeout(timeout)
                .build()?,
            stream_http: hookmesh_runtime::http::client_builder()
                .connect_timeout(timeout)
                .build()?,
            metrics,
        })
    }

    /// The API's address as logs show it: without credentials.
    pub fn base_url(&self) -> String {
        hookmesh_contracts::redact::url(&self.base)
    }

    /// Sends `request`, timing it under `endpoint`; non-2xx answers become
    /// [`ApiError::Status`].
    async fn call(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let started = Instant::now();
        // The request's own client: the progress stream has another.
        let (client, request) = request.header("X-API-Key", &self.key).build_split();
        let request =
            request.map_err(|error| ApiError::Unreachable(error.without_url().to_string()))?;
        let span = hookmesh_nats::trace::http_client_span(
            endpoint,
            request.method().as_str(),
            request.url().as_str(),
        );
        let sent = client.execute(request).instrument(span.clone()).await;
        if let Ok(response) = &sent {
            span.record(
                "http.response.status_code",
                i64::from(response.status().as_u16()),
            );
        }
        let result = match sent {
            Err(error) => Err(ApiError::Unreachable(error.without_url().to_string())),
            Ok(response) if response.status().is_success() => Ok(response),
            Ok(response) if response.status().is_redirection() => Err(ApiError::Redirected(
                hookmesh_runtime::http::refused_redirect(&response).unwrap_or_default(),
            )),
            Ok(response) => {
                let status = response.status().as_u16();
                let body = response.text().await.unwrap_or_default();
                Err(ApiError::Status {
                    status,
                    detail: detail_of(&body),
                })
            }
        };
        self.metrics
            .api_call(endpoint, started.elapsed().as_secs_f64(), result.is_ok());
        result
    }

    async fn json(response: reqwest::Response) -> Result<Value, ApiError> {
        let body = response
            .bytes()
            .await
            .map_err(|e| ApiError::Unreachable(e.without_url().to_string()))?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Unreadable(e.to_string()))
    }

    /// `GET /health`: 2xx with `status: healthy`.
    pub async fn health(&self) -> Result<(), ApiError> {
        let response = self
            .call(
                endpoint::HEALTH,
                self.http.get(format!("{}/health", self.base)),
            )
            .await?;
        let body = Self::json(response).await?;
        match body.get("status").and_then(Value::as_str) {
            Some("healthy") => Ok(()),
            other => Err(ApiError::Unhealthy(other.unwrap_or("missing").to_owned())),
        }
    }

    /// `POST /api/v1/strategy/sweep` with 003's form fields.
    pub async fn submit(
        &self,
        trigger: &SweepTrigger,
        webhook_url: &str,
    ) -> Result<Submitted, ApiError> {
        let range =
            |r: hookmesh_contracts::sweep::PeriodRange| format!("[{}, {}]", r.min(), r.max());
        let mut form = vec![
            ("ticker", trigger.ticker.clone()),
            ("fast_range", range(trigger.fast_range)),
            ("slow_range", range(trigger.slow_range)),
            ("step", trigger.step.to_string()),
            ("min_trades", trigger.min_trades.to_string()),
            ("strategy_type", trigger.strategy_type.as_str().to_owned()),
            ("webhook_url", webhook_url.to_owned()),
        ];
        if let Some(path) = trigger.config_path {
            form.push(("config_path", path.as_str().to_owned()));
        }
        let request = self
            .http
            .post(format!("{}/api/v1/strategy/sweep", self.base))
            .form(&form);
        let body = Self::json(self.call(endpoint::SWEEP, request).await?).await?;
        match body.get("job_id").and_then(Value::as_str) {
            Some(job_id) if !job_id.is_empty() => Ok(Submitted {
                job_id: job_id.to_owned(),
            }),
            _ => Err(ApiError::Unreadable(
                "the sweep was accepted without a job_id".to_owned(),
            )),
        }
    }

    /// `GET /api/v1/sweeps/{sweep_run_id}/best?ticker=`: every result, best
    /// score first.
    pub async fn best(&self, sweep_run_id: &str, ticker: &str) -> Result<BestResults, ApiError> {
        let request = self
            .http
            .get(format!(
                "{}/api/v1/sweeps/{}/best",
                self.base,
                escape(sweep_run_id)
            ))
            .query(&[("ticker", ticker)]);
        let body = Self::json(self.call(endpoint::BEST, request).await?).await?;
        BestResults::parse(&body)
            .map_err(|errors: ValidationErrors| ApiError::Unreadable(errors.to_string()))
    }

    /// `POST /api/v1/auth/login`: the session cookie the job stream wants.
    async fn session_cookie(&self) -> Option<String> {
        let request = self
            .http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&serde_json::json!({ "api_key": self.key }));
        let response = self.call(endpoint::LOGIN, request).await.ok()?;
        response
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(|cookie| cookie.split(';').next().unwrap_or("").trim().to_owned())
            .find(|pair| pair.contains('='))
    }

    /// Opens `GET /sse-proxy/jobs/{job}/stream`.
    async fn open_stream(&self, trading_job_id: &str) -> Result<EventReader, ApiError> {
        let mut request = self
            .stream_http
            .get(format!(
                "{}/sse-proxy/jobs/{}/stream",
                self.base,
                escape(trading_job_id)
            ))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(cookie) = self.session_cookie().await {
            request = request.header(reqwest::header::COOKIE, cookie);
        }
        let response = self.call(endpoint::STREAM, request).await?;
        Ok(EventReader {
            response,
            buffer: Vec::new(),
        })
    }

    /// The sweep's state now: the first event of its job stream.
    pub async fn poll(
        &self,
        trading_job_id: &str,
        wait: Duration,
    ) -> Result<RemoteState, ApiError> {
        let first_event = async {
            let mut events = self.open_stream(trading_job_id).await?;
            events.next().await
        };
        match tokio::time::timeout(wait, first_event).await {
            Err(_) => Err(ApiError::Unreachable(format!(
                "the job stream sent nothing within {wait:?}"
            ))),
            Ok(Err(error)) => Err(error),
            Ok(Ok(None)) => Err(ApiError::Unreadable(
                "the job stream ended without an event".to_owned(),
            )),
            Ok(Ok(Some(event))) => Ok(remote_state(&event)),
        }
    }

    /// The sweep's progress events, until it is done or failed.
    pub async fn progress(&self, trading_job_id: &str) -> Result<ProgressStream, ApiError> {
        Ok(ProgressStream {
            events: Some(self.open_stream(trading_job_id).await?),
        })
    }
}

/// A sweep's progress, read from its job stream.
pub struct ProgressStream {
    events: Option<EventReader>,
}

impl std::fmt::Debug for ProgressStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProgressStream")
            .field("open", &self.events.is_some())
            .finish()
    }
}

impl ProgressStream {
    /// The next progress event; `None` once the sweep is done or failed or
    /// the stream has ended.
    pub async fn next(&mut self) -> Result<Option<Progress>, ApiError> {
        let Some(events) = &mut self.events else {
            return Ok(None);
        };
        let Some(event) = events.next().await? else {
            self.events = None;
            return Ok(None);
        };
        match remote_state(&event) {
            RemoteState::Running { percent } => Ok(Some(Progress {
                percent: percent.unwrap_or(0),
                message: event
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            })),
            RemoteState::Completed { .. } | RemoteState::Failed { .. } => {
                self.events = None;
                Ok(None)
            }
        }
    }
}

/// Reads 003's job events (`{percent, message}`, `{done, status,
/// sweep_run_id}`, `{error, message}`).
pub fn remote_state(event: &Value) -> RemoteState {
    let text = |key: &str| event.get(key).and_then(Value::as_str).map(str::to_owned);
    if event.get("error").and_then(Value::as_bool) == Some(true) {
        return RemoteState::Failed {
            message: text("message")
                .unwrap_or_else(|| "the Trading API reported an error".to_owned()),
        };
    }
    if event.get("done").and_then(Value::as_bool) == Some(true) {
        return match (text("status").as_deref(), text("sweep_run_id")) {
            (Some("completed") | None, Some(sweep_run_id)) => {
                RemoteState::Completed { sweep_run_id }
            }
            (status, _) => RemoteState::Failed {
                message: text("message").unwrap_or_else(|| {
                    format!(
                        "the Trading API reports the sweep {}",
                        status.unwrap_or("done without results")
                    )
                }),
            },
        };
    }
    RemoteState::Running {
        percent: event
            .get("percent")
            .and_then(Value::as_f64)
            .map(|p| p.clamp(0.0, 100.0) as u32),
    }
}

/// Longest job event read: a progress event is a few hundred bytes, so a
/// stream without event ends is not a Trading API.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// Server-sent events, one JSON `data` payload at a time.
struct EventReader {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventReader {
    async fn next(&mut self) -> Result<Option<Value>, ApiError> {
        loop {
            while let Some(end) = find_event_end(&self.buffer) {
                let block: Vec<u8> = self.buffer.drain(..end.0 + end.1).collect();
                let text = String::from_utf8_lossy(&block[..end.0]);
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if !data.is_empty() {
                    return serde_json::from_str(&data.join("\n"))
                        .map(Some)
                        .map_err(|e| {
                            ApiError::Unreadable(format!("a job event is not JSON: {e}"))
                        });
                }
            }
            if self.buffer.len() > MAX_EVENT_BYTES {
                return Err(ApiError::Unreadable(format!(
                    "a job event longer than {MAX_EVENT_BYTES} bytes"
                )));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => return Ok(None),
                Err(error) => return Err(ApiError::Unreachable(error.without_url().to_string())),
            }
        }
    }
}

/// Where the first event of `buffer` ends: (its length, the separator's).
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_003_event_format_is_read() {
        assert_eq!(
            remote_state(&json!({"percent": 50, "message": "Processing 5/10", "timestamp": "x"})),
            RemoteState::Running { percent: Some(50) }
        );
        assert_eq!(
            remote_state(&json!({"done": true, "status": "completed", "sweep_run_id": "run_1"})),
            RemoteState::Completed {
                sweep_run_id: "run_1".to_owned()
            }
        );
        assert_eq!(
            remote_state(&json!({"error": true, "message": "Boom", "timestamp": "x"})),
            RemoteState::Failed {
                message: "Boom".to_owned()
            }
        );
    }

    #[test]
    fn refusals_say_why_and_whether_to_retry() {
        assert_eq!(
            detail_of(r#"{"detail":"Invalid API key"}"#),
            "Invalid API key"
        );
        assert_eq!(detail_of("upstream down"), "upstream down");
        assert!(
            ApiError::Status {
                status: 503,
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(
            !ApiError::Status {
                status: 422,
                detail: String::new()
            }
            .is_retryable()
        );
        assert!(ApiError::Unreachable("refused".to_owned()).is_retryable());
    }

    #[test]
    fn events_are_split_on_blank_lines() {
        assert_eq!(find_event_end(b"data: {}\n\ndata"), Some((8, 2)));
        assert_eq!(find_event_end(b"data: {}\r\n\r\n"), Some((8, 4)));
        assert_eq!(find_event_end(b"data: {}\n"), None);
        assert_eq!(escape("run 1/2"), "run%201%2F2");
    }
}
