//! Reads answered by the service that owns the data, over the NATS
//! services API (request/reply), never by reaching into its tables.

use std::time::Duration;

use async_nats::service::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use hookmesh_contracts::ValidationErrors;

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
    request: Vec<u8>,
    trace: &TraceContext,
) -> Result<Bytes, Rejection> {
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
