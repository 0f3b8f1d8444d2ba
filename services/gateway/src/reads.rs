//! Reads answered by the service that owns the data, over the NATS
//! services API (request/reply), never by reaching into its tables; and
//! the registry of sweep jobs, which the sweep-worker keeps with the
//! gateway.

use bytes::Bytes;
use hookmesh_contracts::ValidationErrors;
use hookmesh_contracts::sweep_jobs::{JobId, RecordedJob};

use crate::Gateway;
use crate::broker::AskError;
use crate::error::Rejection;
use crate::trace::TraceContext;

/// A service's answer as `T`; an answer that is not one is the service
/// misbehaving, so the caller is told to come back (503).
pub fn read_answer<T: serde::de::DeserializeOwned>(
    service: &str,
    answer: &[u8],
) -> Result<T, Rejection> {
    serde_json::from_slice(answer).map_err(|e| {
        Rejection::ServiceUnavailable(format!("the {service} service answered unreadably: {e}"))
    })
}

impl Gateway {
    /// Asks `service` (named for messages) at `subject`, mapping its
    /// refusals and absence to the gateway's.
    pub async fn ask(
        &self,
        service: &str,
        subject: &'static str,
        request: &impl serde::Serialize,
        trace: &TraceContext,
    ) -> Result<Bytes, Rejection> {
        let request = serde_json::to_vec(request).expect("queries serialise");
        self.broker
            .ask(subject, request.into(), trace)
            .await
            .map_err(|error| match error {
                AskError::Refused { code: 400, status } => {
                    Rejection::Invalid(ValidationErrors::single("query", status))
                }
                AskError::Refused { code: 404, status } => Rejection::NotFound(status),
                AskError::Refused { status, .. } => Rejection::ServiceUnavailable(format!(
                    "the {service} service could not answer: {status}"
                )),
                absent => Rejection::ServiceUnavailable(format!("the {service} service {absent}")),
            })
    }

    /// Asks as [`Gateway::ask`] and reads the answer as `T`.
    pub async fn ask_for<T: serde::de::DeserializeOwned>(
        &self,
        service: &str,
        subject: &'static str,
        request: &impl serde::Serialize,
        trace: &TraceContext,
    ) -> Result<T, Rejection> {
        read_answer(service, &self.ask(service, subject, request, trace).await?)
    }

    /// A sweep job in the registry.
    pub async fn recorded_job(&self, job_id: &JobId) -> Result<Option<RecordedJob>, Rejection> {
        let unavailable = |e: &dyn std::fmt::Display| Rejection::ServiceUnavailable(e.to_string());
        let registry = self.broker.jobs().await.map_err(|e| unavailable(&e))?;
        registry.get(job_id).await.map_err(|e| unavailable(&e))
    }

    /// Records an accepted job, so that its status can be shown and its
    /// callback accepted before the sweep-worker has taken it. Best effort:
    /// the sweep-worker records it too when it does.
    pub async fn record_job(&self, job_id: &JobId, job: &RecordedJob) {
        let recorded = async { self.broker.jobs().await?.record(job_id, job).await };
        if let Err(error) = recorded.await {
            tracing::warn!(%job_id, %error, "Could not record an accepted job; the sweep-worker will.");
        }
    }
}
