//! A program's daily metrics, computed from its facts (plain code, tested
//! without a database).
//!
//! Definitions, per UTC day D:
//! - `active_matches`: matches created on or before D and not ended before D
//!   (a match that ends on D was active that day);
//! - `new_matches`, `ended_matches`: matches created, ended on D;
//! - `checkins`: distinct check-ins on D; `event_attendance`: participants'
//!   attendances on D; `volunteer_hours`: their hours;
//! - `feedback_count`, `average_feedback`: feedback given on D, mean rating;
//! - `enrolled`: participants enrolled on or before D;
//! - `active_participants`: of those, the ones with any activity (check-in,
//!   attendance, feedback, milestone) in the 30 days ending D;
//! - `engagement_rate`: `active_participants ÷ enrolled`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hookmesh_contracts::csr::DailyMetrics;
use time::{Date, Duration};

use crate::facts::ActivityKind;

/// Days counted back for `active_participants`, the day itself included.
pub const ENGAGEMENT_WINDOW_DAYS: i64 = 30;

/// A match's life, as far as known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchSpan {
    pub created: Option<Date>,
    pub ended: Option<Date>,
}

/// One participant's part in one activity, on a day.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityRow {
    pub kind: ActivityKind,
    pub activity_id: String,
    pub participant_id: String,
    pub day: Date,
    pub hours: f64,
    pub rating: Option<u8>,
}

/// Everything the metrics of one program need. Activities from
/// `ENGAGEMENT_WINDOW_DAYS - 1` days before the first day on are enough.
#[derive(Debug, Clone, Default)]
pub struct ProgramFacts {
    pub matches: Vec<MatchSpan>,
    pub enrollments: Vec<(String, Date)>,
    pub activities: Vec<ActivityRow>,
}

/// The first day whose activities the metrics of `from` need.
pub fn window_start(from: Date) -> Date {
    from - Duration::days(ENGAGEMENT_WINDOW_DAYS - 1)
}

/// Daily metrics for every day from `from` to `to`, inclusive.
pub fn daily_metrics(facts: &ProgramFacts, from: Date, to: Date) -> Vec<DailyMetrics> {
    #[derive(Default)]
    struct DayActivity {
        checkins: BTreeSet<String>,
        attendance: u64,
        hours: f64,
        ratings: Vec<u8>,
    }
    let mut by_day: HashMap<Date, DayActivity> = HashMap::new();
    let mut active_days: BTreeMap<&str, BTreeSet<Date>> = BTreeMap::new();
    for row in &facts.activities {
        let day = by_day.entry(row.day).or_default();
        match row.kind {
            ActivityKind::Checkin => {
                day.checkins.insert(row.activity_id.clone());
            }
            ActivityKind::Attendance => {
                day.attendance += 1;
                day.hours += row.hours;
            }
            ActivityKind::Feedback => day.ratings.extend(row.rating),
            ActivityKind::Milestone => {}
        }
        active_days
            .entry(row.participant_id.as_str())
            .or_default()
            .insert(row.day);
    }
    let enrolled_on: HashMap<&str, Date> = facts
        .enrollments
        .iter()
        .map(|(participant, day)| (participant.as_str(), *day))
        .collect();

    let mut days = Vec::new();
    let mut date = from;
    while date <= to {
        let activity = by_day.get(&date);
        let enrolled = enrolled_on.values().filter(|day| **day <= date).count() as u64;
        let window = (date - Duration::days(ENGAGEMENT_WINDOW_DAYS - 1))..=date;
        let active_participants = enrolled_on
            .iter()
            .filter(|(participant, day)| {
                **day <= date
                    && active_days
                        .get(*participant)
                        .is_some_and(|days| days.range(window.clone()).next().is_some())
            })
            .count() as u64;
        let ratings = activity.map(|a| a.ratings.as_slice()).unwrap_or_default();
        days.push(DailyMetrics {
            date: date.to_string(),
            active_matches: facts
                .matches
                .iter()
                .filter(|m| {
                    m.created.is_some_and(|c| c <= date) && m.ended.is_none_or(|e| e >= date)
                })
                .count() as u64,
            new_matches: facts
                .matches
                .iter()
                .filter(|m| m.created == Some(date))
                .count() as u64,
            ended_matches: facts
                .matches
                .iter()
                .filter(|m| m.ended == Some(date))
                .count() as u64,
            checkins: activity.map_or(0, |a| a.checkins.len() as u64),
            event_attendance: activity.map_or(0, |a| a.attendance),
            volunteer_hours: activity.map_or(0.0, |a| a.hours),
            feedback_count: ratings.len() as u64,
            average_feedback: (!ratings.is_empty())
                .then(|| ratings.iter().map(|r| f64::from(*r)).sum::<f64>() / ratings.len() as f64),
            enrolled,
            active_participants,
            engagement_rate: (enrolled > 0).then(|| active_participants as f64 / enrolled as f64),
        });
        date = match date.next_day() {
            Some(next) => next,
            None => break,
        };
    }
    days
}

/// Parses `YYYY-MM-DD`.
pub fn parse_day(text: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(text, &format).ok()
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    fn row(kind: ActivityKind, id: &str, participant: &str, day: Date) -> ActivityRow {
        ActivityRow {
            kind,
            activity_id: id.to_owned(),
            participant_id: participant.to_owned(),
            day,
            hours: 0.0,
            rating: None,
        }
    }

    #[test]
    fn matches_are_active_from_creation_through_their_last_day() {
        let facts = ProgramFacts {
            matches: vec![
                MatchSpan {
                    created: Some(date!(2025 - 01 - 02)),
                    ended: Some(date!(2025 - 01 - 03)),
                },
                MatchSpan {
                    created: Some(date!(2025 - 01 - 03)),
                    ended: None,
                },
                MatchSpan {
                    created: None,
                    ended: Some(date!(2025 - 01 - 02)),
                },
            ],
            ..ProgramFacts::default()
        };
        let days = daily_metrics(&facts, date!(2025 - 01 - 01), date!(2025 - 01 - 04));
        let active: Vec<_> = days.iter().map(|d| d.active_matches).collect();
        assert_eq!(active, [0, 1, 2, 1]);
        assert_eq!(days[1].new_matches, 1);
        assert_eq!(days[1].ended_matches, 1);
        assert_eq!(days[2].ended_matches, 1);
    }

    #[test]
    fn checkins_count_once_for_both_participants_and_feedback_averages() {
        let day = date!(2025 - 01 - 05);
        let mut feedback = row(ActivityKind::Feedback, "f1", "a", day);
        feedback.rating = Some(4);
        let mut feedback_2 = row(ActivityKind::Feedback, "f2", "b", day);
        feedback_2.rating = Some(5);
        let mut attendance = row(ActivityKind::Attendance, "ev", "a", day);
        attendance.hours = 2.5;
        let facts = ProgramFacts {
            activities: vec![
                row(ActivityKind::Checkin, "c1", "a", day),
                row(ActivityKind::Checkin, "c1", "b", day),
                feedback,
                feedback_2,
                attendance,
            ],
            ..ProgramFacts::default()
        };
        let metrics = &daily_metrics(&facts, day, day)[0];
        assert_eq!(metrics.checkins, 1);
        assert_eq!(metrics.event_attendance, 1);
        assert_eq!(metrics.volunteer_hours, 2.5);
        assert_eq!(metrics.feedback_count, 2);
        assert_eq!(metrics.average_feedback, Some(4.5));
        assert_eq!(metrics.engagement_rate, None);
    }

    #[test]
    fn engagement_counts_enrolled_participants_active_in_the_last_30_days() {
        let start = date!(2025 - 01 - 01);
        let facts = ProgramFacts {
            enrollments: vec![
                ("a".to_owned(), start),
                ("b".to_owned(), start),
                ("late".to_owned(), date!(2025 - 03 - 01)),
            ],
            activities: vec![
                row(ActivityKind::Milestone, "first", "a", date!(2025 - 01 - 10)),
                row(ActivityKind::Checkin, "c", "b", date!(2025 - 02 - 05)),
                row(ActivityKind::Checkin, "c", "late", date!(2025 - 02 - 05)),
            ],
            ..ProgramFacts::default()
        };
        let days = daily_metrics(&facts, date!(2025 - 01 - 10), date!(2025 - 02 - 09));
        let on = |d: Date| days.iter().find(|m| m.date == d.to_string()).unwrap();
        assert_eq!(on(date!(2025 - 01 - 10)).active_participants, 1);
        // a's activity on 01-10 is inside the window through 02-08, not 02-09.
        assert_eq!(on(date!(2025 - 02 - 08)).active_participants, 2);
        assert_eq!(on(date!(2025 - 02 - 09)).active_participants, 1);
        // "late" is active but not yet enrolled: not counted.
        assert_eq!(on(date!(2025 - 02 - 09)).enrolled, 2);
        assert_eq!(on(date!(2025 - 02 - 09)).engagement_rate, Some(0.5));
    }
}
