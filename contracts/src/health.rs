//! Liveness (`GET /health`), in seed 003's format, the same for every
//! service.

use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;

/// `{status, version, timestamp}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub timestamp: String,
}

impl Health {
    /// The process answers.
    pub fn healthy() -> Self {
        Self {
            status: "healthy".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            timestamp: Timestamp::now().to_rfc3339(),
        }
    }
}
