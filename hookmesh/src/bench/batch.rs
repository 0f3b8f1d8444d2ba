//! `hookmesh bench batch`: how fast the batch-processor takes delivery
//! events from JetStream to committed rows, against the raw JetStream
//! consume rate measured on the same broker in the same run.
//!
//! - **Raw baseline.** `--events` messages of the same size in a scratch
//!   stream, pulled and acknowledged one by one by a plain consumer.
//! - **Backlog**, per database and batch size. With the service stopped,
//!   `--events` events (half `delivered`, half `opened`, for registered
//!   recipients) are published; the service is started and timed until
//!   every event is committed: events/s from publish to committed.
//! - **Sustained**, per database and batch size. `--rate` events/s for
//!   `--duration-secs` on a running service; p50/p99 of the lag from each
//!   event's arrival in JetStream to its commit
//!   (`webhook_processing_lag_seconds`).
//! - **Memory.** A fresh `hookmesh batch-processor` child with batches of
//!   10 000, fed 10 000 events: its peak resident memory above its idle
//!   size.
//! - **CI failure detection.** Failure events at 50/s; the time from each
//!   publish to its `ci.failure.detected` arriving.

use std::collections::HashMap;
use std::future::IntoFuture as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt as _;
use hookmesh_batch_processor::delivery::store::{DeliveryFact, NewRecipient};
use hookmesh_batch_processor::delivery::{DeliveryFamily, parse_delivery};
use hookmesh_batch_processor::telemetry::BatchMetrics;
use hookmesh_batch_processor::{BatchProcessor, BatchSettings};
use hookmesh_contracts::ci::{
    CiMetadata, CiPipelineEvent, CiPlatform, FailureContext, PipelineEventType,
};
use hookmesh_contracts::delivery::{DeliveryEvent, DeliveryStatus, DeliveryWebhookEvent};
use hookmesh_contracts::subjects::{CI_FAILURE_DETECTED, ci_pipeline, provider_delivery};
use hookmesh_contracts::validation::StrEnum as _;
use hookmesh_contracts::{Envelope, TenantId, Timestamp};
use hookmesh_nats::definitions::DELIVERY_CONSUMER;
use hookmesh_runtime::Delivery;
use hookmesh_runtime::consume::{self, ConsumeSettings};
use hookmesh_runtime::engine::{
    Applied, ApplyError, BatchHandler, DedupKey, Family, Fresh, Observer,
};
use hookmesh_runtime::metrics::ConsumeFamilies;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use super::{ScratchDir, broker, free_port, percentile_ms, rss_mib, stop_broker, wait_ready};
use crate::AnyError;
use crate::cli::{BatchBenchArgs, CommonArgs};

const PROVIDER: &str = "sendgrid";
const CAMPAIGNS: usize = 10;

/// `registry`'s metrics in the text format.
fn metrics_text(registry: &Registry) -> String {
    let mut text = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Delivery events settled in `registry`: applied, unmatched or duplicate.
fn settled(registry: &Registry) -> u64 {
    let text = metrics_text(registry);
    ["applied", "unmatched", "duplicate"]
        .iter()
        .map(|status| {
            let sample =
                format!("webhooks_processed_total{{family=\"delivery\",status=\"{status}\"}} ");
            text.lines()
                .find_map(|line| line.strip_prefix(&sample))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        })
        .sum()
}

async fn wait_settled(
    registry: &Registry,
    expected: u64,
    timeout: Duration,
) -> Result<(), AnyError> {
    let deadline = Instant::now() + timeout;
    while settled(registry) < expected {
        if Instant::now() > deadline {
            return Err(format!(
                "{} of {expected} events settled within {timeout:?}",
                settled(registry)
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A batch-processor running in this process, with its own metrics.
struct Running {
    stop: watch::Sender<bool>,
    service: BatchProcessor,
    registry: Registry,
}

impl Running {
    async fn start(nats_url: &str, settings: BatchSettings) -> Result<Self, AnyError> {
        let mut registry = Registry::default();
        let consume = ConsumeFamilies::register(&mut registry);
        let metrics = BatchMetrics::register(&mut registry);
        let (stop, stopped) = watch::channel(false);
        let nats = hookmesh_nats::NatsEndpoint::plain(nats_url);
        let service = crate::batch::start(&nats, settings, metrics, consume, stopped).await?;
        let readiness = service.readiness();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !readiness.iter().all(|(_, check)| check().is_ok()) {
            if Instant::now() > deadline {
                return Err("the batch-processor did not become ready within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            stop,
            service,
            registry,
        })
    }

    fn text(&self) -> String {
        metrics_text(&self.registry)
    }

    async fn wait_settled(&self, expected: u64, timeout: Duration) -> Result<(), AnyError> {
        wait_settled(&self.registry, expected, timeout).await
    }

    /// The `q` quantile of the delivery family's processing lag, in ms,
    /// interpolated within its histogram bucket.
    fn lag_quantile_ms(&self, q: f64) -> f64 {
        let mut buckets: Vec<(f64, f64)> = self
            .text()
            .lines()
            .filter(|line| {
                line.starts_with("webhook_processing_lag_seconds_bucket")
                    && line.contains("family=\"delivery\"")
            })
            .filter_map(|line| {
                let le = line.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let count = line.rsplit(' ').next()?.parse().ok()?;
                Some((le, count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&(_, total)) = buckets.last() else {
            return 0.0;
        };
        let target = total * q;
        let mut previous = (0.0, 0.0);
        for (le, count) in buckets {
            if count >= target {
                if le.is_infinite() {
                    return previous.0 * 1000.0;
                }
                let within = if count > previous.1 {
                    (target - previous.1) / (count - previous.1)
                } else {
                    1.0
                };
                return (previous.0 + (le - previous.0) * within) * 1000.0;
            }
            previous = (le, count);
        }
        0.0
    }

    /// The sum and count of each labelled series of histogram `metric`
    /// whose labels contain `filter`, by the value of label `by`.
    fn histogram_totals(&self, metric: &str, filter: &str, by: &str) -> Vec<(String, f64, f64)> {
        let text = self.text();
        let mut totals: Vec<(String, f64, f64)> = Vec::new();
        for line in text.lines() {
            let (series, value) = match line.rsplit_once(' ') {
                Some(parts) => parts,
                None => continue,
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (is_sum, rest) = if let Some(rest) = series.strip_prefix(&format!("{metric}_sum{{"))
            {
                (true, rest)
            } else if let Some(rest) = series.strip_prefix(&format!("{metric}_count{{")) {
                (false, rest)
            } else {
                continue;
            };
            if !rest.contains(filter) {
                continue;
            }
            let Some(label) = rest
                .split(&format!("{by}=\""))
                .nth(1)
                .and_then(|tail| tail.split('"').next())
            else {
                continue;
            };
            let index = match totals.iter().position(|(name, _, _)| name == label) {
                Some(index) => index,
                None => {
                    totals.push((label.to_owned(), 0.0, 0.0));
                    totals.len() - 1
                }
            };
            if is_sum {
                totals[index].1 += value;
            } else {
                totals[index].2 += value;
            }
        }
        totals
    }

    /// Where the delivery family's batches spent their time: milliseconds
    /// per batch for each stage, the acks after them, and the batches'
    /// mean size.
    fn stage_profile(&self) -> StageProfile {
        let batches = self.histogram_totals("webhook_batch_size", "family=\"delivery\"", "family");
        let (events, count) = batches
            .first()
            .map_or((0.0, 0.0), |(_, sum, count)| (*sum, *count));
        let mut stages: Vec<(String, f64)> = self
            .histogram_totals(
                "webhook_batch_stage_duration_seconds",
                "family=\"delivery\"",
                "stage",
            )
            .into_iter()
            .map(|(stage, sum, _)| (stage, sum * 1000.0 / count.max(1.0)))
            .collect();
        if let Some((_, sum, _)) = self
            .histogram_totals(
                "hookmesh_consumer_settle_duration_seconds",
                "batch-processor-delivery",
                "consumer",
            )
            .first()
        {
            stages.push(("acks".to_owned(), sum * 1000.0 / count.max(1.0)));
        }
        StageProfile {
            batches: count as u64,
            mean_batch: events / count.max(1.0),
            ms_per_batch: stages,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.service.finished().await;
    }
}

/// A database for one run: a SQLite file in the scratch directory, or a
/// scratch PostgreSQL database dropped afterwards.
struct RunDatabase {
    url: String,
    drop_on: Option<(String, String)>,
}

impl RunDatabase {
    async fn create(
        backend: &'static str,
        scratch: &ScratchDir,
        postgres_admin: Option<&str>,
        run: &str,
    ) -> Result<Self, AnyError> {
        if backend == "sqlite" {
            return Ok(Self {
                url: hookmesh_runtime::db::sqlite_url(&scratch.0.join(format!("bench-{run}.db"))),
                drop_on: None,
            });
        }
        let admin = postgres_admin.ok_or("no PostgreSQL URL")?;
        let name = format!("hookmesh_bench_{}_{run}", std::process::id());
        let pool = hookmesh_runtime::db::connect(admin).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&pool)
            .await?;
        pool.close().await;
        let (base, _) = admin
            .rsplit_once('/')
            .ok_or("the PostgreSQL URL names no database")?;
        Ok(Self {
            url: format!("{base}/{name}"),
            drop_on: Some((admin.to_owned(), name)),
        })
    }

    async fn drop_database(self) {
        if let Some((admin, name)) = self.drop_on
            && let Ok(pool) = hookmesh_runtime::db::connect(&admin).await
        {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        }
    }
}

fn message_id(run: &str, recipient: usize) -> String {
    format!("bench-{run}-{recipient:07}")
}

fn delivery_envelope(run: &str, recipient: usize, status: DeliveryStatus) -> (String, Vec<u8>) {
    let id = format!("{run}:{recipient}:{status}");
    let event = DeliveryEvent {
        provider: PROVIDER.to_owned(),
        delivery: DeliveryWebhookEvent {
            event_type: status,
            message_id: message_id(run, recipient),
            timestamp: Timestamp::now(),
            recipient: None,
            campaign_id: None,
            reason: None,
            url: None,
            metadata: None,
        },
    };
    let envelope = Envelope::new(
        id.clone(),
        "/bench",
        Timestamp::now(),
        TenantId::default_tenant(),
        Some(message_id(run, recipient)),
        event,
    );
    (id, envelope.to_json())
}

/// Publishes with acknowledgements awaited a thousand at a time.
async fn publish_all(
    js: &jetstream::Context,
    messages: impl Iterator<Item = (String, String, Vec<u8>)>,
) -> Result<(), AnyError> {
    let mut acks = Vec::with_capacity(1000);
    for (subject, id, payload) in messages {
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        acks.push(js.send_publish(subject, message).await?.into_future());
        if acks.len() == 1000 {
            for ack in futures_util::future::join_all(acks.drain(..)).await {
                ack?;
            }
        }
    }
    for ack in futures_util::future::join_all(acks).await {
        ack?;
    }
    Ok(())
}

/// The backlog: `events` events, a `delivered` and an `opened` for each of
/// `events / 2` recipients of run `run`.
async fn publish_backlog(
    js: &jetstream::Context,
    run: &str,
    events: usize,
) -> Result<(), AnyError> {
    publish_all(
        js,
        (0..events).map(|n| {
            let status = if n % 2 == 0 {
                DeliveryStatus::Delivered
            } else {
                DeliveryStatus::Opened
            };
            let (id, payload) = delivery_envelope(run, n / 2, status);
            (provider_delivery(PROVIDER, status), id, payload)
        }),
    )
    .await
}

/// Registers `recipients` recipients of this run over ten campaigns.
async fn register(service: &BatchProcessor, run: &str, recipients: usize) -> Result<(), AnyError> {
    let tenant = TenantId::parse("bench")?;
    let per_campaign = recipients.div_ceil(CAMPAIGNS);
    for campaign in 0..CAMPAIGNS {
        let list: Vec<NewRecipient> = (campaign * per_campaign
            ..((campaign + 1) * per_campaign).min(recipients))
            .map(|r| NewRecipient {
                provider: PROVIDER.to_owned(),
                message_id: message_id(run, r),
                address: format!("r{r}@example.com"),
            })
            .collect();
        service
            .delivery_store()
            .register_campaign(
                &tenant,
                &format!("{run}-c{campaign}"),
                list.len() as u64,
                &list,
                Timestamp::now(),
            )
            .await?;
    }
    Ok(())
}

/// Pulls and acks `count` messages of a scratch stream: what JetStream
/// itself delivers per second to one consumer on this machine.
async fn raw_consume_rate(
    js: &jetstream::Context,
    count: usize,
    payload: &[u8],
) -> Result<f64, AnyError> {
    let stream = js
        .create_stream(stream::Config {
            name: "BENCH_RAW".to_owned(),
            subjects: vec!["bench.raw".to_owned()],
            ..Default::default()
        })
        .await?;
    publish_all(
        js,
        (0..count).map(|n| ("bench.raw".to_owned(), format!("raw-{n}"), payload.to_vec())),
    )
    .await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".to_owned()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(2000)
        .messages()
        .await?;
    let mut received = 0;
    while received < count {
        let message = messages.next().await.ok_or("the raw consumer stopped")??;
        message.ack().await?;
        received += 1;
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(messages);
    js.delete_stream("BENCH_RAW").await?;
    Ok(rate)
}

/// Milliseconds per batch of each stage of the delivery family's batches.
#[derive(Debug, Serialize)]
struct StageProfile {
    batches: u64,
    mean_batch: f64,
    ms_per_batch: Vec<(String, f64)>,
}

impl std::fmt::Display for StageProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} batches of {:.0} on average; ms per batch:",
            self.batches, self.mean_batch
        )?;
        for (stage, ms) in &self.ms_per_batch {
            write!(f, " {stage} {ms:.2}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize)]
struct RunReport {
    database: &'static str,
    batch_size: usize,
    events: usize,
    events_per_second: f64,
    ratio_to_raw_consume: f64,
    sustained_rate: u32,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    backlog_profile: StageProfile,
    /// The delivery transaction's statements alone, two batches at a
    /// time: the database's ceiling for this work.
    statements_alone_per_second: f64,
}

/// The engine with every commit free, per batch size.
#[derive(Debug, Serialize)]
struct EngineReport {
    batch_size: usize,
    with_kv_per_second: f64,
    /// Memory layer and database constraint only.
    without_kv_per_second: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    /// Whether the service's runs had the KV layer of deduplication.
    dedup_kv: bool,
    raw_consume_per_second: f64,
    engines: Vec<EngineReport>,
    runs: Vec<RunReport>,
    memory_database: &'static str,
    memory_mib_per_10k_buffered: f64,
    ci_failures: usize,
    ci_detection_p50_ms: f64,
    ci_detection_p99_ms: f64,
}

fn settings(
    database_url: &str,
    batch_size: usize,
    workers: usize,
    dedup_kv: bool,
) -> BatchSettings {
    BatchSettings {
        database_url: database_url.to_owned(),
        lookup_database_url: None,
        stream_replicas: 1,
        batch_size,
        batch_interval: hookmesh_batch_processor::DEFAULT_BATCH_INTERVAL,
        adaptive: true,
        workers,
        dedup_kv,
        enrich: Default::default(),
    }
}

/// One database and batch size: the backlog drain, then the sustained lag.
async fn measure(
    nats_url: &str,
    js: &jetstream::Context,
    database_url: &str,
    batch_size: usize,
    run: &str,
    args: &BatchBenchArgs,
) -> Result<(f64, f64, f64, StageProfile), AnyError> {
    let backlog_recipients = args.events.div_ceil(2);
    let sustained = (u64::from(args.rate) * args.duration_secs) as usize;
    let service = Running::start(
        nats_url,
        settings(database_url, batch_size, args.workers, args.dedup_kv),
    )
    .await?;
    register(&service.service, run, backlog_recipients + sustained).await?;
    service.stop().await;

    publish_backlog(js, run, args.events).await?;
    let service = Running::start(
        nats_url,
        settings(database_url, batch_size, args.workers, args.dedup_kv),
    )
    .await?;
    let started = Instant::now();
    service
        .wait_settled(args.events as u64, Duration::from_secs(900))
        .await?;
    let rate = args.events as f64 / started.elapsed().as_secs_f64();
    let profile = service.stage_profile();
    service.stop().await;

    // Sustained: a fresh service, so its lag histogram holds this phase only.
    let service = Running::start(
        nats_url,
        settings(database_url, batch_size, args.workers, args.dedup_kv),
    )
    .await?;
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let started = Instant::now();
    let mut sent = 0;
    while sent < sustained {
        let due = (started.elapsed().as_secs_f64() / period.as_secs_f64()) as usize + 1;
        let burst = due.min(sustained) - sent;
        if burst == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        publish_all(
            js,
            (sent..sent + burst).map(|n| {
                let (id, payload) =
                    delivery_envelope(run, backlog_recipients + n, DeliveryStatus::Delivered);
                (
                    provider_delivery(PROVIDER, DeliveryStatus::Delivered),
                    id,
                    payload,
                )
            }),
        )
        .await?;
        sent += burst;
    }
    service
        .wait_settled(sustained as u64, Duration::from_secs(300))
        .await?;
    let lags = (service.lag_quantile_ms(0.50), service.lag_quantile_ms(0.99));
    service.stop().await;
    Ok((rate, lags.0, lags.1, profile))
}

/// The database's ceiling for the same work: the delivery family's
/// transaction (the same statements, through the same store) applied to
/// `events` events in batches of `batch_size`, two batches at a time as the
/// two workers do, with no broker, parsing or deduplication in the way.
async fn statements_ceiling(
    database_url: &str,
    batch_size: usize,
    events: usize,
    run: &str,
) -> Result<f64, AnyError> {
    use hookmesh_batch_processor::delivery::store::{DeliveryStore, Enriched};
    use hookmesh_runtime::engine::Laps;

    let backend = hookmesh_runtime::db::Backend::of(database_url)?;
    let pool = hookmesh_runtime::db::connect(database_url).await?;
    hookmesh_runtime::db::migrate(&pool, &hookmesh_batch_processor::MIGRATOR).await?;
    let outbox = hookmesh_runtime::outbox::Outbox::new(pool.clone(), backend, "batch_outbox");
    let store = DeliveryStore::new(pool.clone(), backend, outbox);
    let tenant = TenantId::parse("bench")?;
    let recipients = events.div_ceil(2);
    let list: Vec<NewRecipient> = (0..recipients)
        .map(|r| NewRecipient {
            provider: PROVIDER.to_owned(),
            message_id: message_id(run, r),
            address: format!("r{r}@example.com"),
        })
        .collect();
    store
        .register_campaign(&tenant, run, recipients as u64, &list, Timestamp::now())
        .await?;
    let subject = provider_delivery(PROVIDER, DeliveryStatus::Delivered);
    let deliveries: Vec<Delivery> = (0..events)
        .map(|n| Delivery::detached(&subject, bytes::Bytes::new()).at(n as u64 + 1, 1))
        .collect();
    let facts: Vec<Fresh<DeliveryFact>> = deliveries
        .iter()
        .enumerate()
        .map(|(n, delivery)| Fresh {
            event: DeliveryFact::new(
                PROVIDER,
                if n % 2 == 0 {
                    DeliveryStatus::Delivered
                } else {
                    DeliveryStatus::Opened
                },
                &message_id(run, n / 2),
                &format!("{run}:{n}"),
                Timestamp::now(),
            ),
            delivery,
        })
        .collect();
    let batches: Vec<&[Fresh<DeliveryFact>]> = facts.chunks(batch_size.max(1)).collect();
    let next = AtomicU64::new(0);
    let started = Instant::now();
    let (next, batches, store) = (&next, &batches, &store);
    let worker = move || async move {
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed) as usize;
            let Some(batch) = batches.get(index) else {
                return Ok::<(), sqlx::Error>(());
            };
            // As the service applies them: recipients joined by the insert.
            store
                .apply(
                    batch,
                    Enriched::InTransaction,
                    Timestamp::now(),
                    &mut Laps::start(),
                )
                .await?;
        }
    };
    let (first, second) = tokio::join!(worker(), worker());
    first?;
    second?;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

/// The delivery family with every commit free: its parsing, identity and
/// deduplication as the service has them, and an `apply` that touches no
/// database.
struct WithoutDatabase;

impl Family for WithoutDatabase {
    type Event = DeliveryFact;

    const NAME: &'static str = DeliveryFamily::NAME;

    fn parse(&self, delivery: &Delivery) -> Result<DeliveryFact, String> {
        parse_delivery(delivery.subject(), delivery.payload())
    }

    fn dedup_key(&self, fact: &DeliveryFact) -> DedupKey {
        hookmesh_batch_processor::delivery::dedup_key(fact)
    }

    fn event_type(&self, fact: &DeliveryFact) -> &'static str {
        fact.status.as_str()
    }

    async fn apply(&self, events: &[Fresh<'_, DeliveryFact>]) -> Result<Vec<Applied>, ApplyError> {
        Ok(vec![Applied::New; events.len()])
    }
}

/// The engine's ceiling on this broker and these cores: the same backlog as
/// a run's, drained by the consume loop and the engine (parsing, in-batch
/// twins, the memory layer, the KV layer when `kv`, acks) with no database.
async fn engine_ceiling(
    js: &jetstream::Context,
    run: &str,
    events: usize,
    batch_size: usize,
    workers: usize,
    kv: bool,
) -> Result<f64, AnyError> {
    publish_backlog(js, run, events).await?;
    let mut registry = Registry::default();
    let consume = ConsumeFamilies::register(&mut registry);
    let metrics = BatchMetrics::register(&mut registry);
    let observer: Arc<dyn Observer> = Arc::new(metrics.family(WithoutDatabase::NAME));
    let dedup =
        hookmesh_batch_processor::deduplicator(WithoutDatabase::NAME, js, 1, kv, observer.clone())
            .await;
    let handler = Arc::new(BatchHandler::new(WithoutDatabase, dedup, observer));
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let consuming = tokio::spawn(consume::run(
        js.clone(),
        ConsumeSettings {
            definition: DELIVERY_CONSUMER,
            replicas: 1,
            max_batch: batch_size.max(1),
            max_wait: hookmesh_batch_processor::DEFAULT_BATCH_INTERVAL,
            concurrency: workers.max(1),
            flush_when_idle: true,
        },
        handler,
        consume.consumer("bench-engine"),
        stopped,
    ));
    let drained = wait_settled(&registry, events as u64, Duration::from_secs(900)).await;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let _ = consuming.await;
    drained?;
    Ok(rate)
}

/// Peak resident memory above idle of a fresh `hookmesh batch-processor`
/// child process while it holds 10 000 events as one batch: a process of
/// its own, so that memory freed by earlier phases cannot hide the growth.
async fn memory_per_10k(
    nats_url: &str,
    js: &jetstream::Context,
    database_url: &str,
    run: &str,
    dedup_kv: bool,
) -> Result<f64, AnyError> {
    const BUFFERED: usize = 10_000;
    let service = Running::start(nats_url, settings(database_url, BUFFERED, 1, dedup_kv)).await?;
    register(&service.service, run, BUFFERED).await?;
    service.stop().await;

    let ops = format!("127.0.0.1:{}", free_port()?);
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    for (variable, _) in std::env::vars() {
        if variable.starts_with("HOOKMESH_") || variable == "NATS_URL" || variable == "DATABASE_URL"
        {
            command.env_remove(variable);
        }
    }
    let mut child = command
        .arg("batch-processor")
        .env("NATS_URL", nats_url)
        .env("DATABASE_URL", database_url)
        .env("HOOKMESH_OPS_ADDR", &ops)
        .env("HOOKMESH_LOG", "warn")
        // The batch is handed over when it holds all 10 000 events.
        .env("HOOKMESH_BATCH_SIZE", BUFFERED.to_string())
        .env("HOOKMESH_BATCH_INTERVAL_MS", "60000")
        .env("HOOKMESH_BATCH_ADAPTIVE", "false")
        .env("HOOKMESH_BATCH_WORKERS", "1")
        .env("HOOKMESH_DEDUP_KV", dedup_kv.to_string())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    wait_ready("the batch-processor", &ops, &mut child).await?;
    let pid = child.id().ok_or("the batch-processor has no pid")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss_mib(pid);
    let peak = Arc::new(AtomicU64::new((idle * 1024.0) as u64));
    let (done, mut finished) = watch::channel(false);
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max((rss_mib(pid) * 1024.0) as u64, Ordering::Relaxed);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(5)) => {}
                    _ = finished.changed() => return,
                }
            }
        })
    };
    publish_all(
        js,
        (0..BUFFERED).map(|n| {
            let (id, payload) = delivery_envelope(run, n, DeliveryStatus::Delivered);
            (
                provider_delivery(PROVIDER, DeliveryStatus::Delivered),
                id,
                payload,
            )
        }),
    )
    .await?;
    let stream = js.get_stream(DELIVERY_CONSUMER.stream).await?;
    let durable = DELIVERY_CONSUMER.durable_name();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let info = stream.consumer_info(&durable).await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err("the batch-processor did not settle 10 000 events within 300 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = done.send(true);
    let _ = sampler.await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
    Ok(peak.load(Ordering::Relaxed) as f64 / 1024.0 - idle)
}

/// Publish → `ci.failure.detected` received, for `count` failures at 50/s.
async fn ci_detection(
    nats_url: &str,
    js: &jetstream::Context,
    database_url: &str,
    run: &str,
    count: usize,
    dedup_kv: bool,
) -> Result<Vec<f64>, AnyError> {
    let service = Running::start(
        nats_url,
        settings(
            database_url,
            hookmesh_batch_processor::DEFAULT_BATCH_SIZE,
            hookmesh_batch_processor::DEFAULT_WORKERS,
            dedup_kv,
        ),
    )
    .await?;
    let mut detections = js.client().subscribe(CI_FAILURE_DETECTED).await?;
    js.client().flush().await?;
    let mut published: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(count);
    let period = Duration::from_millis(20);
    let mut next = tokio::time::Instant::now();
    let mut sent = 0;
    while latencies.len() < count {
        tokio::select! {
            () = tokio::time::sleep_until(next), if sent < count => {
                let event = CiPipelineEvent {
                    id: format!("{run}-failure-{sent}"),
                    timestamp: Timestamp::now(),
                    platform: CiPlatform::Github,
                    event_type: PipelineEventType::Failed,
                    repository: "bench/repository".to_owned(),
                    pipeline_id: format!("{run}-{sent}"),
                    job_id: None,
                    run_attempt: None,
                    metadata: CiMetadata::default(),
                    failure_context: Some(FailureContext {
                        exit_code: Some(1),
                        log_excerpt: Some("Error: connect ECONNREFUSED 10.0.0.5:5432".to_owned()),
                        ..FailureContext::default()
                    }),
                };
                let envelope = Envelope::new(
                    event.id.clone(),
                    "/bench",
                    event.timestamp,
                    TenantId::default_tenant(),
                    None,
                    event.clone(),
                );
                published.insert(event.id.clone(), Instant::now());
                publish_all(
                    js,
                    std::iter::once((
                        ci_pipeline(event.platform, event.event_type),
                        event.id.clone(),
                        envelope.to_json(),
                    )),
                )
                .await?;
                sent += 1;
                next += period;
            }
            message = tokio::time::timeout(Duration::from_secs(60), detections.next()) => {
                let message = message
                    .map_err(|_| "no ci.failure.detected within 60 s")?
                    .ok_or("the subscription ended")?;
                let envelope: serde_json::Value = serde_json::from_slice(&message.payload)?;
                if let Some(at) = envelope["data"]["event_id"]
                    .as_str()
                    .and_then(|id| published.get(id))
                {
                    latencies.push(at.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    service.stop().await;
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

pub async fn run(args: BatchBenchArgs, common: CommonArgs) -> Result<(), AnyError> {
    let scratch = ScratchDir::new("batch")?;
    let (broker, nats) = broker(&scratch, &common).await?;
    let nats_url = nats.url.clone();
    let client = nats.connect("hookmesh-bench").await?.client;
    let js = jetstream::new(client);
    hookmesh_nats::ensure_streams(&js, hookmesh_nats::STREAMS, common.stream_replicas).await?;
    let run_id = hookmesh_contracts::hex::random::<3>();

    let mut backends: Vec<&'static str> = Vec::new();
    if !args.no_sqlite {
        backends.push("sqlite");
    }
    if args.postgres_url.is_some() {
        backends.push("postgres");
    }
    let sample = delivery_envelope(&run_id, 0, DeliveryStatus::Delivered).1;
    eprintln!(
        "hookmesh bench batch: {} events per run ({} bytes each), batch sizes {:?}, on {}, the service's KV dedup layer {}",
        args.events,
        sample.len(),
        args.batch_sizes,
        backends.join(" and "),
        if args.dedup_kv { "on" } else { "off" }
    );
    let raw = raw_consume_rate(&js, args.events, &sample).await?;
    eprintln!("raw JetStream consume: {raw:.0} messages/s");

    let mut engines = Vec::new();
    for &batch_size in &args.batch_sizes {
        let with_kv = engine_ceiling(
            &js,
            &format!("{run_id}k{batch_size}"),
            args.events,
            batch_size,
            args.workers,
            true,
        )
        .await?;
        let without_kv = engine_ceiling(
            &js,
            &format!("{run_id}n{batch_size}"),
            args.events,
            batch_size,
            args.workers,
            false,
        )
        .await?;
        eprintln!(
            "the engine alone (no database) batch {batch_size}: {with_kv:.0} events/s with the KV layer ({:.2} of raw), {without_kv:.0}/s without it ({:.2})",
            with_kv / raw,
            without_kv / raw
        );
        engines.push(EngineReport {
            batch_size,
            with_kv_per_second: with_kv,
            without_kv_per_second: without_kv,
        });
    }

    let mut runs = Vec::new();
    for backend in &backends {
        for &batch_size in &args.batch_sizes {
            let run = format!("{run_id}{}{batch_size}", &backend[..1]);
            let database =
                RunDatabase::create(backend, &scratch, args.postgres_url.as_deref(), &run).await?;
            let measured = measure(&nats_url, &js, &database.url, batch_size, &run, &args).await;
            database.drop_database().await;
            let (rate, p50, p99, profile) = measured?;
            let run = format!("{run}x");
            let database =
                RunDatabase::create(backend, &scratch, args.postgres_url.as_deref(), &run).await?;
            let ceiling = statements_ceiling(&database.url, batch_size, args.events, &run).await;
            database.drop_database().await;
            let ceiling = ceiling?;
            eprintln!(
                "{backend} batch {batch_size}: {rate:.0} events/s ({:.2} of raw), lag at {}/s p50 {p50:.1} ms p99 {p99:.1} ms; the same statements alone: {ceiling:.0} events/s\n  backlog: {profile}",
                rate / raw,
                args.rate
            );
            runs.push(RunReport {
                database: backend,
                batch_size,
                events: args.events,
                events_per_second: rate,
                ratio_to_raw_consume: rate / raw,
                sustained_rate: args.rate,
                lag_p50_ms: p50,
                lag_p99_ms: p99,
                backlog_profile: profile,
                statements_alone_per_second: ceiling,
            });
        }
    }

    let memory_backend = *backends.last().ok_or("nothing to measure")?;
    let run = format!("{run_id}m");
    let database =
        RunDatabase::create(memory_backend, &scratch, args.postgres_url.as_deref(), &run).await?;
    let memory = memory_per_10k(&nats_url, &js, &database.url, &run, args.dedup_kv).await;
    let ci = ci_detection(&nats_url, &js, &database.url, &run, 200, args.dedup_kv).await;
    database.drop_database().await;
    let (memory, ci) = (memory?, ci?);

    let report = Report {
        dedup_kv: args.dedup_kv,
        raw_consume_per_second: raw,
        engines,
        runs,
        memory_database: memory_backend,
        memory_mib_per_10k_buffered: memory,
        ci_failures: ci.len(),
        ci_detection_p50_ms: percentile_ms(&ci, 0.50, 1.0),
        ci_detection_p99_ms: percentile_ms(&ci, 0.99, 1.0),
    };
    println!(
        "\nraw JetStream consume (pull + ack): {:.0} messages/s; the service's KV dedup layer {}",
        report.raw_consume_per_second,
        if report.dedup_kv { "on" } else { "off" }
    );
    for engine in &report.engines {
        println!(
            "engine alone (no database), batch {}: {:.0} events/s with the KV layer ({:.2} of raw), {:.0}/s without it ({:.2})",
            engine.batch_size,
            engine.with_kv_per_second,
            engine.with_kv_per_second / report.raw_consume_per_second,
            engine.without_kv_per_second,
            engine.without_kv_per_second / report.raw_consume_per_second
        );
    }
    println!(
        "database  batch  events/s  ÷ raw   lag p50  lag p99 (at {}/s)  statements alone",
        args.rate
    );
    for run in &report.runs {
        println!(
            "{:<8}  {:>5}  {:>8.0}  {:>5.2}  {:>6.1} ms  {:>6.1} ms  {:>8.0}/s",
            run.database,
            run.batch_size,
            run.events_per_second,
            run.ratio_to_raw_consume,
            run.lag_p50_ms,
            run.lag_p99_ms,
            run.statements_alone_per_second
        );
    }
    for run in &report.runs {
        println!(
            "{} batch {} backlog: {}",
            run.database, run.batch_size, run.backlog_profile
        );
    }
    println!(
        "memory: {:.1} MiB above idle with 10 000 events buffered ({})",
        report.memory_mib_per_10k_buffered, report.memory_database
    );
    println!(
        "CI failure detection (publish → ci.failure.detected): p50 {:.0} ms, p99 {:.0} ms over {} failures",
        report.ci_detection_p50_ms, report.ci_detection_p99_ms, report.ci_failures
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    stop_broker(&js.client(), broker).await?;
    drop(scratch);
    Ok(())
}
