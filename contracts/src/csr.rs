//! What the CSR platform produces from buddy events (seed 002): journey
//! transitions (published on `csr.journey.<stage>`), and the answers of its
//! read API (`GET /api/csr/metrics`, `GET /api/csr/participants/{id}/journey`,
//! served over NATS request/reply).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::envelope::{EventData, SchemaId};
use crate::str_enum;
use crate::tenant::{TenantId, tenant_id};
use crate::timestamp::Timestamp;
use crate::validation::{
    Object, StrEnum as _, ValidationErrors, identifier, parse_object, timestamp, variant,
};

str_enum! {
    /// A participant's stage in a program. Stages only move forward, by
    /// [`JourneyStage::rank`]; `completed` and `churned` are terminal.
    pub enum JourneyStage {
        /// Signed up (`buddy.participant.enrolled`).
        Enrolled = "enrolled",
        /// Paired with a buddy or newcomer (`buddy.match.created`).
        Matched = "matched",
        /// Took part: a check-in, event, feedback or milestone.
        Active = "active",
        /// Left: a match of theirs ended `cancelled` or `expired`.
        Churned = "churned",
        /// Finished: a match ended `completed`, or the `program_completed`
        /// milestone.
        Completed = "completed",
    }
}

impl JourneyStage {
    /// Position in the forward order. `completed` ranks above `churned`, so a
    /// participant who finished one match and saw another cancelled has
    /// completed, whatever order the events arrive in.
    pub fn rank(self) -> u8 {
        match self {
            Self::Enrolled => 1,
            Self::Matched => 2,
            Self::Active => 3,
            Self::Churned => 4,
            Self::Completed => 5,
        }
    }

    pub fn from_rank(rank: u8) -> Option<Self> {
        Self::VARIANTS
            .iter()
            .map(|(_, stage)| *stage)
            .find(|stage| stage.rank() == rank)
    }

    /// The later of two stages.
    pub fn max(self, other: Self) -> Self {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// A participant reached a new journey stage; the payload of
/// `csr.journey.<stage>`, published once per participant, program and stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JourneyTransition {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub participant_id: String,
    pub stage: JourneyStage,
    /// The stage before, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_stage: Option<JourneyStage>,
    /// The buddy event that moved the participant.
    pub event_id: String,
    /// When that event happened.
    pub at: Timestamp,
}

impl EventData for JourneyTransition {
    const SCHEMA: SchemaId = SchemaId::new("csr.journey-transition", 1);

    fn parse(value: &Value) -> Result<Self, ValidationErrors> {
        parse_object(value, |o: &mut Object<'_>| {
            let tenant_id = o.required("tenant_id", tenant_id);
            let program_id = o.required("program_id", identifier(128));
            let participant_id = o.required("participant_id", identifier(128));
            let stage = o.required("stage", variant);
            let from_stage = o.optional("from_stage", variant);
            let event_id = o.required("event_id", identifier(256));
            let at = o.required("at", timestamp);
            Some(Self {
                tenant_id: tenant_id?,
                program_id: program_id?,
                participant_id: participant_id?,
                stage: stage?,
                from_stage: from_stage?,
                event_id: event_id?,
                at: at?,
            })
        })
    }

    fn event_type(&self) -> &'static str {
        match self.stage {
            JourneyStage::Enrolled => "csr.journey.enrolled",
            JourneyStage::Matched => "csr.journey.matched",
            JourneyStage::Active => "csr.journey.active",
            JourneyStage::Churned => "csr.journey.churned",
            JourneyStage::Completed => "csr.journey.completed",
        }
    }
}

/// Request of `hookmesh.csr.metrics`: daily metrics of a program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MetricsQuery {
    pub tenant_id: TenantId,
    pub program_id: String,
    /// First day, `YYYY-MM-DD` (UTC).
    pub from: String,
    /// Last day, inclusive.
    pub to: String,
}

/// One day of a program's metrics. Days are UTC.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DailyMetrics {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Matches created on or before the day and not ended before it.
    pub active_matches: u64,
    pub new_matches: u64,
    pub ended_matches: u64,
    /// Check-ins completed that day.
    pub checkins: u64,
    /// Participants' attendances at events that day.
    pub event_attendance: u64,
    pub volunteer_hours: f64,
    pub feedback_count: u64,
    /// Mean rating of the day's feedback; absent without feedback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_feedback: Option<f64>,
    /// Participants enrolled on or before the day.
    pub enrolled: u64,
    /// Enrolled participants with a check-in, event, feedback or milestone in
    /// the 30 days ending that day.
    pub active_participants: u64,
    /// `active_participants ÷ enrolled`; absent while nobody is enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_rate: Option<f64>,
}

/// Answer of `hookmesh.csr.metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MetricsReport {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub from: String,
    pub to: String,
    pub days: Vec<DailyMetrics>,
}

/// Request of `hookmesh.csr.journey`: a participant's journeys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JourneyQuery {
    pub tenant_id: TenantId,
    pub participant_id: String,
}

/// One recorded move of a participant's journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JourneyStep {
    pub stage: JourneyStage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_stage: Option<JourneyStage>,
    pub at: Timestamp,
}

/// A participant's journey in one program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ProgramJourney {
    pub program_id: String,
    pub stage: JourneyStage,
    pub steps: Vec<JourneyStep>,
}

/// Answer of `hookmesh.csr.journey`; no programs means an unknown participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JourneyReport {
    pub tenant_id: TenantId,
    pub participant_id: String,
    pub programs: Vec<ProgramJourney>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_only_move_forward_and_completed_beats_churned() {
        use JourneyStage::*;
        assert_eq!(Enrolled.max(Active), Active);
        assert_eq!(Active.max(Matched), Active);
        assert_eq!(Churned.max(Active), Churned);
        assert_eq!(Churned.max(Completed), Completed);
        assert_eq!(Completed.max(Churned), Completed);
        for (_, stage) in JourneyStage::VARIANTS {
            assert_eq!(JourneyStage::from_rank(stage.rank()), Some(*stage));
        }
    }
}
