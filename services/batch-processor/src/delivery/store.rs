//! The delivery family's tables, written set-based: a batch is a handful of
//! statements whatever its size (one insert into the events log, one locked
//! read of the recipients, one update of the recipients, one of the
//! campaigns, one completion check), in one transaction.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures_util::TryStreamExt as _;
use hookmesh_contracts::delivery::{
    CampaignCompleted, CampaignCounts, CampaignView, DeliveryStatus, RejectedRegistration,
};
use hookmesh_contracts::envelope::Envelope;
use hookmesh_contracts::subjects::CAMPAIGN_COMPLETED;
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_runtime::db::{
    self, ARRAY_ROWS_PER_STATEMENT, Backend, Keyset, PgArray, Pool, rows_per_statement,
};
use hookmesh_runtime::outbox::{Outbox, OutboxMessage};
use hookmesh_runtime::publish::TraceHeaders;
use sqlx::{Any, AssertSqlSafe, Row as _, Transaction};

use super::by_recipient::{ByRecipient, KeyRef};
use super::status::{CounterDelta, RecipientState};
use hookmesh_runtime::engine::{Applied, Fresh, Laps};

use crate::enrich::{Enrichment, Lookup};

/// A delivery event as the family applies it. A batch holds ten thousand,
/// so its identifying text is one allocation, not three (each small
/// allocation costs the allocator's header and rounding on top of its
/// bytes), and the rarer text is boxed, not growable.
#[derive(Clone, PartialEq, Eq)]
pub struct DeliveryFact {
    /// The provider, the message id and the envelope id, one after another.
    ids: Box<str>,
    message_id_at: u32,
    event_id_at: u32,
    pub status: DeliveryStatus,
    pub occurred_at: Timestamp,
    pub reason: Option<Box<str>>,
    pub url: Option<Box<str>>,
}

impl DeliveryFact {
    /// An event of `status` about `message_id` of `provider`, from the
    /// envelope `event_id`.
    pub fn new(
        provider: &str,
        status: DeliveryStatus,
        message_id: &str,
        event_id: &str,
        occurred_at: Timestamp,
    ) -> Self {
        let offset = |len: usize| u32::try_from(len).expect("an event is smaller than 4 GiB");
        Self {
            ids: [provider, message_id, event_id].concat().into_boxed_str(),
            message_id_at: offset(provider.len()),
            event_id_at: offset(provider.len() + message_id.len()),
            status,
            occurred_at,
            reason: None,
            url: None,
        }
    }

    pub fn provider(&self) -> &str {
        &self.ids[..self.message_id_at as usize]
    }

    pub fn message_id(&self) -> &str {
        &self.ids[self.message_id_at as usize..self.event_id_at as usize]
    }

    /// The envelope id.
    pub fn event_id(&self) -> &str {
        &self.ids[self.event_id_at as usize..]
    }
}

impl std::fmt::Debug for DeliveryFact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryFact")
            .field("provider", &self.provider())
            .field("status", &self.status)
            .field("message_id", &self.message_id())
            .field("event_id", &self.event_id())
            .field("occurred_at", &self.occurred_at)
            .field("reason", &self.reason)
            .field("url", &self.url)
            .finish()
    }
}

/// A recipient as the lookup table knows it. The enrichment cache holds one
/// per recipient seen in the last ten minutes, so its campaign is shared
/// with the other recipients a lookup finds of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientInfo {
    pub campaign: Campaign,
    pub address: String,
}

impl RecipientInfo {
    pub fn tenant_id(&self) -> &str {
        &self.campaign.0
    }

    pub fn campaign_id(&self) -> &str {
        &self.campaign.1
    }
}

/// `(provider, message id)`: a recipient's key, in one allocation (the
/// enrichment cache holds one per recipient it knows).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecipientKey {
    /// The provider, then the message id.
    text: Box<str>,
    provider_len: usize,
}

impl RecipientKey {
    pub fn new(provider: &str, message_id: &str) -> Self {
        Self {
            text: [provider, message_id].concat().into_boxed_str(),
            provider_len: provider.len(),
        }
    }

    pub fn provider(&self) -> &str {
        &self.text[..self.provider_len]
    }

    pub fn message_id(&self) -> &str {
        &self.text[self.provider_len..]
    }
}

/// `(provider, message id)`, as a registration names a recipient.
type OwnedKey = (String, String);

/// `(tenant, campaign)`, shared by its recipients.
pub type Campaign = Arc<(String, String)>;

/// Each recipient of a [`ByRecipient`] as the database holds it (its
/// campaign and state), by position; `None` where none is registered.
type Current = Vec<Option<(Campaign, RecipientState)>>;

/// A recipient the sending application registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecipient {
    pub provider: String,
    pub message_id: String,
    pub address: String,
}

/// A campaign's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRow {
    pub size: u64,
    pub counts: CampaignCounts,
    pub settled: u64,
    pub completed_at: Option<Timestamp>,
}

/// Why a campaign could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// It contradicts what is registered: it can never succeed.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a registration did.
#[derive(Debug, Default)]
pub struct Registered {
    /// Recipients registered now (the others were already).
    pub new_recipients: usize,
    /// Events logged before their recipient was registered, applied now.
    pub late_events: usize,
    pub completed: Vec<CampaignCompleted>,
}

/// The PostgreSQL advisory lock that orders registrations against batches
/// with unmatched events: a registration either sees such an event in the
/// log, or the batch sees the registered recipient.
const REGISTRATION_LOCK: i64 = 0x686f_6f6b_6d65_7368;

/// What a batch did.
#[derive(Debug, Default)]
pub struct DeliveryOutcome {
    pub applied: Vec<Applied>,
    pub completed: Vec<CampaignCompleted>,
}

#[derive(Debug, Clone)]
pub struct DeliveryStore {
    pool: Pool,
    backend: Backend,
    outbox: Outbox,
}

/// Counts are stored as BIGINT; they are never negative.
fn count(row: &sqlx::any::AnyRow, column: &str) -> Result<u64, sqlx::Error> {
    let value: i64 = row.try_get(column)?;
    Ok(u64::try_from(value).unwrap_or(0))
}

fn counts(row: &sqlx::any::AnyRow) -> Result<CampaignCounts, sqlx::Error> {
    Ok(CampaignCounts {
        delivered: count(row, "delivered_count")?,
        opened: count(row, "opened_count")?,
        clicked: count(row, "clicked_count")?,
        bounced: count(row, "bounced_count")?,
        complained: count(row, "complained_count")?,
        failed: count(row, "failed_count")?,
    })
}

fn status(text: &str) -> Result<DeliveryStatus, sqlx::Error> {
    DeliveryStatus::from_wire(text)
        .ok_or_else(|| sqlx::Error::Decode(format!("not a delivery status: {text:?}").into()))
}

const COUNT_COLUMNS: &str = "delivered_count, opened_count, clicked_count, bounced_count, \
                             complained_count, failed_count";

/// A campaign's row for the read API, with its registered recipients.
const CAMPAIGN_VIEW_COLUMNS: &str = "c.campaign_id, c.size, c.settled_count, c.created_at, \
    c.completed_at, c.delivered_count, c.opened_count, c.clicked_count, c.bounced_count, \
    c.complained_count, c.failed_count, (SELECT COUNT(*) FROM delivery_recipients r \
    WHERE r.tenant_id = c.tenant_id AND r.campaign_id = c.campaign_id) AS registered";

fn instant(millis: i64) -> Result<Timestamp, sqlx::Error> {
    Timestamp::from_unix_millis(millis)
        .ok_or_else(|| sqlx::Error::Decode(format!("not an instant: {millis}").into()))
}

fn campaign_view(tenant: &TenantId, row: &sqlx::any::AnyRow) -> Result<CampaignView, sqlx::Error> {
    let completed_at: Option<i64> = row.try_get("completed_at")?;
    Ok(CampaignView {
        tenant_id: tenant.clone(),
        campaign_id: row.try_get("campaign_id")?,
        size: count(row, "size")?,
        registered: count(row, "registered")?,
        settled: count(row, "settled_count")?,
        counts: counts(row)?,
        created_at: instant(row.try_get("created_at")?)?,
        completed_at: completed_at.map(instant).transpose()?,
        rejected_registrations: None,
    })
}

/// Where a batch's recipient columns of the events log (tenant, campaign,
/// address) come from.
#[derive(Debug, Clone, Copy)]
pub enum Enriched<'a> {
    /// Looked up before the transaction, one answer per event, in order
    /// (a lookup database of its own, with its cache).
    Looked(&'a [Enrichment<Arc<RecipientInfo>>]),
    /// Joined from the recipients table by the insert itself: when the
    /// lookup database is the main one, a lookup of its own would read the
    /// same rows again.
    InTransaction,
}

impl DeliveryStore {
    pub fn new(pool: Pool, backend: Backend, outbox: Outbox) -> Self {
        Self {
            pool,
            backend,
            outbox,
        }
    }

    /// Applies a batch of fresh events in one transaction, their recipient
    /// columns as `enriched` says; each statement's time goes to `laps`.
    pub async fn apply(
        &self,
        events: &[Fresh<'_, DeliveryFact>],
        enriched: Enriched<'_>,
        now: Timestamp,
        laps: &mut Laps,
    ) -> Result<DeliveryOutcome, sqlx::Error> {
        let now_millis = now.unix_millis();
        let mut tx = self.pool.begin().await?;
        laps.lap("begin");
        // The first statement writes, so SQLite takes its write lock now.
        let new = insert_events(self.backend, &mut tx, events, enriched, now_millis).await?;
        laps.lap("insert_events");

        let recipients = ByRecipient::new(
            events
                .iter()
                .filter(|fresh| new.contains(&fresh.stream_sequence()))
                .map(|fresh| (key_of(&fresh.event), fresh.event.status))
                .collect(),
        );
        let mut current: Current = vec![None; recipients.len()];
        let all: Vec<usize> = (0..recipients.len()).collect();
        self.lock_recipients(&mut tx, &recipients, &all, &mut current)
            .await?;
        let missing: Vec<usize> = all
            .into_iter()
            .filter(|position| current[*position].is_none())
            .collect();
        if !missing.is_empty() && self.backend == Backend::Postgres {
            // A registration that committed while this batch ran is seen by
            // the next statement; one that has not yet will see these events.
            serialise_registrations(&mut tx).await?;
            self.lock_recipients(&mut tx, &recipients, &missing, &mut current)
                .await?;
        }
        laps.lap("lock_recipients");
        let completed = self
            .apply_statuses(&mut tx, &recipients, &current, now)
            .await?;
        laps.lap("update_statuses");

        let mut applied = Vec::with_capacity(events.len());
        let mut unmatched = Vec::new();
        for fresh in events {
            let registered = || {
                recipients
                    .position(key_of(&fresh.event))
                    .is_some_and(|position| current[position].is_some())
            };
            applied.push(if !new.contains(&fresh.stream_sequence()) {
                Applied::Duplicate
            } else if registered() {
                Applied::New
            } else {
                unmatched.push(&fresh.event);
                Applied::Unmatched
            });
        }
        mark_unmatched(self.backend, &mut tx, &unmatched).await?;
        laps.lap("mark_unmatched");
        tx.commit().await?;
        laps.lap("commit");
        if !completed.is_empty() {
            self.outbox.nudge();
        }
        Ok(DeliveryOutcome { applied, completed })
    }

    /// Moves every recipient of `recipients` that `current` knows through
    /// its events, and its campaign's counters; completes the campaigns it
    /// settles (their events go to the outbox). Returns those completed.
    async fn apply_statuses(
        &self,
        tx: &mut Transaction<'static, Any>,
        recipients: &ByRecipient<'_>,
        current: &Current,
        now: Timestamp,
    ) -> Result<Vec<CampaignCompleted>, sqlx::Error> {
        let now_millis = now.unix_millis();
        let mut changes = Vec::new();
        let mut deltas: BTreeMap<(String, String), CounterDelta> = BTreeMap::new();
        for (position, known) in current.iter().enumerate() {
            let Some((campaign, before)) = known else {
                continue;
            };
            let after = recipients
                .statuses(position)
                .fold(*before, |state, status| state.with(status));
            if after != *before {
                changes.push((position, after));
                deltas
                    .entry((**campaign).clone())
                    .or_default()
                    .add(CounterDelta::between(*before, after));
            }
        }
        update_recipients(self.backend, tx, recipients, &changes, now_millis).await?;
        if self.backend == Backend::Postgres {
            lock_campaigns(self.backend, tx, &deltas).await?;
        }
        update_campaigns(self.backend, tx, &deltas).await?;
        let settling: Vec<&(String, String)> = deltas
            .iter()
            .filter(|(_, delta)| delta.settled > 0)
            .map(|(campaign, _)| campaign)
            .collect();
        let completed = complete_campaigns(self.backend, tx, &settling, now).await?;
        if !completed.is_empty() {
            let messages: Vec<OutboxMessage> = completed.iter().map(completion_message).collect();
            self.outbox.write(tx, &messages, now_millis).await?;
        }
        Ok(completed)
    }

    /// Reads into `current` the state of the recipients at `positions` (in
    /// key order), locked until the transaction ends (on PostgreSQL;
    /// SQLite's write lock already excludes other writers), in key order so
    /// that replicas never deadlock on each other.
    async fn lock_recipients(
        &self,
        tx: &mut Transaction<'static, Any>,
        recipients: &ByRecipient<'_>,
        positions: &[usize],
        current: &mut Current,
    ) -> Result<(), sqlx::Error> {
        // Each campaign is held once, not once per recipient: a batch reads
        // ten thousand.
        let mut campaigns: HashMap<(String, String), Campaign> = HashMap::new();
        let chunk_rows = match self.backend {
            Backend::Postgres => ARRAY_ROWS_PER_STATEMENT,
            Backend::Sqlite => rows_per_statement(2),
        };
        for chunk in positions.chunks(chunk_rows) {
            let query = match self.backend {
                Backend::Postgres => {
                    let (providers, message_ids) =
                        key_arrays(chunk.iter().map(|position| recipients.key(*position)));
                    sqlx::query(
                        "SELECT r.provider, r.message_id, r.tenant_id, r.campaign_id, r.status, \
                         r.evidence FROM delivery_recipients r \
                         JOIN UNNEST($1::text[], $2::text[]) AS k(provider, message_id) \
                         ON r.provider = k.provider AND r.message_id = k.message_id \
                         ORDER BY r.provider, r.message_id FOR UPDATE OF r",
                    )
                    .bind(providers)
                    .bind(message_ids)
                }
                Backend::Sqlite => {
                    let sql = format!(
                        "SELECT provider, message_id, tenant_id, campaign_id, status, evidence \
                         FROM delivery_recipients WHERE (provider, message_id) IN (VALUES {}) \
                         ORDER BY provider, message_id",
                        self.backend.values(chunk.len(), 2, 1)
                    );
                    let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                    for position in chunk {
                        let (provider, message_id) = recipients.key(*position);
                        query = query.bind(provider).bind(message_id);
                    }
                    query
                }
            };
            // Each row is used as it arrives: collecting a batch's rows first
            // held about 6 MB of the driver's rows per 10 000 recipients.
            let mut rows = query.fetch(&mut **tx);
            while let Some(row) = rows.try_next().await? {
                let state = RecipientState {
                    status: status(row.try_get("status")?)?,
                    evidence: row.try_get("evidence")?,
                };
                let (provider, message_id): (String, String) =
                    (row.try_get("provider")?, row.try_get("message_id")?);
                let Some(position) = recipients.position((&provider, &message_id)) else {
                    continue;
                };
                let campaign = campaigns
                    .entry((row.try_get("tenant_id")?, row.try_get("campaign_id")?))
                    .or_insert_with_key(|owner| Arc::new(owner.clone()))
                    .clone();
                current[position] = Some((campaign, state));
            }
        }
        Ok(())
    }

    /// Registers recipients of a campaign of `size` recipients, each in
    /// status `sent`: the whole campaign, or one part of it. Recipients
    /// already registered to it are left as they are. Delivery events that
    /// named a new recipient before it was registered (logged unmatched)
    /// are applied now, and may complete the campaign.
    pub async fn register_campaign(
        &self,
        tenant: &TenantId,
        campaign_id: &str,
        size: u64,
        recipients: &[NewRecipient],
        now: Timestamp,
    ) -> Result<Registered, RegisterError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            serialise_registrations(&mut tx).await?;
        }
        // On SQLite the first statement writes, so the write lock is taken now.
        sqlx::query(
            "INSERT INTO delivery_campaigns (tenant_id, campaign_id, size, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, campaign_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(campaign_id)
        .bind(i64::try_from(size).unwrap_or(i64::MAX))
        .bind(now.unix_millis())
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT size, (SELECT COUNT(*) FROM delivery_recipients r \
             WHERE r.tenant_id = c.tenant_id AND r.campaign_id = c.campaign_id) AS registered \
             FROM delivery_campaigns c WHERE c.tenant_id = $1 AND c.campaign_id = $2",
        )
        .bind(tenant.as_str())
        .bind(campaign_id)
        .fetch_one(&mut *tx)
        .await?;
        let (declared, registered) = (count(&row, "size")?, count(&row, "registered")?);
        if declared != size {
            return Err(RegisterError::Refused(format!(
                "campaign {campaign_id:?} was registered with {declared} recipients; this part declares {size}"
            )));
        }

        let keys: Vec<OwnedKey> = recipients
            .iter()
            .map(|r| (r.provider.clone(), r.message_id.clone()))
            .collect();
        let mut existing = HashSet::new();
        for chunk in keys.chunks(rows_per_statement(2)) {
            let sql = format!(
                "SELECT provider, message_id, tenant_id, campaign_id FROM delivery_recipients \
                 WHERE (provider, message_id) IN (VALUES {})",
                self.backend.values(chunk.len(), 2, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for (provider, message_id) in chunk {
                query = query.bind(provider).bind(message_id);
            }
            for row in query.fetch_all(&mut *tx).await? {
                let (provider, message_id): (String, String) =
                    (row.try_get("provider")?, row.try_get("message_id")?);
                let (owner, campaign): (String, String) =
                    (row.try_get("tenant_id")?, row.try_get("campaign_id")?);
                if owner != tenant.as_str() || campaign != campaign_id {
                    return Err(RegisterError::Refused(format!(
                        "message {message_id:?} of {provider} is registered to another campaign"
                    )));
                }
                existing.insert((provider, message_id));
            }
        }
        let new: Vec<&NewRecipient> = recipients
            .iter()
            .zip(&keys)
            .filter(|(_, key)| !existing.contains(*key))
            .map(|(recipient, _)| recipient)
            .collect();
        if registered + new.len() as u64 > size {
            return Err(RegisterError::Refused(format!(
                "campaign {campaign_id:?} would have {} recipients, more than its size of {size}",
                registered + new.len() as u64
            )));
        }
        for chunk in new.chunks(rows_per_statement(5)) {
            let sql = format!(
                "INSERT INTO delivery_recipients \
                 (provider, message_id, tenant_id, campaign_id, address) VALUES {}",
                self.backend.values(chunk.len(), 5, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for recipient in chunk {
                query = query
                    .bind(&recipient.provider)
                    .bind(&recipient.message_id)
                    .bind(tenant.as_str())
                    .bind(campaign_id)
                    .bind(&recipient.address);
            }
            query.execute(&mut *tx).await?;
        }

        // Events that named these messages before they were registered
        // were kept unmatched; applying them now is what lets a provider's
        // events arrive before the campaign does.
        let new_keys: Vec<OwnedKey> = new
            .iter()
            .map(|r| (r.provider.clone(), r.message_id.clone()))
            .collect();
        let mut late: Vec<(OwnedKey, DeliveryStatus)> = Vec::new();
        for chunk in new_keys.chunks(rows_per_statement(2)) {
            let sql = format!(
                "SELECT provider, message_id, event_type FROM delivery_events \
                 WHERE matched = FALSE AND (provider, message_id) IN (VALUES {})",
                self.backend.values(chunk.len(), 2, 1)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
            for (provider, message_id) in chunk {
                query = query.bind(provider).bind(message_id);
            }
            for row in query.fetch_all(&mut *tx).await? {
                late.push((
                    (row.try_get("provider")?, row.try_get("message_id")?),
                    status(row.try_get("event_type")?)?,
                ));
            }
        }
        let recipients = ByRecipient::new(
            late.iter()
                .map(|((provider, message_id), status)| {
                    ((provider.as_str(), message_id.as_str()), *status)
                })
                .collect(),
        );
        let campaign = (tenant.as_str().to_owned(), campaign_id.to_owned());
        let current: Current =
            vec![Some((Arc::new(campaign), RecipientState::NEW)); recipients.len()];
        let completed = self
            .apply_statuses(&mut tx, &recipients, &current, now)
            .await?;
        let late_keys: Vec<KeyRef> = (0..recipients.len())
            .map(|position| recipients.key(position))
            .collect();
        for chunk in late_keys.chunks(rows_per_statement(2) - 1) {
            let sql = format!(
                "UPDATE delivery_events SET matched = TRUE, tenant_id = {}, campaign_id = {} \
                 WHERE matched = FALSE AND (provider, message_id) IN (VALUES {})",
                self.backend.placeholder(1),
                self.backend.placeholder(2),
                self.backend.values(chunk.len(), 2, 3)
            );
            let mut query = sqlx::query(AssertSqlSafe(sql))
                .persistent(false)
                .bind(tenant.as_str())
                .bind(campaign_id);
            for (provider, message_id) in chunk {
                query = query.bind(provider).bind(message_id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        if !completed.is_empty() {
            self.outbox.nudge();
        }
        Ok(Registered {
            new_recipients: new.len(),
            late_events: late.len(),
            completed,
        })
    }

    /// Keeps why a registration was refused (once per registration).
    pub async fn record_rejection(
        &self,
        tenant: &TenantId,
        campaign_id: &str,
        registration_id: &str,
        reason: &str,
        recipients: u64,
        now: Timestamp,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO delivery_rejected_registrations \
             (tenant_id, campaign_id, registration_id, reason, recipients, rejected_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (tenant_id, campaign_id, registration_id) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(campaign_id)
        .bind(registration_id)
        .bind(reason)
        .bind(i64::try_from(recipients).unwrap_or(i64::MAX))
        .bind(now.unix_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A campaign as the read API shows it, with its refused registrations;
    /// `None` when the tenant has neither the campaign nor a refusal for it.
    pub async fn campaign_view(
        &self,
        tenant: &TenantId,
        campaign_id: &str,
    ) -> Result<Option<CampaignView>, sqlx::Error> {
        let sql = format!(
            "SELECT {CAMPAIGN_VIEW_COLUMNS} FROM delivery_campaigns c \
             WHERE c.tenant_id = $1 AND c.campaign_id = $2"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(campaign_id)
            .fetch_optional(&self.pool)
            .await?;
        let rejected: Vec<RejectedRegistration> = sqlx::query(
            "SELECT registration_id, reason, recipients, rejected_at \
             FROM delivery_rejected_registrations WHERE tenant_id = $1 AND campaign_id = $2 \
             ORDER BY rejected_at, registration_id",
        )
        .bind(tenant.as_str())
        .bind(campaign_id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|row| {
            Ok(RejectedRegistration {
                registration_id: row.try_get("registration_id")?,
                reason: row.try_get("reason")?,
                recipients: count(row, "recipients")?,
                rejected_at: instant(row.try_get("rejected_at")?)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
        let view = match row {
            Some(row) => campaign_view(tenant, &row)?,
            // Refused before any part of it was registered.
            None => match rejected.first() {
                None => return Ok(None),
                Some(first) => CampaignView {
                    tenant_id: tenant.clone(),
                    campaign_id: campaign_id.to_owned(),
                    size: 0,
                    registered: 0,
                    settled: 0,
                    counts: CampaignCounts::default(),
                    created_at: first.rejected_at,
                    completed_at: None,
                    rejected_registrations: None,
                },
            },
        };
        Ok(Some(CampaignView {
            rejected_registrations: Some(rejected),
            ..view
        }))
    }

    /// A page of the tenant's campaigns, newest first, and the cursor of
    /// the next page.
    pub async fn campaign_page(
        &self,
        tenant: &TenantId,
        limit: u32,
        after: Option<Keyset>,
    ) -> Result<(Vec<CampaignView>, Option<String>), sqlx::Error> {
        let sql = format!(
            "SELECT {CAMPAIGN_VIEW_COLUMNS} FROM delivery_campaigns c WHERE c.tenant_id = $1{}",
            Keyset::clause("c.created_at", "c.campaign_id", after.as_ref(), 2)
        );
        let query = sqlx::query(AssertSqlSafe(sql)).bind(tenant.as_str());
        let rows = Keyset::bind(query, after.as_ref(), limit)
            .fetch_all(&self.pool)
            .await?;
        let campaigns = rows
            .iter()
            .map(|row| campaign_view(tenant, row))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keyset::page(campaigns, limit, |c| {
            Keyset::new(c.created_at.unix_millis(), &c.campaign_id)
        }))
    }

    pub async fn campaign(
        &self,
        tenant: &TenantId,
        campaign_id: &str,
    ) -> Result<Option<CampaignRow>, sqlx::Error> {
        let sql = format!(
            "SELECT size, settled_count, completed_at, {COUNT_COLUMNS} FROM delivery_campaigns \
             WHERE tenant_id = $1 AND campaign_id = $2"
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(campaign_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let completed_at: Option<i64> = row.try_get("completed_at")?;
        Ok(Some(CampaignRow {
            size: count(&row, "size")?,
            counts: counts(&row)?,
            settled: count(&row, "settled_count")?,
            completed_at: completed_at.and_then(Timestamp::from_unix_millis),
        }))
    }

    /// A recipient's status, if registered.
    pub async fn recipient_status(
        &self,
        provider: &str,
        message_id: &str,
    ) -> Result<Option<DeliveryStatus>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT status FROM delivery_recipients WHERE provider = $1 AND message_id = $2",
        )
        .bind(provider)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| status(row.try_get("status")?)).transpose()
    }
}

/// Appends the events to the log; returns the stream sequences of those
/// that were new (the others were applied before: the database layer of
/// deduplication).
async fn insert_events(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    events: &[Fresh<'_, DeliveryFact>],
    enriched: Enriched<'_>,
    now_millis: i64,
) -> Result<HashSet<u64>, sqlx::Error> {
    const COLUMNS: usize = 13;
    // In key order: replicas inserting overlapping keys then wait on each
    // other instead of deadlocking.
    let mut order: Vec<u32> = (0..events.len() as u32).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&events[*a as usize].event, &events[*b as usize].event);
        (a.provider(), a.status.as_str(), a.message_id()).cmp(&(
            b.provider(),
            b.status.as_str(),
            b.message_id(),
        ))
    });
    let looked_up = |index: usize| match enriched {
        Enriched::Looked(enrichment) => match &enrichment[index] {
            Enrichment::Found(info) => Some(info),
            Enrichment::Unknown | Enrichment::Skipped => None,
        },
        Enriched::InTransaction => None,
    };
    let joined = matches!(enriched, Enriched::InTransaction);
    let mut new = HashSet::with_capacity(events.len());
    if backend == Backend::Postgres {
        for chunk in order.chunks(ARRAY_ROWS_PER_STATEMENT) {
            let mut columns: [PgArray; 12] = Default::default();
            for index in chunk {
                let fresh = &events[*index as usize];
                let fact = &fresh.event;
                let info = looked_up(*index as usize);
                let [
                    provider,
                    event_type,
                    message_id,
                    event_id,
                    occurred_at,
                    received_at,
                    sequence,
                    tenant,
                    campaign,
                    recipient,
                    reason,
                    url,
                ] = &mut columns;
                provider.text(Some(fact.provider()));
                event_type.text(Some(fact.status.as_str()));
                message_id.text(Some(fact.message_id()));
                event_id.text(Some(fact.event_id()));
                occurred_at.int(Some(fact.occurred_at.unix_millis()));
                received_at.int(Some(fresh.received_at().unix_millis()));
                sequence.int(Some(fresh.stream_sequence() as i64));
                tenant.text(info.map(|i| i.tenant_id()));
                campaign.text(info.map(|i| i.campaign_id()));
                recipient.text(info.map(|i| i.address.as_str()));
                reason.text(fact.reason.as_deref());
                url.text(fact.url.as_deref());
            }
            let sql = if joined {
                // Key order kept through the join (see above).
                "INSERT INTO delivery_events (provider, event_type, message_id, event_id, \
                 occurred_at, received_at, processed_at, stream_sequence, tenant_id, campaign_id, \
                 recipient, reason, url) \
                 SELECT v.provider, v.event_type, v.message_id, v.event_id, v.occurred_at, \
                 v.received_at, $13, v.stream_sequence, r.tenant_id, r.campaign_id, r.address, \
                 v.reason, v.url \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
                 $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], \
                 $12::text[]) WITH ORDINALITY AS v(provider, event_type, message_id, event_id, \
                 occurred_at, received_at, stream_sequence, tenant_id, campaign_id, recipient, \
                 reason, url, position) \
                 LEFT JOIN delivery_recipients r \
                 ON r.provider = v.provider AND r.message_id = v.message_id \
                 ORDER BY v.position \
                 ON CONFLICT (provider, event_type, message_id) DO NOTHING \
                 RETURNING stream_sequence"
            } else {
                "INSERT INTO delivery_events (provider, event_type, message_id, event_id, \
                 occurred_at, received_at, processed_at, stream_sequence, tenant_id, campaign_id, \
                 recipient, reason, url) \
                 SELECT provider, event_type, message_id, event_id, occurred_at, received_at, $13, \
                 stream_sequence, tenant_id, campaign_id, recipient, reason, url \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
                 $6::bigint[], $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], \
                 $12::text[]) AS v(provider, event_type, message_id, event_id, occurred_at, \
                 received_at, stream_sequence, tenant_id, campaign_id, recipient, reason, url) \
                 ON CONFLICT (provider, event_type, message_id) DO NOTHING \
                 RETURNING stream_sequence"
            };
            db::insert_returning_sequences(tx, sql, columns, now_millis, &mut new).await?;
        }
        return Ok(new);
    }
    for chunk in order.chunks(rows_per_statement(COLUMNS)) {
        let values = backend.values(chunk.len(), COLUMNS, 1);
        let sql = if joined {
            // `WHERE true` keeps the upsert clause apart from the join's `ON`
            // for SQLite's parser.
            format!(
                "INSERT INTO delivery_events (provider, event_type, message_id, event_id, \
                 occurred_at, received_at, processed_at, stream_sequence, tenant_id, campaign_id, \
                 recipient, reason, url) \
                 SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
                 v.column7, v.column8, r.tenant_id, r.campaign_id, r.address, v.column12, \
                 v.column13 \
                 FROM (VALUES {values}) AS v \
                 LEFT JOIN delivery_recipients r \
                 ON r.provider = v.column1 AND r.message_id = v.column3 \
                 WHERE true \
                 ON CONFLICT (provider, event_type, message_id) DO NOTHING \
                 RETURNING stream_sequence"
            )
        } else {
            format!(
                "INSERT INTO delivery_events (provider, event_type, message_id, event_id, \
                 occurred_at, received_at, processed_at, stream_sequence, tenant_id, campaign_id, \
                 recipient, reason, url) VALUES {values} \
                 ON CONFLICT (provider, event_type, message_id) DO NOTHING \
                 RETURNING stream_sequence"
            )
        };
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for index in chunk {
            let fresh = &events[*index as usize];
            let fact = &fresh.event;
            let info = looked_up(*index as usize);
            query = query
                .bind(fact.provider())
                .bind(fact.status.as_str())
                .bind(fact.message_id())
                .bind(fact.event_id())
                .bind(fact.occurred_at.unix_millis())
                .bind(fresh.received_at().unix_millis())
                .bind(now_millis)
                .bind(fresh.stream_sequence() as i64)
                .bind(info.map(|i| i.tenant_id().to_owned()))
                .bind(info.map(|i| i.campaign_id().to_owned()))
                .bind(info.map(|i| i.address.clone()))
                .bind(fact.reason.as_deref())
                .bind(fact.url.as_deref());
        }
        db::collect_new_sequences(tx, query, &mut new).await?;
    }
    Ok(new)
}

/// The recipient a delivery event is about.
fn key_of(fact: &DeliveryFact) -> KeyRef<'_> {
    (fact.provider(), fact.message_id())
}

/// Recipients' keys as two PostgreSQL arrays: providers and message ids.
fn key_arrays<'k>(keys: impl Iterator<Item = KeyRef<'k>>) -> (String, String) {
    let (mut providers, mut message_ids) = (PgArray::new(), PgArray::new());
    for (provider, message_id) in keys {
        providers.text(Some(provider));
        message_ids.text(Some(message_id));
    }
    (providers.finish(), message_ids.finish())
}

/// Takes [`REGISTRATION_LOCK`] until the transaction ends (PostgreSQL).
async fn serialise_registrations(tx: &mut Transaction<'static, Any>) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(REGISTRATION_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes the new state of the recipients at the changes' positions.
async fn update_recipients(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    recipients: &ByRecipient<'_>,
    changes: &[(usize, RecipientState)],
    now_millis: i64,
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        if changes.is_empty() {
            return Ok(());
        }
        for chunk in changes.chunks(ARRAY_ROWS_PER_STATEMENT) {
            let (providers, message_ids) =
                key_arrays(chunk.iter().map(|(position, _)| recipients.key(*position)));
            let (mut statuses, mut evidence) = (PgArray::new(), PgArray::new());
            for (_, state) in chunk {
                statuses.text(Some(state.status.as_str()));
                evidence.int(Some(state.evidence));
            }
            sqlx::query(
                "UPDATE delivery_recipients r SET status = v.status, evidence = v.evidence, \
                 updated_at = $5 \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) \
                 AS v(provider, message_id, status, evidence) \
                 WHERE r.provider = v.provider AND r.message_id = v.message_id",
            )
            .bind(providers)
            .bind(message_ids)
            .bind(statuses.finish())
            .bind(evidence.finish())
            .bind(now_millis)
            .execute(&mut **tx)
            .await?;
        }
        return Ok(());
    }
    for chunk in changes.chunks(rows_per_statement(4) - 1) {
        let sql = format!(
            "UPDATE delivery_recipients SET status = v.column3, evidence = v.column4, \
             updated_at = {} FROM (VALUES {}) AS v \
             WHERE delivery_recipients.provider = v.column1 \
             AND delivery_recipients.message_id = v.column2",
            backend.placeholder(1),
            backend.values(chunk.len(), 4, 2)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(now_millis);
        for (position, state) in chunk {
            let (provider, message_id) = recipients.key(*position);
            query = query
                .bind(provider)
                .bind(message_id)
                .bind(state.status.as_str())
                .bind(state.evidence);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Locks the campaigns a batch updates in key order, so that replicas
/// updating the same campaigns never deadlock on each other.
async fn lock_campaigns(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    deltas: &BTreeMap<(String, String), CounterDelta>,
) -> Result<(), sqlx::Error> {
    let keys: Vec<_> = deltas.keys().collect();
    for chunk in keys.chunks(rows_per_statement(2)) {
        let sql = format!(
            "SELECT tenant_id FROM delivery_campaigns WHERE (tenant_id, campaign_id) IN (VALUES {}) \
             ORDER BY tenant_id, campaign_id FOR UPDATE",
            backend.values(chunk.len(), 2, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for (tenant, campaign) in chunk {
            query = query.bind(tenant).bind(campaign);
        }
        query.fetch_all(&mut **tx).await?;
    }
    Ok(())
}

async fn update_campaigns(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    deltas: &BTreeMap<(String, String), CounterDelta>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<_> = deltas.iter().filter(|(_, d)| !d.is_zero()).collect();
    for chunk in rows.chunks(rows_per_statement(9)) {
        let sql = format!(
            "UPDATE delivery_campaigns SET \
             delivered_count = delivered_count + v.column3, \
             opened_count = opened_count + v.column4, \
             clicked_count = clicked_count + v.column5, \
             bounced_count = bounced_count + v.column6, \
             complained_count = complained_count + v.column7, \
             failed_count = failed_count + v.column8, \
             settled_count = settled_count + v.column9 \
             FROM (VALUES {}) AS v \
             WHERE delivery_campaigns.tenant_id = v.column1 \
             AND delivery_campaigns.campaign_id = v.column2",
            backend.values(chunk.len(), 9, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for ((tenant, campaign), delta) in chunk {
            query = query
                .bind(tenant)
                .bind(campaign)
                .bind(delta.delivered)
                .bind(delta.opened)
                .bind(delta.clicked)
                .bind(delta.bounced)
                .bind(delta.complained)
                .bind(delta.failed)
                .bind(delta.settled);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Marks the campaigns among `candidates` whose recipients are all settled
/// as completed, once: the `completed_at IS NULL` condition is evaluated
/// under the row lock, so two replicas cannot both complete one campaign.
async fn complete_campaigns(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    candidates: &[&(String, String)],
    now: Timestamp,
) -> Result<Vec<CampaignCompleted>, sqlx::Error> {
    let mut completed = Vec::new();
    for chunk in candidates.chunks(rows_per_statement(2) - 1) {
        let sql = format!(
            "UPDATE delivery_campaigns SET completed_at = {} \
             WHERE completed_at IS NULL AND settled_count >= size \
             AND (tenant_id, campaign_id) IN (VALUES {}) \
             RETURNING tenant_id, campaign_id, size, {COUNT_COLUMNS}",
            backend.placeholder(1),
            backend.values(chunk.len(), 2, 2)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .persistent(false)
            .bind(now.unix_millis());
        for (tenant, campaign) in chunk {
            query = query.bind(tenant).bind(campaign);
        }
        let mut rows = query.fetch(&mut **tx);
        while let Some(row) = rows.try_next().await? {
            let tenant: String = row.try_get("tenant_id")?;
            completed.push(CampaignCompleted {
                tenant_id: TenantId::parse(&tenant).map_err(|e| sqlx::Error::Decode(e.into()))?,
                campaign_id: row.try_get("campaign_id")?,
                size: count(&row, "size")?,
                counts: counts(&row)?,
                completed_at: now,
            });
        }
    }
    Ok(completed)
}

async fn mark_unmatched(
    backend: Backend,
    tx: &mut Transaction<'static, Any>,
    unmatched: &[&DeliveryFact],
) -> Result<(), sqlx::Error> {
    if backend == Backend::Postgres {
        if unmatched.is_empty() {
            return Ok(());
        }
        for chunk in unmatched.chunks(ARRAY_ROWS_PER_STATEMENT) {
            let [mut providers, mut types, mut message_ids]: [PgArray; 3] = Default::default();
            for fact in chunk {
                providers.text(Some(fact.provider()));
                types.text(Some(fact.status.as_str()));
                message_ids.text(Some(fact.message_id()));
            }
            sqlx::query(
                "UPDATE delivery_events e SET matched = FALSE \
                 FROM UNNEST($1::text[], $2::text[], $3::text[]) \
                 AS v(provider, event_type, message_id) \
                 WHERE e.provider = v.provider AND e.event_type = v.event_type \
                 AND e.message_id = v.message_id",
            )
            .bind(providers.finish())
            .bind(types.finish())
            .bind(message_ids.finish())
            .execute(&mut **tx)
            .await?;
        }
        return Ok(());
    }
    for chunk in unmatched.chunks(rows_per_statement(3)) {
        let sql = format!(
            "UPDATE delivery_events SET matched = FALSE \
             WHERE (provider, event_type, message_id) IN (VALUES {})",
            backend.values(chunk.len(), 3, 1)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
        for fact in chunk {
            query = query
                .bind(fact.provider())
                .bind(fact.status.as_str())
                .bind(fact.message_id());
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

fn completion_message(completed: &CampaignCompleted) -> OutboxMessage {
    let id = format!("{}:{}", completed.tenant_id.as_str(), completed.campaign_id);
    let envelope = Envelope::new(
        id.clone(),
        "/batch-processor",
        completed.completed_at,
        completed.tenant_id.clone(),
        Some(completed.campaign_id.clone()),
        completed.clone(),
    );
    OutboxMessage {
        msg_id: format!("{CAMPAIGN_COMPLETED}:{id}"),
        subject: CAMPAIGN_COMPLETED.to_owned(),
        payload: String::from_utf8(envelope.to_json()).expect("JSON is UTF-8"),
        // The batch that completed it.
        trace: TraceHeaders::current(),
    }
}

/// The recipients table as 004's lookup table, read without locks.
#[derive(Debug, Clone)]
pub struct RecipientLookup {
    pool: Pool,
    backend: Backend,
}

impl RecipientLookup {
    pub fn new(pool: Pool, backend: Backend) -> Self {
        Self { pool, backend }
    }
}

impl Lookup for RecipientLookup {
    type Key = RecipientKey;
    type Value = RecipientInfo;

    async fn lookup(
        &self,
        keys: &[RecipientKey],
    ) -> Result<HashMap<RecipientKey, RecipientInfo>, String> {
        let mut found = HashMap::with_capacity(keys.len());
        let mut campaigns: HashMap<(String, String), Campaign> = HashMap::new();
        for chunk in keys.chunks(rows_per_statement(2)) {
            let query = match self.backend {
                Backend::Postgres => {
                    let (providers, message_ids) =
                        key_arrays(chunk.iter().map(|key| (key.provider(), key.message_id())));
                    sqlx::query(
                        "SELECT r.provider, r.message_id, r.tenant_id, r.campaign_id, r.address \
                         FROM delivery_recipients r \
                         JOIN UNNEST($1::text[], $2::text[]) AS k(provider, message_id) \
                         ON r.provider = k.provider AND r.message_id = k.message_id",
                    )
                    .bind(providers)
                    .bind(message_ids)
                }
                Backend::Sqlite => {
                    let sql = format!(
                        "SELECT provider, message_id, tenant_id, campaign_id, address \
                         FROM delivery_recipients WHERE (provider, message_id) IN (VALUES {})",
                        self.backend.values(chunk.len(), 2, 1)
                    );
                    let mut query = sqlx::query(AssertSqlSafe(sql)).persistent(false);
                    for key in chunk {
                        query = query.bind(key.provider()).bind(key.message_id());
                    }
                    query
                }
            };
            let rows = query
                .fetch_all(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
            for row in rows {
                let mut read = || -> Result<_, sqlx::Error> {
                    let campaign = campaigns
                        .entry((row.try_get("tenant_id")?, row.try_get("campaign_id")?))
                        .or_insert_with_key(|owner| Arc::new(owner.clone()))
                        .clone();
                    let (provider, message_id): (String, String) =
                        (row.try_get("provider")?, row.try_get("message_id")?);
                    Ok((
                        RecipientKey::new(&provider, &message_id),
                        RecipientInfo {
                            campaign,
                            address: row.try_get("address")?,
                        },
                    ))
                };
                let (key, info) = read().map_err(|e| e.to_string())?;
                found.insert(key, info);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fact_and_a_recipient_key_give_back_each_part_of_their_text() {
        let fact = DeliveryFact::new(
            "ses",
            DeliveryStatus::Bounced,
            "msg-ü-1",
            "evt-42",
            Timestamp::now(),
        );
        assert_eq!(
            (fact.provider(), fact.message_id(), fact.event_id()),
            ("ses", "msg-ü-1", "evt-42")
        );
        let empty = DeliveryFact::new("", DeliveryStatus::Sent, "", "", Timestamp::now());
        assert_eq!(
            (empty.provider(), empty.message_id(), empty.event_id()),
            ("", "", "")
        );
        assert!(format!("{fact:?}").contains(r#"message_id: "msg-ü-1""#));

        let key = RecipientKey::new("ses", "msg-1");
        assert_eq!((key.provider(), key.message_id()), ("ses", "msg-1"));
        assert_ne!(key, RecipientKey::new("sesm", "sg-1"));
    }
}
