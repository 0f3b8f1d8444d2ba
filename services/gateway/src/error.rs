//! Every way the gateway refuses a request, mapped to an HTTP answer in this
//! one place (seed 002's status-code contract).
//!
//! The body is always JSON: `{"error": <code>, "message": <why>, "fields":
//! [{"field", "message"}]?, "retry_after_seconds"?}`. 503 and 429 carry
//! `Retry-After`. Nothing internal (hosts, secrets, stack traces) is sent.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookmesh_contracts::{FieldError, ValidationErrors};
use serde::Serialize;

use crate::publish::PublishError;
use crate::verify::AuthError;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// Authenticated, but not allowed this (a tenant key on an operator route).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("the body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("rate limit of this source exceeded; retry in {} s", retry_after_seconds(*.retry_after))]
    RateLimited { retry_after: Duration },
    #[error(transparent)]
    BodyTimedOut(#[from] crate::server::BodyTimedOut),
    #[error("the body is not valid JSON")]
    Malformed(ValidationErrors),
    #[error("the payload failed validation")]
    Invalid(ValidationErrors),
    /// An `Idempotency-Key` already used with a different request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{0}")]
    Unavailable(#[from] PublishError),
    /// A service the gateway asks for reads is not answering.
    #[error("{0}")]
    ServiceUnavailable(String),
}

/// Seconds to put in `Retry-After` when the broker is unavailable.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Whole seconds, rounded up, at least one.
fn retry_after_seconds(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<&'a [FieldError]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
}

/// Left on a refused response so the request log can say why.
#[derive(Debug, Clone)]
pub struct RefusalNote {
    pub code: &'static str,
    pub message: String,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BodyTimedOut(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Malformed(_) | Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::IdempotencyKeyReused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(PublishError::TooLarge) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) | Self::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } | Self::Unavailable(PublishError::TooLarge) => {
                "payload_too_large"
            }
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::BodyTimedOut(_) => "body_timeout",
            Self::Malformed(_) => "malformed_json",
            Self::Invalid(_) => "invalid_payload",
            Self::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Self::Unavailable(_) => "broker_unavailable",
            Self::ServiceUnavailable(_) => "service_unavailable",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => Some(retry_after_seconds(*retry_after)),
            Self::Unavailable(PublishError::TooLarge) => None,
            Self::Unavailable(_) | Self::ServiceUnavailable(_) => {
                Some(UNAVAILABLE_RETRY_AFTER.as_secs())
            }
            _ => None,
        }
    }

    fn fields(&self) -> Option<&[FieldError]> {
        match self {
            Self::Malformed(errors) | Self::Invalid(errors) => Some(errors.errors()),
            _ => None,
        }
    }
}

/// The JSON error object, for answers written below the router (the
/// connection loop's 503 and hyper's protocol errors).
pub fn error_json(code: &'static str, message: &str, retry_after_seconds: Option<u64>) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        error: code,
        message: message.to_owned(),
        fields: None,
        retry_after_seconds,
    })
    .expect("the error object serialises")
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after();
        let message = match &self {
            Self::Malformed(errors) | Self::Invalid(errors) => format!("{self}: {errors}"),
            _ => self.to_string(),
        };
        let body = ErrorBody {
            error: self.code(),
            message: message.clone(),
            fields: self.fields(),
            retry_after_seconds: retry_after,
        };
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if matches!(self, Self::BodyTimedOut(_)) {
            // The rest of the body may still be on its way: the connection
            // cannot carry another request.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.extensions_mut().insert(RefusalNote {
            code: self.code(),
            message,
        });
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn each_refusal_has_its_status() {
        let cases = [
            (
                Rejection::Unauthorized(AuthError::MissingHeader("X")),
                StatusCode::UNAUTHORIZED,
            ),
            (
                Rejection::PayloadTooLarge { limit: 1 },
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (
                Rejection::UnsupportedMediaType(String::new()),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            (
                Rejection::RateLimited {
                    retry_after: Duration::from_secs(1),
                },
                StatusCode::TOO_MANY_REQUESTS,
            ),
            (
                Rejection::Invalid(ValidationErrors::single("a", "b")),
                StatusCode::BAD_REQUEST,
            ),
            (
                Rejection::Unavailable(PublishError::Disconnected),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (rejection, status) in cases {
            let response = rejection.into_response();
            assert_eq!(response.status(), status);
            let needs_retry_after = matches!(status.as_u16(), 429 | 503);
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                needs_retry_after
            );
        }
    }
}
