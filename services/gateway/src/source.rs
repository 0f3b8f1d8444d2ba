//! Where a request comes from, named once: the `source` label of the
//! gateway's metrics, and the family of its rate limit.

use hookmesh_contracts::ci::CiPlatform;
use hookmesh_contracts::validation::StrEnum as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `/api/*` reads, authenticated by API key.
    Api,
    Buddy,
    Ci(CiPlatform),
    Providers,
    SweepTrigger,
    SweepCallback,
    Campaigns,
}

impl Source {
    /// The `source` label of the gateway's metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Buddy => "buddy",
            Self::Ci(platform) => platform.as_str(),
            Self::Providers => "providers",
            Self::SweepTrigger => "sweep-trigger",
            Self::SweepCallback => "sweep-callback",
            Self::Campaigns => "campaigns",
        }
    }

    /// Its family in `HOOKMESH_RATE_LIMITS` (the API's are per tenant, the
    /// providers' per provider).
    pub fn rate_family(self) -> &'static str {
        match self {
            Self::Api | Self::SweepTrigger | Self::Campaigns => "api",
            Self::SweepCallback => "callback",
            other => other.label(),
        }
    }
}
