//! The batch engine's model check, without a broker: a batch holding every
//! kind of twin and statuses out of order commits the same rows as the
//! same events applied one at a time, on SQLite and on PostgreSQL. The
//! set-based statements fold a batch's events per row; applying them one
//! by one is the definition they must agree with.

use std::collections::BTreeMap;
use std::sync::Arc;

use hookmesh_batch_processor::MIGRATOR;
use hookmesh_batch_processor::ci::CiFamily;
use hookmesh_batch_processor::ci::store::CiStore;
use hookmesh_batch_processor::delivery::DeliveryFamily;
use hookmesh_batch_processor::delivery::store::{DeliveryStore, NewRecipient, RecipientLookup};
use hookmesh_batch_processor::enrich::Enricher;
use hookmesh_batch_processor::telemetry::BatchMetrics;
use hookmesh_contracts::ci::{
    CiMetadata, CiPipelineEvent, CiPlatform, FailureContext, PipelineEventType,
};
use hookmesh_contracts::delivery::{DeliveryEvent, DeliveryStatus, DeliveryWebhookEvent};
use hookmesh_contracts::subjects::{ci_pipeline, provider_delivery};
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::{Envelope, TenantId, Timestamp};
use hookmesh_runtime::Delivery;
use hookmesh_runtime::consume::{Handler as _, Outcome};
use hookmesh_runtime::db::{self, Backend, Pool};
use hookmesh_runtime::engine::{BatchHandler, Deduplicator, Family};
use hookmesh_runtime::outbox::Outbox;
use hookmesh_tests::TestDb;
use prometheus_client::registry::Registry;
use sqlx::{AssertSqlSafe, Row as _};

use crate::buddy_program::Random;
use crate::delivery_program::{Program, TENANT, generate};

/// Each table's rows as text, in key order, without the columns that
/// record when a row was written.
const SNAPSHOT: [(&str, &str); 8] = [
    (
        "delivery_campaigns",
        "tenant_id, campaign_id, size, delivered_count, opened_count, clicked_count, \
         bounced_count, complained_count, failed_count, settled_count, \
         completed_at IS NOT NULL",
    ),
    (
        "delivery_recipients",
        "provider, message_id, tenant_id, campaign_id, address, status, evidence",
    ),
    (
        "delivery_events",
        "provider, event_type, message_id, event_id, occurred_at, stream_sequence, \
         tenant_id, campaign_id, recipient, matched, reason, url",
    ),
    (
        "ci_runs",
        "platform, repository, pipeline_id, job_key, status, status_at, started_at, \
         finished_at, pipeline_name, job_name, branch, commit_sha, logs_url, error_patterns, \
         failure_reason, exit_code, duration_ms, last_event_id",
    ),
    (
        "ci_events",
        "platform, event_type, event_id, repository, pipeline_id, job_key, occurred_at, \
         stream_sequence, error_patterns",
    ),
    (
        "ci_repository_failures",
        "platform, repository, pipeline_failures, job_failures, last_failed_at",
    ),
    (
        "ci_failure_patterns",
        "platform, repository, pattern, failures",
    ),
    ("batch_outbox", "msg_id, subject"),
];

async fn snapshot(pool: &Pool) -> BTreeMap<&'static str, Vec<Vec<Option<String>>>> {
    let mut tables = BTreeMap::new();
    for (table, columns) in SNAPSHOT {
        let texts: Vec<String> = columns
            .split(", ")
            .map(|column| format!("CAST({column} AS TEXT)"))
            .collect();
        let sql = format!(
            "SELECT {} FROM {table} ORDER BY {}",
            texts.join(", "),
            (1..=texts.len())
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(pool)
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        let rows = rows
            .iter()
            .map(|row| {
                (0..texts.len())
                    .map(|i| row.try_get::<Option<String>, _>(i).unwrap())
                    .collect()
            })
            .collect();
        tables.insert(table, rows);
    }
    tables
}

/// A database with the batch-processor's tables, its stores and the two
/// families' handlers (memory-only dedup: the database decides the rest).
struct Engine {
    pool: Pool,
    backend: Backend,
    enrichment: Enrichment,
    delivery_store: DeliveryStore,
    delivery: BatchHandler<DeliveryFamily>,
    ci: BatchHandler<CiFamily>,
}

/// Where the delivery family's recipient columns come from.
#[derive(Debug, Clone, Copy)]
enum Enrichment {
    /// The events log's insert joins them (no lookup database).
    Joined,
    /// Looked up, cache first, on a lookup database (here the same one).
    LookedUp,
}

impl Engine {
    async fn open(url: &str, enrichment: Enrichment) -> Self {
        let backend = Backend::of(url).unwrap();
        let pool = db::connect(url).await.unwrap();
        db::migrate(&pool, &MIGRATOR).await.unwrap();
        let outbox = Outbox::new(pool.clone(), backend, "batch_outbox");
        let delivery_store = DeliveryStore::new(pool.clone(), backend, outbox);
        let (delivery, ci) = handlers(&pool, backend, &delivery_store, enrichment);
        Self {
            pool,
            backend,
            enrichment,
            delivery_store,
            delivery,
            ci,
        }
    }

    /// Fresh handlers on the same database: no memory of what this
    /// engine's handlers committed.
    fn forgetful(&self) -> (BatchHandler<DeliveryFamily>, BatchHandler<CiFamily>) {
        handlers(
            &self.pool,
            self.backend,
            &self.delivery_store,
            self.enrichment,
        )
    }

    /// Registers the program's campaigns whose index `registered` accepts.
    async fn register(&self, program: &Program, registered: impl Fn(usize) -> bool) {
        let tenant = TenantId::parse(TENANT).unwrap();
        for (index, (campaign, recipients)) in program.campaigns.iter().enumerate() {
            if !registered(index) {
                continue;
            }
            let list: Vec<NewRecipient> = recipients
                .iter()
                .map(|r| NewRecipient {
                    provider: r.provider.to_owned(),
                    message_id: r.message_id.clone(),
                    address: format!("{}@example.com", r.message_id),
                })
                .collect();
            self.delivery_store
                .register_campaign(
                    &tenant,
                    campaign,
                    list.len() as u64,
                    &list,
                    Timestamp::now(),
                )
                .await
                .unwrap();
        }
    }
}

fn instant(second: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_740_000_000_000 + second * 1000).unwrap()
}

/// A provider event as the gateway publishes it, under envelope `id`.
fn delivery_message(
    id: &str,
    provider: &str,
    status: &str,
    message_id: &str,
    second: i64,
) -> Delivery {
    let status = DeliveryStatus::from_wire(status).unwrap();
    let event = DeliveryEvent {
        provider: provider.to_owned(),
        delivery: DeliveryWebhookEvent {
            event_type: status,
            message_id: message_id.to_owned(),
            timestamp: instant(second),
            recipient: None,
            campaign_id: None,
            reason: (status == DeliveryStatus::Bounced).then(|| "mailbox full".to_owned()),
            url: (status == DeliveryStatus::Clicked).then(|| format!("https://x.test/{id}")),
            metadata: None,
        },
    };
    let envelope = Envelope::new(
        id.to_owned(),
        "/test",
        instant(second),
        TenantId::parse(TENANT).unwrap(),
        Some(message_id.to_owned()),
        event,
    );
    Delivery::detached(&provider_delivery(provider, status), envelope.to_json())
}

fn ci_message(
    id: &str,
    event_type: PipelineEventType,
    pipeline: &str,
    job: Option<&str>,
    attempt: Option<u32>,
    second: i64,
) -> Delivery {
    let failed = event_type == PipelineEventType::Failed;
    let event = CiPipelineEvent {
        id: id.to_owned(),
        timestamp: instant(second),
        platform: CiPlatform::Github,
        event_type,
        repository: "acme/app".to_owned(),
        pipeline_id: pipeline.to_owned(),
        job_id: job.map(str::to_owned),
        run_attempt: attempt,
        metadata: CiMetadata {
            branch: Some(format!("branch-{id}")),
            ..CiMetadata::default()
        },
        failure_context: failed.then(|| FailureContext {
            exit_code: Some(1),
            reason: Some(format!("reason of {id}")),
            log_excerpt: Some("Error: connect ECONNREFUSED 10.0.0.5:5432".to_owned()),
            ..FailureContext::default()
        }),
    };
    let envelope = Envelope::new(
        id.to_owned(),
        "/test",
        instant(second),
        TenantId::parse(TENANT).unwrap(),
        None,
        event,
    );
    Delivery::detached(
        &ci_pipeline(CiPlatform::Github, event_type),
        envelope.to_json(),
    )
}

/// The program's events shuffled (statuses out of order), with every kind
/// of twin: the same event under a second envelope id (a provider's
/// resend), the same envelope twice, the same message id from the other
/// provider, and events of messages nobody registered; plus a message
/// that can never be read. Stream sequences are distinct, as JetStream's.
fn delivery_batch(program: &Program) -> Vec<Delivery> {
    let mut random = Random::new(15);
    let mut events = program.events.clone();
    random.shuffle(&mut events);
    let mut messages = Vec::new();
    for (n, sent) in events.iter().enumerate() {
        let id = format!("e{n}");
        let message = |id: &str| {
            delivery_message(
                id,
                sent.provider,
                sent.status,
                &sent.message_id,
                sent.second,
            )
        };
        messages.push(message(&id));
        if random.chance(0.15) {
            messages.push(message(&format!("{id}-resent")));
        }
        if random.chance(0.1) {
            messages.push(message(&id));
        }
    }
    messages.push(delivery_message(
        "stranger-1",
        "ses",
        "delivered",
        "msg-0-0000-nobody",
        5,
    ));
    messages.push(Delivery::detached(
        "providers.ses.delivered",
        &b"{\"not\": \"an envelope\"}"[..],
    ));
    random.shuffle(&mut messages);
    messages
        .into_iter()
        .enumerate()
        .map(|(n, message)| message.at(n as u64 + 1, 1))
        .collect()
}

/// Runs and jobs with their events out of order: completed before started,
/// a failure reported twice under two ids, a retried attempt failing
/// again, twins of every event; `runs` runs.
fn ci_batch(runs: i64) -> Vec<Delivery> {
    use PipelineEventType::{Completed, Failed, Started};
    let mut random = Random::new(1500);
    let mut messages = Vec::new();
    for run in 0..runs {
        let pipeline = format!("run-{run}");
        let job = (run % 3 == 0).then(|| format!("job-{run}"));
        let job = job.as_deref();
        let end = if run % 2 == 0 { Completed } else { Failed };
        let mut events = vec![
            ci_message(&format!("{pipeline}-s"), Started, &pipeline, job, None, run),
            ci_message(
                &format!("{pipeline}-e"),
                end,
                &pipeline,
                job,
                None,
                run + 60,
            ),
        ];
        if end == Failed {
            events.push(ci_message(
                &format!("{pipeline}-e2"),
                Failed,
                &pipeline,
                job,
                None,
                run + 61,
            ));
            if run % 5 == 1 {
                events.push(ci_message(
                    &format!("{pipeline}-a2"),
                    Failed,
                    &pipeline,
                    job,
                    Some(2),
                    run + 120,
                ));
            }
        }
        if run % 4 == 0 {
            // A late start of a run that already completed.
            events.push(ci_message(
                &format!("{pipeline}-s2"),
                Started,
                &pipeline,
                job,
                None,
                run - 30,
            ));
        }
        for event in events {
            if random.chance(0.2) {
                messages.push(Delivery::detached(
                    event.subject(),
                    event.payload().to_vec(),
                ));
            }
            messages.push(event);
        }
    }
    random.shuffle(&mut messages);
    messages
        .into_iter()
        .enumerate()
        .map(|(n, message)| message.at(n as u64 + 1, 1))
        .collect()
}

fn copy(messages: &[Delivery]) -> Vec<Delivery> {
    messages
        .iter()
        .map(|m| {
            Delivery::detached(m.subject(), m.payload().to_vec()).at(m.stream_sequence, m.delivered)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_twins_and_reordered_statuses_commits_what_one_by_one_does() {
    let mut pairs = vec![(TestDb::sqlite(), TestDb::sqlite())];
    if let (Some(a), Some(b)) = (TestDb::postgres().await, TestDb::postgres().await) {
        pairs.push((a, b));
    }
    let program = generate(15, 6, 40);
    let deliveries = delivery_batch(&program);
    let ci = ci_batch(30);
    // The last campaign is registered after its events: they are logged
    // unmatched, then applied by the registration.
    let early = |index: usize| index + 1 < program.campaigns.len();
    let late = |index: usize| index + 1 == program.campaigns.len();
    // The batch's recipients are joined by its insert, the single
    // messages' looked up: both ways fill the same columns.
    for (batched, single) in pairs {
        let (batched, single) = (
            Engine::open(&batched.url, Enrichment::Joined).await,
            Engine::open(&single.url, Enrichment::LookedUp).await,
        );

        batched.register(&program, early).await;
        // A first batch commits part of the events, so that the big batch
        // meets some of them again at the database layer (a fresh handler
        // has no memory of them).
        let split = deliveries.len() / 4;
        batched
            .delivery
            .handle(&mut copy(&deliveries[..split]))
            .await;
        let again = batched.forgetful();
        let outcomes = again.0.handle(&mut copy(&deliveries)).await;
        assert_eq!(outcomes.len(), deliveries.len());
        let ci_outcomes = again.1.handle(&mut copy(&ci)).await;
        batched.register(&program, late).await;

        single.register(&program, early).await;
        let mut single_outcomes = Vec::new();
        for mut message in copy(&deliveries[..split]) {
            single
                .delivery
                .handle(std::slice::from_mut(&mut message))
                .await;
        }
        for mut message in copy(&deliveries) {
            single_outcomes.extend(
                single
                    .delivery
                    .handle(std::slice::from_mut(&mut message))
                    .await,
            );
        }
        let mut single_ci = Vec::new();
        for mut message in copy(&ci) {
            single_ci.extend(single.ci.handle(std::slice::from_mut(&mut message)).await);
        }
        single.register(&program, late).await;

        let done = |outcomes: &[Outcome]| outcomes.iter().filter(|o| **o == Outcome::Done).count();
        assert_eq!(
            outcomes, single_outcomes,
            "each message settles the same way"
        );
        assert_eq!(
            done(&outcomes),
            deliveries.len() - 1,
            "only the unreadable one is dead-lettered"
        );
        assert_eq!(ci_outcomes, single_ci);
        assert!(ci_outcomes.iter().all(|o| *o == Outcome::Done));

        let (batched_rows, single_rows) =
            (snapshot(&batched.pool).await, snapshot(&single.pool).await);
        for (table, rows) in &single_rows {
            assert!(
                !rows.is_empty() || *table == "ci_failure_patterns",
                "{table} has rows"
            );
            assert_eq!(&batched_rows[table], rows, "table {table}");
        }
    }
}

fn handler<F: Family>(family: F, metrics: &BatchMetrics) -> BatchHandler<F> {
    let observer = Arc::new(metrics.family(F::NAME));
    BatchHandler::new(
        family,
        Deduplicator::new(F::NAME, None, observer.clone()),
        observer,
    )
}

fn handlers(
    pool: &Pool,
    backend: Backend,
    delivery_store: &DeliveryStore,
    enrichment: Enrichment,
) -> (BatchHandler<DeliveryFamily>, BatchHandler<CiFamily>) {
    let metrics = BatchMetrics::register(&mut Registry::default());
    let outbox = Outbox::new(pool.clone(), backend, "batch_outbox");
    let enricher = match enrichment {
        Enrichment::Joined => None,
        Enrichment::LookedUp => Some(Enricher::new(
            RecipientLookup::new(pool.clone(), backend),
            Default::default(),
            metrics.clone(),
        )),
    };
    (
        handler(
            DeliveryFamily::new(delivery_store.clone(), enricher, metrics.clone()),
            &metrics,
        ),
        handler(
            CiFamily::new(CiStore::new(pool.clone(), backend, outbox), metrics.clone()),
            &metrics,
        ),
    )
}

/// A batch larger than one PostgreSQL statement carries
/// (`ARRAY_ROWS_PER_STATEMENT`) and than SQLite's bind limit: its delivery
/// events, recipients, status changes and unmatched events, and its CI
/// events, each span several statements, and commit the same rows as the
/// same messages in batches of a thousand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_spanning_several_statements_commits_what_smaller_batches_do() {
    let mut pairs = vec![(TestDb::sqlite(), TestDb::sqlite())];
    if let (Some(a), Some(b)) = (TestDb::postgres().await, TestDb::postgres().await) {
        pairs.push((a, b));
    }
    // 4 800 recipients; half registered before their events, half after.
    let program = generate(21, 8, 600);
    let deliveries = delivery_batch(&program);
    let ci = ci_batch(1_000);
    assert!(ci.len() > db::ARRAY_ROWS_PER_STATEMENT);
    let early = |index: usize| index < 4;
    let late = |index: usize| index >= 4;
    assert!(
        program
            .campaigns
            .values()
            .take(4)
            .map(Vec::len)
            .sum::<usize>()
            > db::ARRAY_ROWS_PER_STATEMENT
    );
    for (whole, parts) in pairs {
        let (whole, parts) = (
            Engine::open(&whole.url, Enrichment::Joined).await,
            Engine::open(&parts.url, Enrichment::Joined).await,
        );
        whole.register(&program, early).await;
        parts.register(&program, early).await;
        let mut outcomes = whole.delivery.handle(&mut copy(&deliveries)).await;
        outcomes.extend(whole.ci.handle(&mut copy(&ci)).await);
        let mut part_outcomes = Vec::new();
        for chunk in deliveries.chunks(1_000) {
            part_outcomes.extend(parts.delivery.handle(&mut copy(chunk)).await);
        }
        for chunk in ci.chunks(1_000) {
            part_outcomes.extend(parts.ci.handle(&mut copy(chunk)).await);
        }
        whole.register(&program, late).await;
        parts.register(&program, late).await;

        assert_eq!(outcomes, part_outcomes, "each message settles the same way");
        let (whole_rows, part_rows) = (snapshot(&whole.pool).await, snapshot(&parts.pool).await);
        assert!(whole_rows["delivery_events"].len() > 2 * db::ARRAY_ROWS_PER_STATEMENT);
        assert!(whole_rows["ci_events"].len() > db::ARRAY_ROWS_PER_STATEMENT);
        for (table, rows) in &part_rows {
            assert_eq!(&whole_rows[table], rows, "table {table}");
        }
    }
}
