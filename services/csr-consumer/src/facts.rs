//! What one buddy event says, as rows to record and journey stages to reach.
//!
//! Metrics are computed from these facts when asked for (see
//! [`crate::report`]), not kept as running counters. Each fact has a natural
//! key (a match id, a check-in id, an event and participant), so recording
//! it twice is a no-op and recording facts in any order gives the same
//! tables. That makes the numbers exact under duplicates and reordering by
//! construction.
//!
//! Journey rules (each event implies a stage for each participant it names;
//! a participant's stage is the highest implied, by [`JourneyStage::rank`]):
//!
//! | event | implies |
//! |---|---|
//! | `buddy.participant.enrolled` | `enrolled` |
//! | `buddy.match.created` | `matched`, for buddy and newcomer |
//! | `buddy.checkin.completed` | `active`, for buddy and newcomer |
//! | `buddy.event.attended`, `buddy.feedback.submitted` | `active` |
//! | `buddy.milestone.reached` | `completed` for `program_completed`, else `active` |
//! | `buddy.match.ended` `completed` | `completed`, for both |
//! | `buddy.match.ended` `cancelled` or `expired` | `churned`, for both |

use hookmesh_contracts::buddy::{BuddyEventData, BuddyEventType, MatchEndReason};
use hookmesh_contracts::csr::JourneyStage;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::{TenantId, Timestamp};

/// The milestone that completes a participant's journey.
pub const PROGRAM_COMPLETED: &str = "program_completed";

/// Kinds of participant activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActivityKind {
    Checkin,
    Attendance,
    Feedback,
    Milestone,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkin => "checkin",
            Self::Attendance => "attendance",
            Self::Feedback => "feedback",
            Self::Milestone => "milestone",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Checkin,
            Self::Attendance,
            Self::Feedback,
            Self::Milestone,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// One participant's part in an activity.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub kind: ActivityKind,
    /// The check-in, event, feedback or milestone it belongs to.
    pub activity_id: String,
    pub participant_id: String,
    /// Volunteer hours (event attendance), else 0.
    pub hours: f64,
    /// Feedback rating, 1–5.
    pub rating: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchFact {
    pub match_id: String,
    pub buddy_id: String,
    pub newcomer_id: String,
}

/// Everything one event contributes.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFacts {
    pub tenant_id: TenantId,
    pub program_id: String,
    pub event_id: String,
    pub event_type: BuddyEventType,
    pub occurred_at: Timestamp,
    /// The UTC day of `occurred_at`, `YYYY-MM-DD`.
    pub day: String,
    pub enrollment: Option<(String, &'static str)>,
    pub match_created: Option<MatchFact>,
    pub match_ended: Option<(MatchFact, MatchEndReason)>,
    pub activities: Vec<Activity>,
    /// Journey stage implied for each participant the event names.
    pub stages: Vec<(String, JourneyStage)>,
}

/// The UTC day of an instant, `YYYY-MM-DD`.
pub fn day_of(at: Timestamp) -> String {
    at.as_offset_date_time().date().to_string()
}

/// The facts of event `event_id` that happened at `occurred_at`.
pub fn facts(event_id: &str, occurred_at: Timestamp, data: &BuddyEventData) -> EventFacts {
    use BuddyEventData as E;
    let mut facts = EventFacts {
        tenant_id: data.tenant_id().clone(),
        program_id: data.program_id().to_owned(),
        event_id: event_id.to_owned(),
        event_type: data.event_type(),
        occurred_at,
        day: day_of(occurred_at),
        enrollment: None,
        match_created: None,
        match_ended: None,
        activities: Vec::new(),
        stages: Vec::new(),
    };
    let activity = |kind, activity_id: &str, participant_id: &str| Activity {
        kind,
        activity_id: activity_id.to_owned(),
        participant_id: participant_id.to_owned(),
        hours: 0.0,
        rating: None,
    };
    match data {
        E::ParticipantEnrolled(e) => {
            facts.enrollment = Some((e.participant_id.clone(), e.role.as_str()));
            facts
                .stages
                .push((e.participant_id.clone(), JourneyStage::Enrolled));
        }
        E::MatchCreated(e) => {
            facts.match_created = Some(MatchFact {
                match_id: e.match_id.clone(),
                buddy_id: e.buddy_id.clone(),
                newcomer_id: e.newcomer_id.clone(),
            });
            facts
                .stages
                .push((e.buddy_id.clone(), JourneyStage::Matched));
            facts
                .stages
                .push((e.newcomer_id.clone(), JourneyStage::Matched));
        }
        E::MatchEnded(e) => {
            let stage = match e.reason {
                MatchEndReason::Completed => JourneyStage::Completed,
                MatchEndReason::Cancelled | MatchEndReason::Expired => JourneyStage::Churned,
            };
            facts.match_ended = Some((
                MatchFact {
                    match_id: e.match_id.clone(),
                    buddy_id: e.buddy_id.clone(),
                    newcomer_id: e.newcomer_id.clone(),
                },
                e.reason,
            ));
            facts.stages.push((e.buddy_id.clone(), stage));
            facts.stages.push((e.newcomer_id.clone(), stage));
        }
        E::CheckinCompleted(e) => {
            for participant in [&e.buddy_id, &e.newcomer_id] {
                facts
                    .activities
                    .push(activity(ActivityKind::Checkin, &e.checkin_id, participant));
                facts
                    .stages
                    .push((participant.clone(), JourneyStage::Active));
            }
        }
        E::EventAttended(e) => {
            facts.activities.push(Activity {
                hours: e.hours,
                ..activity(ActivityKind::Attendance, &e.event_id, &e.participant_id)
            });
            facts
                .stages
                .push((e.participant_id.clone(), JourneyStage::Active));
        }
        E::FeedbackSubmitted(e) => {
            facts.activities.push(Activity {
                rating: Some(e.rating),
                ..activity(ActivityKind::Feedback, &e.feedback_id, &e.participant_id)
            });
            facts
                .stages
                .push((e.participant_id.clone(), JourneyStage::Active));
        }
        E::MilestoneReached(e) => {
            facts.activities.push(activity(
                ActivityKind::Milestone,
                &e.milestone,
                &e.participant_id,
            ));
            let stage = if e.milestone == PROGRAM_COMPLETED {
                JourneyStage::Completed
            } else {
                JourneyStage::Active
            };
            facts.stages.push((e.participant_id.clone(), stage));
        }
    }
    facts
}

#[cfg(test)]
mod tests {
    use hookmesh_contracts::buddy::BuddyWebhookEvent;
    use serde_json::json;

    use super::*;

    fn facts_of(event_type: &str, data: serde_json::Value) -> EventFacts {
        let event = BuddyWebhookEvent::parse(&json!({
            "id": "e-1", "type": event_type, "timestamp": "2025-11-14T23:30:00+00:00", "data": data
        }))
        .unwrap();
        facts(&event.id, event.timestamp, &event.payload)
    }

    #[test]
    fn a_checkin_is_an_activity_of_both_participants() {
        let facts = facts_of(
            "buddy.checkin.completed",
            json!({"tenant_id": "acme", "program_id": "p", "match_id": "m", "checkin_id": "c-1",
                   "buddy_id": "b", "newcomer_id": "n", "duration_minutes": 30, "channel": "video"}),
        );
        assert_eq!(facts.day, "2025-11-14");
        let participants: Vec<_> = facts
            .activities
            .iter()
            .map(|a| a.participant_id.as_str())
            .collect();
        assert_eq!(participants, ["b", "n"]);
        assert!(facts.activities.iter().all(|a| a.activity_id == "c-1"));
        assert_eq!(
            facts.stages,
            [
                ("b".to_owned(), JourneyStage::Active),
                ("n".to_owned(), JourneyStage::Active)
            ]
        );
    }

    #[test]
    fn match_endings_complete_or_churn_both_sides() {
        let ended = |reason| {
            facts_of(
                "buddy.match.ended",
                json!({"tenant_id": "acme", "program_id": "p", "match_id": "m", "buddy_id": "b",
                       "newcomer_id": "n", "reason": reason, "duration_days": 30}),
            )
        };
        assert!(
            ended("completed")
                .stages
                .iter()
                .all(|(_, s)| *s == JourneyStage::Completed)
        );
        assert!(
            ended("expired")
                .stages
                .iter()
                .all(|(_, s)| *s == JourneyStage::Churned)
        );
    }

    #[test]
    fn the_program_completed_milestone_completes_the_journey() {
        let milestone = |name| {
            facts_of(
                "buddy.milestone.reached",
                json!({"tenant_id": "acme", "program_id": "p", "participant_id": "n", "milestone": name}),
            )
            .stages[0]
                .1
        };
        assert_eq!(milestone("program_completed"), JourneyStage::Completed);
        assert_eq!(milestone("first_month"), JourneyStage::Active);
    }
}

/// Any order and any duplication of a program's events records the same
/// journeys and the same daily metrics: facts are keyed as the store keys
/// them (the event id once, each activity by kind, id and participant, a
/// journey moving to a higher rank only).
#[cfg(test)]
mod properties {
    use std::collections::{BTreeMap, BTreeSet};

    use hookmesh_contracts::buddy::BuddyWebhookEvent;
    use hookmesh_runtime::redelivery::redelivered;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::report::{ActivityRow, ProgramFacts, daily_metrics, parse_day};

    /// A program's events: participant `p0…p3`, buddies matched in pairs.
    /// An attendance or milestone reported by several events keeps the time
    /// first recorded (the store's `ON CONFLICT DO NOTHING`), so here such
    /// events agree on their day, as a producer's resends do.
    fn event(n: usize, kind: u8, who: usize, day: u8) -> BuddyWebhookEvent {
        let day = if matches!(kind % 7, 4 | 6) {
            ((n % 2) * 4 + who % 4) as u8 % 6
        } else {
            day
        };
        let (buddy, newcomer) = (format!("p{}", who % 4), format!("p{}", (who + 1) % 4));
        let common = json!({"tenant_id": "acme", "program_id": "prog"});
        let reason = ["completed", "cancelled", "expired"][n % 3];
        let milestone = if n % 2 == 0 {
            PROGRAM_COMPLETED
        } else {
            "first_month"
        };
        let rating = 1 + (n % 5);
        let mut data = match kind % 7 {
            0 => json!({"participant_id": buddy, "role": "buddy"}),
            1 => json!({"match_id": format!("m{who}"), "buddy_id": buddy, "newcomer_id": newcomer}),
            2 => {
                json!({"match_id": format!("m{who}"), "checkin_id": format!("c{n}"), "buddy_id": buddy,
                        "newcomer_id": newcomer, "duration_minutes": 30, "channel": "video"})
            }
            3 => json!({"match_id": format!("m{who}"), "buddy_id": buddy, "newcomer_id": newcomer,
                        "reason": reason, "duration_days": 30}),
            4 => json!({"event_id": format!("ev{}", n % 2), "participant_id": buddy, "hours": 1.5}),
            5 => {
                json!({"feedback_id": format!("f{n}"), "participant_id": newcomer, "rating": rating})
            }
            _ => json!({"participant_id": newcomer, "milestone": milestone}),
        };
        let event_type = [
            "buddy.participant.enrolled",
            "buddy.match.created",
            "buddy.checkin.completed",
            "buddy.match.ended",
            "buddy.event.attended",
            "buddy.feedback.submitted",
            "buddy.milestone.reached",
        ][usize::from(kind % 7)];
        data.as_object_mut()
            .unwrap()
            .extend(common.as_object().unwrap().clone());
        BuddyWebhookEvent::parse(&json!({
            "id": format!("e{n}"), "type": event_type,
            "timestamp": format!("2025-11-{:02}T10:00:00Z", 10 + day), "data": data
        }))
        .unwrap_or_else(|errors| panic!("{event_type}: {errors}"))
    }

    /// What the store ends with.
    #[derive(Debug, Default, PartialEq)]
    struct Recorded {
        processed: BTreeSet<String>,
        journeys: BTreeMap<String, u8>,
        activities: BTreeMap<(ActivityKind, String, String), ActivityRow>,
        enrollments: BTreeMap<String, String>,
    }

    impl Recorded {
        fn record(&mut self, event: &BuddyWebhookEvent) {
            if !self.processed.insert(event.id.clone()) {
                return;
            }
            let facts = facts(&event.id, event.timestamp, &event.payload);
            let day = parse_day(&facts.day).unwrap();
            for (participant, stage) in facts.stages {
                let rank = self.journeys.entry(participant).or_default();
                *rank = (*rank).max(stage.rank());
            }
            // The earliest enrolment stands.
            if let Some((participant, _)) = facts.enrollment {
                self.enrollments
                    .entry(participant)
                    .and_modify(|earliest| {
                        if facts.day < *earliest {
                            earliest.clone_from(&facts.day);
                        }
                    })
                    .or_insert(facts.day.clone());
            }
            for activity in facts.activities {
                let key = (
                    activity.kind,
                    activity.activity_id.clone(),
                    activity.participant_id.clone(),
                );
                self.activities.entry(key).or_insert(ActivityRow {
                    kind: activity.kind,
                    activity_id: activity.activity_id,
                    participant_id: activity.participant_id,
                    day,
                    hours: activity.hours,
                    rating: activity.rating,
                });
            }
        }

        fn metrics(&self) -> Vec<hookmesh_contracts::csr::DailyMetrics> {
            let facts = ProgramFacts {
                matches: Vec::new(),
                enrollments: self
                    .enrollments
                    .iter()
                    .map(|(participant, day)| (participant.clone(), parse_day(day).unwrap()))
                    .collect(),
                activities: self.activities.values().cloned().collect(),
            };
            daily_metrics(
                &facts,
                parse_day("2025-11-10").unwrap(),
                parse_day("2025-11-16").unwrap(),
            )
        }
    }

    /// Events, and the same events with repeats, shuffled.
    fn program() -> impl Strategy<Value = (Vec<BuddyWebhookEvent>, Vec<BuddyWebhookEvent>)> {
        proptest::collection::vec((any::<u8>(), 0usize..4, 0u8..6), 1..16).prop_flat_map(|specs| {
            let events: Vec<_> = specs
                .iter()
                .enumerate()
                .map(|(n, (kind, who, day))| event(n, *kind, *who, *day))
                .collect();
            (Just(events.clone()), redelivered(events, 16))
        })
    }

    proptest! {
        #[test]
        fn any_order_and_duplication_records_the_same((events, redelivered) in program()) {
            let mut once = Recorded::default();
            for event in &events {
                once.record(event);
            }
            let mut again = Recorded::default();
            for event in &redelivered {
                again.record(event);
            }
            prop_assert_eq!(&once, &again);
            prop_assert_eq!(once.metrics(), again.metrics());
        }
    }
}
