//! Reads answered by the service that owns the data, over the NATS
//! services API (request/reply), never by reaching into its tables.

use std::time::Duration;

use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use hookmesh_contracts::ValidationErrors;
use hookmesh_contracts::sweep_jobs::RecordedJob;
use hookmesh_nats::definitions::SWEEP_JOBS_BUCKET;

use crate::Gateway;
use crate::error::Rejection;
use crate::trace::{CORRELATION_ID, TRACEPARENT, TraceContext};

/// Longest wait for a service's answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks `service` (named for messages) at `subject`, mapping its refusals
/// and absence to the gateway's.
pub async fn ask(
    client: &async_nats::Client,
    service: &str,
    subject: &'static str,
    request: &impl serde::Serialize,
    trace: &TraceContext,
) -> Result<Bytes, Rejection> {
    let request = serde_json::to_vec(request).expect("queries serialise");
    let mut headers = HeaderMap::new();
    headers.insert(TRACEPARENT, trace.traceparent.as_str());
    headers.insert(CORRELATION_ID, trace.correlation_id.as_str());
    let asking = client.request_with_headers(subject, headers, request.into());
    let answer = match tokio::time::timeout(READ_TIMEOUT, asking).await {
        Err(_) => {
            return Err(Rejection::ServiceUnavailable(format!(
                "the {service} service did not answer in time"
            )));
        }
        Ok(Err(error)) => {
            return Err(Rejection::ServiceUnavailable(match error.kind() {
                RequestErrorKind::NoResponders => format!("the {service} service is not running"),
                RequestErrorKind::TimedOut => {
                    format!("the {service} service did not answer in time")
                }
                _ => format!("the {service} service is unreachable"),
            }));
        }
        Ok(Ok(answer)) => answer,
    };
    let refusal = answer.headers.as_ref().and_then(|headers| {
        let code = headers
            .get(NATS_SERVICE_ERROR_CODE)?
            .as_str()
            .parse::<u16>()
            .ok()?;
        let status = headers
            .get(NATS_SERVICE_ERROR)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default();
        Some((code, status))
    });
    match refusal {
        None => Ok(answer.payload),
        Some((400, status)) => Err(Rejection::Invalid(ValidationErrors::single(
            "query", status,
        ))),
        Some((404, status)) => Err(Rejection::NotFound(status)),
        Some((_, status)) => Err(Rejection::ServiceUnavailable(format!(
            "the {service} service could not answer: {status}"
        ))),
    }
}

impl Gateway {
    async fn job_registry(&self) -> Result<&async_nats::jetstream::kv::Store, Rejection> {
        self.known_jobs
            .get_or_try_init(|| async {
                self.publisher
                    .jetstream()
                    .get_key_value(SWEEP_JOBS_BUCKET.bucket)
                    .await
            })
            .await
            .map_err(|e| registry_unavailable(&e))
    }

    /// A sweep job in the registry (KV bucket `sweep_jobs`): recorded by the
    /// gateway when it accepted the trigger, or by the sweep-worker.
    pub async fn recorded_job(&self, job_id: &str) -> Result<Option<RecordedJob>, Rejection> {
        let registry = self.job_registry().await?;
        let Some(value) = tokio::time::timeout(READ_TIMEOUT, registry.get(job_id))
            .await
            .map_err(|_| registry_unavailable(&"no answer in time"))?
            .map_err(|e| registry_unavailable(&e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|e| registry_unavailable(&format!("an unreadable entry: {e}")))
    }

    /// Records an accepted job, so that its status can be shown and its
    /// callback accepted before the sweep-worker has taken it. Best effort:
    /// the sweep-worker records it too when it does.
    pub async fn record_job(&self, job_id: &str, job: &RecordedJob) {
        let recorded = async {
            let registry = self.job_registry().await.map_err(|e| e.to_string())?;
            let value = serde_json::to_vec(job).expect("jobs serialise");
            tokio::time::timeout(READ_TIMEOUT, registry.put(job_id, value.into()))
                .await
                .map_err(|_| "no answer in time".to_owned())?
                .map_err(|e| e.to_string())
        };
        if let Err(error) = recorded.await {
            tracing::warn!(job_id, %error, "Could not record an accepted job; the sweep-worker will.");
        }
    }
}

fn registry_unavailable(error: &dyn std::fmt::Display) -> Rejection {
    Rejection::ServiceUnavailable(format!("the job registry is unreachable: {error}"))
}
