//! What a send's result means for its notification: sent; a transient
//! failure (the server is down, busy or timed out), retried on the
//! backoff schedule and dead-lettered when it is used up; or a permanent
//! one (SMTP 5xx, a webhook's 4xx), dead-lettered at once, since sending
//! again can only be refused again.

use std::time::Duration;

use crate::job::next_attempt;

/// Why a notification was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// May succeed later; `after` is the receiver's own hint (Retry-After).
    Transient {
        reason: String,
        after: Option<Duration>,
    },
    /// Will be refused again.
    Permanent(String),
}

impl SendError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient {
            reason: reason.into(),
            after: None,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Transient { reason, .. } | Self::Permanent(reason) => reason,
        }
    }
}

/// What becomes of a notification after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Sent,
    Retry { delay: Duration, reason: String },
    DeadLetter { reason: String },
}

impl Decision {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Retry { .. } => "retry",
            Self::DeadLetter { .. } => "dead_letter",
        }
    }
}

/// The decision after attempt `delivered` (1 for the first) ended in
/// `result`, retrying after `delays[delivered - 1]` while there is one.
pub fn decide(result: Result<(), SendError>, delivered: u64, delays: &[Duration]) -> Decision {
    match result {
        Ok(()) => Decision::Sent,
        Err(SendError::Permanent(reason)) => Decision::DeadLetter {
            reason: format!("refused: {reason}"),
        },
        Err(SendError::Transient { reason, after }) => match next_attempt(delays, delivered) {
            Some(delay) => Decision::Retry {
                // The receiver's hint wins when longer, within reason.
                delay: after.map_or(delay, |after| after.clamp(delay, delay * 8)),
                reason,
            },
            None => Decision::DeadLetter {
                reason: format!("gave up after {delivered} attempts: {reason}"),
            },
        },
    }
}

/// What a webhook's answer `status` means.
pub fn classify_http(status: u16, retry_after: Option<Duration>) -> Result<(), SendError> {
    match status {
        200..=299 => Ok(()),
        408 | 425 | 429 | 500..=599 => Err(SendError::Transient {
            reason: format!("the webhook answered {status}"),
            after: retry_after,
        }),
        300..=399 => Err(SendError::Permanent(format!(
            "the webhook answered {status} (a redirect, which is not followed: configure the final address)"
        ))),
        _ => Err(SendError::Permanent(format!(
            "the webhook answered {status}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAYS: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(4)];

    #[test]
    fn transient_failures_retry_on_the_schedule_then_dead_letter() {
        let down = || Err(SendError::transient("connection refused"));
        assert_eq!(
            decide(down(), 1, &DELAYS),
            Decision::Retry {
                delay: Duration::from_secs(2),
                reason: "connection refused".to_owned()
            }
        );
        assert!(
            matches!(decide(down(), 2, &DELAYS), Decision::Retry { delay, .. } if delay == Duration::from_secs(4))
        );
        assert_eq!(
            decide(down(), 3, &DELAYS),
            Decision::DeadLetter {
                reason: "gave up after 3 attempts: connection refused".to_owned()
            }
        );
    }

    #[test]
    fn permanent_failures_dead_letter_at_once() {
        let refused = Err(SendError::Permanent(
            "535 5.7.8 authentication failed".to_owned(),
        ));
        assert_eq!(
            decide(refused, 1, &DELAYS),
            Decision::DeadLetter {
                reason: "refused: 535 5.7.8 authentication failed".to_owned()
            }
        );
        assert_eq!(decide(Ok(()), 1, &DELAYS), Decision::Sent);
    }

    #[test]
    fn webhook_answers_are_classified() {
        assert_eq!(classify_http(200, None), Ok(()));
        assert!(matches!(
            classify_http(503, None),
            Err(SendError::Transient { .. })
        ));
        assert!(matches!(
            classify_http(429, None),
            Err(SendError::Transient { .. })
        ));
        assert!(matches!(
            classify_http(404, None),
            Err(SendError::Permanent(_))
        ));
        assert!(matches!(
            classify_http(400, None),
            Err(SendError::Permanent(_))
        ));
        assert!(matches!(
            classify_http(302, None),
            Err(SendError::Permanent(_))
        ));
        // Retry-After lengthens the wait, bounded.
        let busy = Err(SendError::Transient {
            reason: "429".to_owned(),
            after: Some(Duration::from_secs(3600)),
        });
        assert_eq!(
            decide(busy, 1, &DELAYS),
            Decision::Retry {
                delay: Duration::from_secs(16),
                reason: "429".to_owned()
            }
        );
    }
}
