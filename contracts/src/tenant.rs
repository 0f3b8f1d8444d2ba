//! Tenants: the unit of isolation for jobs, metrics and reads.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A tenant id: 1–64 characters of `A–Z a–z 0–9 _ -`. No dots, so a tenant
/// can be a NATS subject token and a Prometheus label value as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct TenantId(#[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))] String);

impl TenantId {
    /// The tenant of traffic whose source carries none of its own.
    pub const DEFAULT: &'static str = "default";

    pub fn parse(text: &str) -> Result<Self, String> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if text.is_empty() || text.len() > 64 || !text.chars().all(valid_char) {
            return Err(format!(
                "must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-', not {text:?}"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn default_tenant() -> Self {
        Self(Self::DEFAULT.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Leaf parser for [`crate::validation::Object`].
pub fn tenant_id(value: &serde_json::Value) -> Result<TenantId, String> {
    match value {
        serde_json::Value::String(text) => TenantId::parse(text),
        other => Err(format!(
            "must be a tenant id string, not {}",
            crate::validation::kind_of(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_subject_and_label_safe() {
        assert!(TenantId::parse("acme-corp_1").is_ok());
        for bad in ["", "acme.corp", "acme corp", "ä", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
