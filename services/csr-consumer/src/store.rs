//! The csr-consumer's tables (SQLite or PostgreSQL, same SQL).
//!
//! Applying an event is one transaction. Its first statement records the
//! event id, and a conflict there means the event was applied before: the
//! database constraint is the last layer of deduplication. Every fact is
//! then an idempotent upsert keyed by its natural id. Journeys move forward
//! only: the upsert's `WHERE stage_rank < excluded.stage_rank` makes that
//! atomic even with replicas racing. Each move is also written to the
//! transitions table, which is the outbox of `csr.journey.<stage>` events.

use hookmesh_contracts::TenantId;
use hookmesh_contracts::csr::{JourneyStage, JourneyStep, ProgramJourney};
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_runtime::db::Pool;
use sqlx::Row as _;
use time::Date;

use crate::facts::{ActivityKind, EventFacts};
use crate::report::{ActivityRow, MatchSpan, ProgramFacts, parse_day};

/// The result of applying an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Applied now; this many journeys moved.
    New { transitions: usize },
    /// Applied before.
    Duplicate,
}

/// A journey move waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTransition {
    pub tenant_id: String,
    pub program_id: String,
    pub participant_id: String,
    pub stage: JourneyStage,
    pub from_stage: Option<JourneyStage>,
    pub event_id: String,
    pub at_millis: i64,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
}

fn day(text: &str) -> Result<Date, sqlx::Error> {
    parse_day(text).ok_or_else(|| sqlx::Error::Decode(format!("not a day: {text:?}").into()))
}

fn stage(text: &str) -> Result<JourneyStage, sqlx::Error> {
    JourneyStage::from_wire(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("not a journey stage: {text:?}").into()))
}

impl Store {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Applies a batch of events' facts in one transaction (one commit for
    /// the batch), each event once.
    pub async fn apply_batch(
        &self,
        batch: &[EventFacts],
        processed_at: i64,
    ) -> Result<Vec<Applied>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut applied = Vec::with_capacity(batch.len());
        for facts in batch {
            applied.push(apply(&mut tx, facts, processed_at).await?);
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// The facts behind a program's metrics from `from` to `to`.
    pub async fn program_facts(
        &self,
        tenant: &TenantId,
        program: &str,
        from: Date,
        to: Date,
    ) -> Result<ProgramFacts, sqlx::Error> {
        let tenant = tenant.as_str();
        let matches = sqlx::query(
            "SELECT created_day, ended_day FROM csr_matches WHERE tenant_id = $1 AND program_id = $2",
        )
        .bind(tenant)
        .bind(program)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            let created: Option<String> = row.try_get("created_day")?;
            let ended: Option<String> = row.try_get("ended_day")?;
            Ok(MatchSpan {
                created: created.as_deref().map(day).transpose()?,
                ended: ended.as_deref().map(day).transpose()?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let enrollments = sqlx::query(
            "SELECT participant_id, enrolled_day FROM csr_enrollments \
             WHERE tenant_id = $1 AND program_id = $2",
        )
        .bind(tenant)
        .bind(program)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            let enrolled: String = row.try_get("enrolled_day")?;
            Ok((row.try_get("participant_id")?, day(&enrolled)?))
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let activities = sqlx::query(
            "SELECT kind, activity_id, participant_id, day, hours, rating FROM csr_activities \
             WHERE tenant_id = $1 AND program_id = $2 AND day >= $3 AND day <= $4",
        )
        .bind(tenant)
        .bind(program)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            let kind: String = row.try_get("kind")?;
            let on: String = row.try_get("day")?;
            let rating: Option<i64> = row.try_get("rating")?;
            Ok(ActivityRow {
                kind: ActivityKind::parse(&kind).ok_or_else(|| {
                    sqlx::Error::Decode(format!("not an activity kind: {kind:?}").into())
                })?,
                activity_id: row.try_get("activity_id")?,
                participant_id: row.try_get("participant_id")?,
                day: day(&on)?,
                hours: row.try_get("hours")?,
                rating: rating.and_then(|r| u8::try_from(r).ok()),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        Ok(ProgramFacts {
            matches,
            enrollments,
            activities,
        })
    }

    /// A participant's journeys, one per program, with their steps.
    pub async fn journeys(
        &self,
        tenant: &TenantId,
        participant: &str,
    ) -> Result<Vec<ProgramJourney>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT program_id, stage FROM csr_journeys \
             WHERE tenant_id = $1 AND participant_id = $2 ORDER BY program_id",
        )
        .bind(tenant.as_str())
        .bind(participant)
        .fetch_all(&self.pool)
        .await?;
        let steps = sqlx::query(
            "SELECT program_id, stage, from_stage, at FROM csr_journey_transitions \
             WHERE tenant_id = $1 AND participant_id = $2 ORDER BY at, stage_rank",
        )
        .bind(tenant.as_str())
        .bind(participant)
        .fetch_all(&self.pool)
        .await?;
        let mut journeys = Vec::with_capacity(rows.len());
        for row in rows {
            let program_id: String = row.try_get("program_id")?;
            let current: String = row.try_get("stage")?;
            let mut program_steps = Vec::new();
            for step in steps.iter().filter(|s| {
                s.try_get::<String, _>("program_id")
                    .is_ok_and(|p| p == program_id)
            }) {
                let reached: String = step.try_get("stage")?;
                let from: Option<String> = step.try_get("from_stage")?;
                let at: i64 = step.try_get("at")?;
                program_steps.push(JourneyStep {
                    stage: stage(&reached)?,
                    from_stage: from.as_deref().map(stage).transpose()?,
                    at: hookmesh_contracts::Timestamp::from_unix_millis(at).ok_or_else(|| {
                        sqlx::Error::Decode(format!("not an instant: {at}").into())
                    })?,
                });
            }
            journeys.push(ProgramJourney {
                program_id,
                stage: stage(&current)?,
                steps: program_steps,
            });
        }
        Ok(journeys)
    }

    /// Journey moves not yet published, oldest first.
    pub async fn unpublished_transitions(
        &self,
        limit: i64,
    ) -> Result<Vec<PendingTransition>, sqlx::Error> {
        sqlx::query(
            "SELECT tenant_id, program_id, participant_id, stage, from_stage, event_id, at \
             FROM csr_journey_transitions WHERE published_at IS NULL ORDER BY at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|row| {
            let reached: String = row.try_get("stage")?;
            let from: Option<String> = row.try_get("from_stage")?;
            Ok(PendingTransition {
                tenant_id: row.try_get("tenant_id")?,
                program_id: row.try_get("program_id")?,
                participant_id: row.try_get("participant_id")?,
                stage: stage(&reached)?,
                from_stage: from.as_deref().map(stage).transpose()?,
                event_id: row.try_get("event_id")?,
                at_millis: row.try_get("at")?,
            })
        })
        .collect()
    }

    pub async fn mark_published(
        &self,
        transition: &PendingTransition,
        at: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE csr_journey_transitions SET published_at = $1 \
             WHERE tenant_id = $2 AND program_id = $3 AND participant_id = $4 AND stage = $5",
        )
        .bind(at)
        .bind(&transition.tenant_id)
        .bind(&transition.program_id)
        .bind(&transition.participant_id)
        .bind(transition.stage.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the database answers.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

/// Applies one event's facts inside `tx`: nothing when the event id is
/// already recorded.
async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    facts: &EventFacts,
    processed_at: i64,
) -> Result<Applied, sqlx::Error> {
    let tenant = facts.tenant_id.as_str();
    let program = facts.program_id.as_str();
    let at = facts.occurred_at.unix_millis();
    let recorded = sqlx::query(
        "INSERT INTO csr_processed_events \
         (tenant_id, event_id, event_type, program_id, occurred_at, processed_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, event_id) DO NOTHING",
    )
    .bind(tenant)
    .bind(&facts.event_id)
    .bind(facts.event_type.as_str())
    .bind(program)
    .bind(at)
    .bind(processed_at)
    .execute(&mut **tx)
    .await?;
    if recorded.rows_affected() == 0 {
        return Ok(Applied::Duplicate);
    }

    if let Some((participant, role)) = &facts.enrollment {
        sqlx::query(
            "INSERT INTO csr_enrollments \
             (tenant_id, program_id, participant_id, role, enrolled_at, enrolled_day) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, program_id, participant_id) DO UPDATE SET \
             enrolled_at = excluded.enrolled_at, enrolled_day = excluded.enrolled_day \
             WHERE excluded.enrolled_at < csr_enrollments.enrolled_at",
        )
        .bind(tenant)
        .bind(program)
        .bind(participant)
        .bind(*role)
        .bind(at)
        .bind(&facts.day)
        .execute(&mut **tx)
        .await?;
    }

    if let Some(created) = &facts.match_created {
        sqlx::query(
            "INSERT INTO csr_matches \
             (tenant_id, program_id, match_id, buddy_id, newcomer_id, created_at, created_day) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id, match_id) DO UPDATE SET \
             created_at = excluded.created_at, created_day = excluded.created_day \
             WHERE csr_matches.created_at IS NULL OR excluded.created_at < csr_matches.created_at",
        )
        .bind(tenant)
        .bind(program)
        .bind(&created.match_id)
        .bind(&created.buddy_id)
        .bind(&created.newcomer_id)
        .bind(at)
        .bind(&facts.day)
        .execute(&mut **tx)
        .await?;
    }

    if let Some((ended, reason)) = &facts.match_ended {
        sqlx::query(
            "INSERT INTO csr_matches \
             (tenant_id, program_id, match_id, buddy_id, newcomer_id, ended_at, ended_day, end_reason) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, match_id) DO UPDATE SET \
             ended_at = excluded.ended_at, ended_day = excluded.ended_day, \
             end_reason = excluded.end_reason \
             WHERE csr_matches.ended_at IS NULL OR excluded.ended_at < csr_matches.ended_at",
        )
        .bind(tenant)
        .bind(program)
        .bind(&ended.match_id)
        .bind(&ended.buddy_id)
        .bind(&ended.newcomer_id)
        .bind(at)
        .bind(&facts.day)
        .bind(reason.as_str())
        .execute(&mut **tx)
        .await?;
    }

    for activity in &facts.activities {
        sqlx::query(
            "INSERT INTO csr_activities \
             (tenant_id, program_id, kind, activity_id, participant_id, occurred_at, day, hours, rating) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (tenant_id, kind, activity_id, participant_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(program)
        .bind(activity.kind.as_str())
        .bind(&activity.activity_id)
        .bind(&activity.participant_id)
        .bind(at)
        .bind(&facts.day)
        .bind(activity.hours)
        .bind(activity.rating.map(i64::from))
        .execute(&mut **tx)
        .await?;
    }

    let mut transitions = 0;
    for (participant, reached) in &facts.stages {
        let before: Option<String> = sqlx::query(
            "SELECT stage FROM csr_journeys \
             WHERE tenant_id = $1 AND program_id = $2 AND participant_id = $3",
        )
        .bind(tenant)
        .bind(program)
        .bind(participant)
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| row.try_get("stage"))
        .transpose()?;
        let moved = sqlx::query(
            "INSERT INTO csr_journeys \
             (tenant_id, program_id, participant_id, stage, stage_rank, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, program_id, participant_id) DO UPDATE SET \
             stage = excluded.stage, stage_rank = excluded.stage_rank, \
             updated_at = excluded.updated_at \
             WHERE csr_journeys.stage_rank < excluded.stage_rank",
        )
        .bind(tenant)
        .bind(program)
        .bind(participant)
        .bind(reached.as_str())
        .bind(i64::from(reached.rank()))
        .bind(processed_at)
        .execute(&mut **tx)
        .await?;
        if moved.rows_affected() == 0 {
            continue;
        }
        transitions += 1;
        sqlx::query(
            "INSERT INTO csr_journey_transitions \
             (tenant_id, program_id, participant_id, stage, stage_rank, from_stage, event_id, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (tenant_id, program_id, participant_id, stage) DO NOTHING",
        )
        .bind(tenant)
        .bind(program)
        .bind(participant)
        .bind(reached.as_str())
        .bind(i64::from(reached.rank()))
        .bind(before)
        .bind(&facts.event_id)
        .bind(at)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Applied::New { transitions })
}
