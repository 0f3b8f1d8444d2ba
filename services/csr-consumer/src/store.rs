//! The csr-consumer's tables (SQLite or PostgreSQL, same SQL).
//!
//! A batch of events is one transaction of a handful of set-based
//! statements, whatever its size. The first records the events' ids, and a
//! conflict there means an event was applied before: the database
//! constraint is the last layer of deduplication. Every fact is then an
//! idempotent upsert keyed by its natural id, the batch's facts about one
//! key folded first as applying them one by one would. Journeys move
//! forward only: the upsert's `WHERE stage_rank < excluded.stage_rank` makes
//! that atomic even with replicas racing. Each move is written to the
//! transitions table and, as a `csr.journey.<stage>` event, to the outbox.
//! Statements touch their rows in key order, so replicas never deadlock.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use hookmesh_contracts::csr::{JourneyStage, JourneyStep, JourneyTransition, ProgramJourney};
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::csr_journey;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_runtime::db::{Backend, Pool, rows_per_statement};
use hookmesh_runtime::engine::{Applied, Fresh};
use hookmesh_runtime::outbox::{Outbox, OutboxMessage};
use hookmesh_runtime::publish::TraceHeaders;
use sqlx::{Any, AssertSqlSafe, Row as _, Transaction};
use time::Date;

use crate::facts::{ActivityKind, EventFacts};
use crate::report::{ActivityRow, MatchSpan, ProgramFacts, parse_day};

/// Where journey events say they come from.
const SOURCE: &str = "/csr-consumer";

/// A journey move, as the transitions table and its event hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub tenant_id: String,
    pub program_id: String,
    pub participant_id: String,
    pub stage: JourneyStage,
    pub from_stage: Option<JourneyStage>,
    pub event_id: String,
    pub at_millis: i64,
}

impl Transition {
    /// Its `csr.journey.<stage>` event; `None` for a row that cannot name
    /// a tenant or an instant (never written by this service).
    fn message(&self) -> Option<OutboxMessage> {
        let tenant = TenantId::parse(&self.tenant_id).ok()?;
        let at = Timestamp::from_unix_millis(self.at_millis)?;
        let id = format!(
            "{}:{}:{}:{}",
            self.tenant_id, self.program_id, self.participant_id, self.stage
        );
        let payload = JourneyTransition {
            tenant_id: tenant.clone(),
            program_id: self.program_id.clone(),
            participant_id: self.participant_id.clone(),
            stage: self.stage,
            from_stage: self.from_stage,
            event_id: self.event_id.clone(),
            at,
        };
        let envelope = Envelope::new(
            id.clone(),
            SOURCE,
            at,
            tenant,
            Some(self.participant_id.clone()),
            payload,
        );
        Some(OutboxMessage {
            msg_id: format!("csr.journey:{id}"),
            subject: csr_journey(self.stage),
            payload: String::from_utf8(envelope.to_json()).expect("JSON is UTF-8"),
            trace: TraceHeaders::current(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    backend: Backend,
    outbox: Outbox,
}

/// `(tenant, program, participant)`: whose enrolment or journey.
type ParticipantKey = (String, String, String);

fn day(text: &str) -> Result<Date, sqlx::Error> {
    parse_day(text).ok_or_else(|| sqlx::Error::Decode(format!("not a day: {text:?}").into()))
}

fn stage(text: &str) -> Result<JourneyStage, sqlx::Error> {
    JourneyStage::from_wire(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("not a journey stage: {text:?}").into()))
}

impl Store {
    pub fn new(pool: Pool, backend: Backend, outbox: Outbox) -> Self {
        Self {
            pool,
            backend,
            outbox,
        }
    }

    /// Applies a batch of events in one transaction, each event once; one
    /// answer per event, in order.
    pub async fn apply(
        &self,
        events: &[Fresh<'_, EventFacts>],
        now: Timestamp,
    ) -> Result<Vec<Applied>, sqlx::Error> {
        let processed_at = now.unix_millis();
        let mut tx = self.pool.begin().await?;
        // The first statement writes, so SQLite takes its write lock now.
        let new = record_events(self.backend, &mut tx, events, processed_at).await?;
        let fresh: Vec<&EventFacts> = events
            .iter()
            .map(|fresh| &fresh.event)
            .filter(|facts| new.contains(&event_key(facts)))
            .collect();
        upsert_enrollments(self.backend, &mut tx, &fresh).await?;
        upsert_matches(self.backend, &mut tx, &fresh).await?;
        insert_activities(self.backend, &mut tx, &fresh).await?;
        let transitions = self.move_journeys(&mut tx, &fresh, processed_at).await?;
        // Each journey event carries on the trace of the buddy event that moved it.
        let causes: std::collections::HashMap<&str, &Fresh<EventFacts>> = events
            .iter()
            .map(|fresh| (fresh.event.event_id.as_str(), fresh))
            .collect();
        let messages: Vec<OutboxMessage> = transitions
            .iter()
            .filter_map(|transition| {
                let message = transition.message()?;
                Some(match causes.get(transition.event_id.as_str()) {
                    Some(cause) => message.caused_by(cause.trace()),
                    None => message,
                })
            })
            .collect();
        self.outbox.write(&mut tx, &messages, processed_at).await?;
        tx.commit().await?;
        if !messages.is_empty() {
            self.outbox.nudge();
        }
        Ok(events
            .iter()
            .map(|fresh| {
                if new.contains(&event_key(&fresh.event)) {
                    Applied::New
                } else {
                    Applied::Duplicate
                }
            })
            .collect())
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

    /// Hands the journey moves written before the outbox existed, and not
    /// yet published, to the outbox (once: they are then marked).
    pub async fn adopt_unpublished_transitions(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let now = Timestamp::now().unix_millis();
        // The first statement writes, so SQLite takes its write lock now.
        let marked = sqlx::query(
            "UPDATE csr_journey_transitions SET published_at = $1 WHERE published_at IS NULL \
             RETURNING tenant_id, program_id, participant_id, stage, from_stage, event_id, at",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut messages = Vec::with_capacity(marked.len());
        for row in marked {
            let reached: String = row.try_get("stage")?;
            let from: Option<String> = row.try_get("from_stage")?;
            let transition = Transition {
                tenant_id: row.try_get("tenant_id")?,
                program_id: row.try_get("program_id")?,
                participant_id: row.try_get("participant_id")?,
                stage: stage(&reached)?,
                from_stage: from.as_deref().map(stage).transpose()?,
                event_id: row.try_get("event_id")?,
                at_millis: row.try_get("at")?,
            };
            messages.extend(transition.message());
        }
        self.outbox.write(&mut tx, &messages, now).await?;
        tx.commit().await?;
        if !messages.is_empty() {
            self.outbox.nudge();
        }
        Ok(messages.len())
    }

    /// Whether the database answers.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Store {
    /// Moves each participant the batch names through the stages its
    /// events imply, in the batch's order, from where the table has them:
    /// the moves a one-by-one application would make. Writes the final
    /// stages and the moves; returns the moves the table did not have.
    async fn move_journeys(
        &self,
        tx: &mut Transaction<'static, Any>,
        fresh: &[&EventFacts],
        processed_at: i64,
    ) -> Result<Vec<Transition>, sqlx::Error> {
        let mut current: BTreeMap<ParticipantKey, Option<JourneyStage>> = BTreeMap::new();
        for facts in fresh {
            for (participant, _) in &facts.stages {
                current.insert(participant_key(facts, participant), None);
            }
        }
        if current.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<ParticipantKey> = current.keys().cloned().collect();
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        for chunk in keys.chunks(rows_per_statement(3)) {
            let sql = format!(
                "SELECT tenant_id, program_id, participant_id, stage FROM csr_journeys \
                 WHERE (tenant_id, program_id, participant_id) IN (VALUES {}) \
                 ORDER BY tenant_id, program_id, participant_id{lock}",
                self.backend.values(chunk.len(), 3, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for (tenant, program, participant) in chunk {
                query = query.bind(tenant).bind(program).bind(participant);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let key = (
                    row.try_get("tenant_id")?,
                    row.try_get("program_id")?,
                    row.try_get("participant_id")?,
                );
                let reached: String = row.try_get("stage")?;
                current.insert(key, Some(stage(&reached)?));
            }
        }
        let mut moves = Vec::new();
        let mut moved = BTreeSet::new();
        for facts in fresh {
            for (participant, reached) in &facts.stages {
                let key = participant_key(facts, participant);
                let before = current.get_mut(&key).expect("every key was read");
                if before.is_some_and(|before| before.rank() >= reached.rank()) {
                    continue;
                }
                moved.insert(key.clone());
                moves.push(Transition {
                    tenant_id: key.0,
                    program_id: key.1,
                    participant_id: key.2,
                    stage: *reached,
                    from_stage: *before,
                    event_id: facts.event_id.clone(),
                    at_millis: facts.occurred_at.unix_millis(),
                });
                *before = Some(*reached);
            }
        }
        let moved: Vec<(&ParticipantKey, JourneyStage)> = moved
            .iter()
            .filter_map(|key| Some((key, current[key]?)))
            .collect();
        for chunk in moved.chunks(rows_per_statement(6)) {
            let sql = format!(
                "INSERT INTO csr_journeys \
                 (tenant_id, program_id, participant_id, stage, stage_rank, updated_at) \
                 VALUES {} \
                 ON CONFLICT (tenant_id, program_id, participant_id) DO UPDATE SET \
                 stage = excluded.stage, stage_rank = excluded.stage_rank, \
                 updated_at = excluded.updated_at \
                 WHERE csr_journeys.stage_rank < excluded.stage_rank",
                self.backend.values(chunk.len(), 6, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for ((tenant, program, participant), reached) in chunk {
                query = query
                    .bind(tenant)
                    .bind(program)
                    .bind(participant)
                    .bind(reached.as_str())
                    .bind(i64::from(reached.rank()))
                    .bind(processed_at);
            }
            query.execute(&mut **tx).await?;
        }
        let mut written = HashSet::new();
        let mut ordered: Vec<&Transition> = moves.iter().collect();
        ordered.sort_by(|a, b| {
            (participant_of(a), a.stage.rank()).cmp(&(participant_of(b), b.stage.rank()))
        });
        for chunk in ordered.chunks(rows_per_statement(9)) {
            let sql = format!(
                "INSERT INTO csr_journey_transitions (tenant_id, program_id, participant_id, \
                 stage, stage_rank, from_stage, event_id, at, published_at) VALUES {} \
                 ON CONFLICT (tenant_id, program_id, participant_id, stage) DO NOTHING \
                 RETURNING tenant_id, program_id, participant_id, stage",
                self.backend.values(chunk.len(), 9, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for transition in chunk {
                // Handed to the outbox in this same transaction.
                query = query
                    .bind(&transition.tenant_id)
                    .bind(&transition.program_id)
                    .bind(&transition.participant_id)
                    .bind(transition.stage.as_str())
                    .bind(i64::from(transition.stage.rank()))
                    .bind(transition.from_stage.map(JourneyStage::as_str))
                    .bind(&transition.event_id)
                    .bind(transition.at_millis)
                    .bind(processed_at);
            }
            for row in query.fetch_all(&mut **tx).await? {
                let reached: String = row.try_get("stage")?;
                written.insert((
                    row.try_get::<String, _>("tenant_id")?,
                    row.try_get::<String, _>("program_id")?,
                    row.try_get::<String, _>("participant_id")?,
                    reached,
                ));
            }
        }
        moves.retain(|m| {
            written.contains(&(
                m.tenant_id.clone(),
                m.program_id.clone(),
                m.participant_id.clone(),
                m.stage.as_str().to_owned(),
            ))
        });
        Ok(moves)
    }
}

/// `(tenant, event id)`: an event's identity in `csr_processed_events`.
fn event_key(facts: &EventFacts) -> (String, String) {
    (facts.tenant_id.as_str().to_owned(), facts.event_id.clone())
}

fn participant_key(facts: &EventFacts, participant: &str) -> ParticipantKey {
    (
        facts.tenant_id.as_str().to_owned(),
        facts.program_id.clone(),
        participant.to_owned(),
    )
}

fn participant_of(transition: &Transition) -> ParticipantKey {
    (
        transition.tenant_id.clone(),
        transition.program_id.clone(),
        transition.participant_id.clone(),
    )
}

/// Records the events' ids; returns those that were not recorded before.
async fn record_events(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    events: &[Fresh<'_, EventFacts>],
    processed_at: i64,
) -> Result<HashSet<(String, String)>, sqlx::Error> {
    let mut ordered: Vec<&EventFacts> = events.iter().map(|fresh| &fresh.event).collect();
    ordered.sort_by_key(|&facts| (facts.tenant_id.as_str(), facts.event_id.as_str()));
    let mut new = HashSet::with_capacity(ordered.len());
    for chunk in ordered.chunks(rows_per_statement(6)) {
        let sql = format!(
            "INSERT INTO csr_processed_events \
             (tenant_id, event_id, event_type, program_id, occurred_at, processed_at) \
             VALUES {} ON CONFLICT (tenant_id, event_id) DO NOTHING \
             RETURNING tenant_id, event_id",
            backend.values(chunk.len(), 6, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for facts in chunk {
            query = query
                .bind(facts.tenant_id.as_str())
                .bind(&facts.event_id)
                .bind(facts.event_type.as_str())
                .bind(&facts.program_id)
                .bind(facts.occurred_at.unix_millis())
                .bind(processed_at);
        }
        for row in query.fetch_all(&mut **tx).await? {
            new.insert((row.try_get("tenant_id")?, row.try_get("event_id")?));
        }
    }
    Ok(new)
}

/// One row per participant enrolled: the role of the batch's first
/// enrolment, the earliest time (an earlier enrolment in the table wins).
async fn upsert_enrollments(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    fresh: &[&EventFacts],
) -> Result<(), sqlx::Error> {
    let mut rows: BTreeMap<ParticipantKey, (&'static str, i64, &str)> = BTreeMap::new();
    for facts in fresh {
        let Some((participant, role)) = &facts.enrollment else {
            continue;
        };
        let at = facts.occurred_at.unix_millis();
        rows.entry(participant_key(facts, participant))
            .and_modify(|row| {
                if at < row.1 {
                    (row.1, row.2) = (at, &facts.day);
                }
            })
            .or_insert((role, at, &facts.day));
    }
    let rows: Vec<_> = rows.into_iter().collect();
    for chunk in rows.chunks(rows_per_statement(6)) {
        let sql = format!(
            "INSERT INTO csr_enrollments \
             (tenant_id, program_id, participant_id, role, enrolled_at, enrolled_day) \
             VALUES {} \
             ON CONFLICT (tenant_id, program_id, participant_id) DO UPDATE SET \
             enrolled_at = excluded.enrolled_at, enrolled_day = excluded.enrolled_day \
             WHERE excluded.enrolled_at < csr_enrollments.enrolled_at",
            backend.values(chunk.len(), 6, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for ((tenant, program, participant), (role, at, day)) in chunk {
            query = query
                .bind(tenant)
                .bind(program)
                .bind(participant)
                .bind(*role)
                .bind(*at)
                .bind(*day);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A match as the batch first names it, and its earliest creation or end.
struct MatchRow<'a> {
    program: &'a str,
    buddy: &'a str,
    newcomer: &'a str,
    at: i64,
    day: &'a str,
    reason: &'static str,
}

/// Matches created, then matches ended: the earliest creation and the
/// earliest end of each (with its reason) win, in the batch as in the table.
async fn upsert_matches(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    fresh: &[&EventFacts],
) -> Result<(), sqlx::Error> {
    let mut created: BTreeMap<(&str, &str), MatchRow<'_>> = BTreeMap::new();
    let mut ended: BTreeMap<(&str, &str), MatchRow<'_>> = BTreeMap::new();
    for facts in fresh {
        let at = facts.occurred_at.unix_millis();
        let named = [
            facts.match_created.as_ref().map(|m| (m, "", &mut created)),
            facts
                .match_ended
                .as_ref()
                .map(|(m, reason)| (m, reason.as_str(), &mut ended)),
        ];
        for (fact, reason, rows) in named.into_iter().flatten() {
            let key = (facts.tenant_id.as_str(), fact.match_id.as_str());
            let row = MatchRow {
                program: &facts.program_id,
                buddy: &fact.buddy_id,
                newcomer: &fact.newcomer_id,
                at,
                day: &facts.day,
                reason,
            };
            match rows.get_mut(&key) {
                Some(first) if at < first.at => {
                    (first.at, first.day, first.reason) = (at, row.day, reason)
                }
                Some(_) => {}
                None => {
                    rows.insert(key, row);
                }
            }
        }
    }
    let created: Vec<_> = created.into_iter().collect();
    for chunk in created.chunks(rows_per_statement(7)) {
        let sql = format!(
            "INSERT INTO csr_matches \
             (tenant_id, match_id, program_id, buddy_id, newcomer_id, created_at, created_day) \
             VALUES {} \
             ON CONFLICT (tenant_id, match_id) DO UPDATE SET \
             created_at = excluded.created_at, created_day = excluded.created_day \
             WHERE csr_matches.created_at IS NULL OR excluded.created_at < csr_matches.created_at",
            backend.values(chunk.len(), 7, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for ((tenant, match_id), row) in chunk {
            query = query
                .bind(*tenant)
                .bind(*match_id)
                .bind(row.program)
                .bind(row.buddy)
                .bind(row.newcomer)
                .bind(row.at)
                .bind(row.day);
        }
        query.execute(&mut **tx).await?;
    }
    let ended: Vec<_> = ended.into_iter().collect();
    for chunk in ended.chunks(rows_per_statement(8)) {
        let sql = format!(
            "INSERT INTO csr_matches \
             (tenant_id, match_id, program_id, buddy_id, newcomer_id, ended_at, ended_day, end_reason) \
             VALUES {} \
             ON CONFLICT (tenant_id, match_id) DO UPDATE SET \
             ended_at = excluded.ended_at, ended_day = excluded.ended_day, \
             end_reason = excluded.end_reason \
             WHERE csr_matches.ended_at IS NULL OR excluded.ended_at < csr_matches.ended_at",
            backend.values(chunk.len(), 8, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for ((tenant, match_id), row) in chunk {
            query = query
                .bind(*tenant)
                .bind(*match_id)
                .bind(row.program)
                .bind(row.buddy)
                .bind(row.newcomer)
                .bind(row.at)
                .bind(row.day)
                .bind(row.reason);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Every participant's part in an activity, once: the batch's first.
async fn insert_activities(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    fresh: &[&EventFacts],
) -> Result<(), sqlx::Error> {
    let mut rows = BTreeMap::new();
    for facts in fresh {
        for activity in &facts.activities {
            let key = (
                facts.tenant_id.as_str(),
                activity.kind.as_str(),
                activity.activity_id.as_str(),
                activity.participant_id.as_str(),
            );
            rows.entry(key).or_insert((*facts, activity));
        }
    }
    let rows: Vec<_> = rows.into_iter().collect();
    for chunk in rows.chunks(rows_per_statement(9)) {
        let sql = format!(
            "INSERT INTO csr_activities \
             (tenant_id, kind, activity_id, participant_id, program_id, occurred_at, day, hours, rating) \
             VALUES {} \
             ON CONFLICT (tenant_id, kind, activity_id, participant_id) DO NOTHING",
            backend.values(chunk.len(), 9, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for ((tenant, kind, activity_id, participant), (facts, activity)) in chunk {
            query = query
                .bind(*tenant)
                .bind(*kind)
                .bind(*activity_id)
                .bind(*participant)
                .bind(&facts.program_id)
                .bind(facts.occurred_at.unix_millis())
                .bind(&facts.day)
                .bind(activity.hours)
                .bind(activity.rating.map(i64::from));
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
