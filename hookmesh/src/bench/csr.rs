//! `hookmesh bench csr`: how fast the csr-consumer applies buddy events.
//!
//! Two phases against one broker and one database:
//!
//! 1. **Sustained.** Events are published natively at `--rate` per second
//!    for `--duration-secs`. Each event's time is the moment it is
//!    published, so the lag reported is publish → applied, read from the
//!    database rows (`processed_at - occurred_at`).
//! 2. **Backlog.** With the consumer stopped, `--backlog` events are
//!    published, then the consumer is started and timed until all are
//!    applied: the most it can apply per second.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage};
use hookmesh_contracts::buddy::{
    BuddyEventData, CheckinChannel, CheckinCompleted, EventAttended, FeedbackSubmitted,
    MatchCreated, ParticipantEnrolled, ParticipantRole,
};
use hookmesh_contracts::{TenantId, Timestamp};
use hookmesh_csr_consumer::telemetry::CsrMetrics;
use hookmesh_csr_consumer::{CsrConsumer, CsrSettings};
use hookmesh_runtime::metrics::ConsumeFamilies;
use prometheus_client::registry::Registry;
use serde::Serialize;
use sqlx::Row as _;
use tokio::sync::watch;

use super::{ScratchDir, broker, percentile_ms, stop_broker};
use crate::AnyError;
use crate::cli::{CommonArgs, CsrBenchArgs};

/// The `index`-th event of a steady mix of enrolments, matches, check-ins,
/// attendance and feedback among 1000 participants.
fn event(index: u64, run: &str) -> BuddyEventData {
    let tenant = TenantId::parse("bench").expect("a tenant id");
    let program = "bench-program".to_owned();
    let participant = |n: u64| format!("p-{}", n % 1000);
    match index % 5 {
        0 => BuddyEventData::ParticipantEnrolled(ParticipantEnrolled {
            tenant_id: tenant,
            program_id: program,
            participant_id: participant(index),
            role: ParticipantRole::Newcomer,
        }),
        1 => BuddyEventData::MatchCreated(MatchCreated {
            tenant_id: tenant,
            program_id: program,
            match_id: format!("m-{run}-{index}"),
            buddy_id: participant(index),
            newcomer_id: participant(index + 1),
        }),
        2 => BuddyEventData::CheckinCompleted(CheckinCompleted {
            tenant_id: tenant,
            program_id: program,
            match_id: format!("m-{run}-{}", index - 1),
            checkin_id: format!("c-{run}-{index}"),
            buddy_id: participant(index - 1),
            newcomer_id: participant(index),
            duration_minutes: 30,
            channel: CheckinChannel::Video,
        }),
        3 => BuddyEventData::EventAttended(EventAttended {
            tenant_id: tenant,
            program_id: program,
            event_id: format!("ev-{run}-{index}"),
            participant_id: participant(index),
            hours: 2.0,
        }),
        _ => BuddyEventData::FeedbackSubmitted(FeedbackSubmitted {
            tenant_id: tenant,
            program_id: program,
            feedback_id: format!("f-{run}-{index}"),
            participant_id: participant(index),
            match_id: None,
            rating: 4,
            comment: None,
        }),
    }
}

async fn publish(js: &jetstream::Context, run: &str, index: u64) -> Result<(), AnyError> {
    let data = event(index, run);
    let id = format!("bench-{run}-{index}");
    let json = data.envelope_json(&id, "/bench", Timestamp::now());
    let message = PublishMessage::build().payload(json.into()).message_id(id);
    js.send_publish(data.event_type().to_string(), message)
        .await?
        .await?;
    Ok(())
}

async fn applied(pool: &hookmesh_runtime::db::Pool, run: &str) -> Result<i64, AnyError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM csr_processed_events WHERE event_id LIKE $1")
        .bind(format!("bench-{run}-%"))
        .fetch_one(pool)
        .await?;
    Ok(row.try_get("n")?)
}

/// Waits until all `expected` events of `run` are applied. Each poll looks
/// the last event up by its key and counts only once it is there, so that
/// watching costs the database next to nothing while it drains.
async fn wait_applied(
    pool: &hookmesh_runtime::db::Pool,
    run: &str,
    expected: u64,
    timeout: Duration,
) -> Result<(), AnyError> {
    let deadline = Instant::now() + timeout;
    let last = format!("bench-{run}-{}", expected.saturating_sub(1));
    loop {
        let last_applied = sqlx::query(
            "SELECT 1 FROM csr_processed_events WHERE tenant_id = $1 AND event_id = $2",
        )
        .bind("bench")
        .bind(&last)
        .fetch_optional(pool)
        .await?
        .is_some();
        if last_applied && applied(pool, run).await? >= expected as i64 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("not every event was applied within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

struct RunningCsr {
    stop: watch::Sender<bool>,
    service: CsrConsumer,
}

async fn start_csr(
    nats_url: &str,
    database_url: &str,
    batch_size: usize,
) -> Result<RunningCsr, AnyError> {
    let connection = hookmesh_nats::connect(nats_url, "hookmesh-bench-csr").await?;
    let mut registry = Registry::default();
    let consume = ConsumeFamilies::register(&mut registry).consumer("csr-consumer");
    let metrics = CsrMetrics::register(&mut registry);
    let (stop, stopped) = watch::channel(false);
    let service = CsrConsumer::start(
        connection.client,
        CsrSettings {
            database_url: database_url.to_owned(),
            stream_replicas: 1,
            batch_size,
        },
        metrics,
        consume,
        stopped,
    )
    .await?;
    Ok(RunningCsr { stop, service })
}

impl RunningCsr {
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.service.finished().await;
    }
}

#[derive(Debug, Serialize)]
struct Report {
    database: &'static str,
    offered_per_second: u32,
    sustained_events: u64,
    sustained_applied_per_second: f64,
    lag_p50_ms: f64,
    lag_p99_ms: f64,
    backlog_events: usize,
    backlog_applied_per_second: f64,
}

pub async fn run(args: CsrBenchArgs, common: CommonArgs) -> Result<(), AnyError> {
    let scratch = ScratchDir::new("csr")?;
    let (broker, nats) = broker(&scratch, &common).await?;
    let nats_url = nats.url.clone();
    let database_url = args
        .database
        .database_url
        .clone()
        .unwrap_or_else(|| hookmesh_runtime::db::sqlite_url(&scratch.0.join("bench.db")));
    let backend = match hookmesh_runtime::db::Backend::of(&database_url)? {
        hookmesh_runtime::db::Backend::Sqlite => "sqlite",
        hookmesh_runtime::db::Backend::Postgres => "postgres",
    };
    let run = hookmesh_contracts::hex::random::<4>();
    let client = nats.connect("hookmesh-bench").await?.client;
    let js = jetstream::new(client);
    hookmesh_nats::ensure_streams(&js, hookmesh_nats::STREAMS, common.stream_replicas).await?;
    let csr = start_csr(&nats_url, &database_url, args.batch_size).await?;
    let pool = hookmesh_runtime::db::connect(&database_url).await?;
    eprintln!(
        "hookmesh bench csr: {} events/s for {} s, then a backlog of {} events, on {backend}",
        args.rate, args.duration_secs, args.backlog
    );

    // Sustained: a publish every 1/rate seconds, catching up when late.
    let total = u64::from(args.rate) * args.duration_secs;
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    for index in 0..total {
        let due = started + period.mul_f64(index as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        publish(&js, &run, index).await?;
    }
    wait_applied(&pool, &run, total, Duration::from_secs(300)).await?;
    let sustained_seconds = started.elapsed().as_secs_f64();
    let mut lags: Vec<i64> = sqlx::query(
        "SELECT processed_at - occurred_at AS lag FROM csr_processed_events WHERE event_id LIKE $1",
    )
    .bind(format!("bench-{run}-%"))
    .fetch_all(&pool)
    .await?
    .into_iter()
    .map(|row| row.try_get::<i64, _>("lag"))
    .collect::<Result<_, _>>()?;
    lags.sort_unstable();
    let lags: Vec<f64> = lags.into_iter().map(|lag| lag as f64).collect();

    // Backlog: stop, pile up, restart and time the drain.
    csr.stop().await;
    let backlog_run = format!("{run}b");
    for index in 0..args.backlog as u64 {
        publish(&js, &backlog_run, index).await?;
    }
    let csr = start_csr(&nats_url, &database_url, args.batch_size).await?;
    let draining = Instant::now();
    wait_applied(
        &pool,
        &backlog_run,
        args.backlog as u64,
        Duration::from_secs(600),
    )
    .await?;
    let drain_seconds = draining.elapsed().as_secs_f64();
    csr.stop().await;

    let report = Report {
        database: backend,
        offered_per_second: args.rate,
        sustained_events: total,
        sustained_applied_per_second: total as f64 / sustained_seconds,
        lag_p50_ms: percentile_ms(&lags, 0.50, 1.0),
        lag_p99_ms: percentile_ms(&lags, 0.99, 1.0),
        backlog_events: args.backlog,
        backlog_applied_per_second: args.backlog as f64 / drain_seconds,
    };
    println!(
        "\nsustained: {} events at {}/s offered → {:.0}/s applied, lag p50 {:.1} ms, p99 {:.1} ms",
        report.sustained_events,
        report.offered_per_second,
        report.sustained_applied_per_second,
        report.lag_p50_ms,
        report.lag_p99_ms
    );
    println!(
        "backlog:   {} events drained at {:.0} events/s ({})",
        report.backlog_events, report.backlog_applied_per_second, report.database
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    pool.close().await;
    stop_broker(&js.client(), broker).await?;
    drop(scratch);
    Ok(())
}
