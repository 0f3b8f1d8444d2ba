//! A soak under faults (`hookmesh soak`, and its short run in the tests):
//! a three-node JetStream cluster with R3 streams, the gateway and two
//! replicas of each consumer as processes on a private PostgreSQL, and a
//! steady stream of signed webhooks of every family from producers that
//! retry every answer but 202 with the same delivery id. On a schedule a
//! broker node is killed (-9) and restarted, a consumer replica is killed
//! (-9) and restarted, PostgreSQL is stopped and started, the gateway is
//! restarted. At the end every 202'd webhook must have taken effect exactly
//! once, read back from the database and the streams.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::mesh::{
    CONSUMERS, ClusterNode, PrivatePostgres, checkin_request, cluster_url, consumer_env, count,
    delivery_request, gateway_env, jenkins_request, log_tails, resident_kib, start_cluster,
};
use crate::process::ServiceProcess;
use crate::{TestDir, free_port, secrets};

/// Recipients per campaign registration (a registration takes 10,000).
const CAMPAIGN_SIZE: usize = 5000;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The `hookmesh` binary the services run as.
    pub binary: PathBuf,
    /// Webhooks offered in all, spread over the families.
    pub webhooks: usize,
    /// Webhooks offered per second.
    pub rate: u64,
    /// Trading sweeps triggered over the run.
    pub sweeps: usize,
    /// How long PostgreSQL stays stopped.
    pub postgres_outage: Duration,
    /// Longest a producer retries one webhook before giving up on it.
    pub patience: Duration,
    /// Longest the mesh may take, after the last 202, to apply everything.
    pub settle: Duration,
}

/// Resident memory (KiB) of each process at each sample, by seconds into
/// the run.
pub type MemorySamples = BTreeMap<String, Vec<(f64, u64)>>;

/// A fault and how long until its outage was over.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub fault: &'static str,
    /// Seconds into the run.
    pub at: f64,
    pub recovered_after: Duration,
    pub measured_as: &'static str,
}

/// One exactly-once check: what the 202s promise, what was found.
#[derive(Debug, Clone)]
pub struct Check {
    pub what: &'static str,
    pub expected: i64,
    pub found: i64,
}

/// What a soak measured.
#[derive(Debug, Default)]
pub struct SoakReport {
    pub offered: u64,
    pub accepted: u64,
    pub answered_503: u64,
    pub unreachable: u64,
    pub refused: u64,
    pub given_up: u64,
    pub duration: Duration,
    pub latency_p50: Duration,
    pub latency_p99: Duration,
    pub recoveries: Vec<Recovery>,
    pub checks: Vec<Check>,
    pub memory: MemorySamples,
}

impl SoakReport {
    /// Effects missing, summed over the checks.
    pub fn lost(&self) -> i64 {
        self.checks
            .iter()
            .map(|c| (c.expected - c.found).max(0))
            .sum()
    }

    /// Effects beyond the promised, summed over the checks.
    pub fn doubled(&self) -> i64 {
        self.checks
            .iter()
            .map(|c| (c.found - c.expected).max(0))
            .sum()
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.duration.as_secs_f64();
        writeln!(f, "| measure | value |")?;
        writeln!(f, "|---|---|")?;
        writeln!(
            f,
            "| offered | {} webhooks in {secs:.0} s ({:.0}/s) |",
            self.offered,
            self.offered as f64 / secs.max(1e-9)
        )?;
        writeln!(f, "| answered 202 | {} |", self.accepted)?;
        writeln!(f, "| answered 503 (retried) | {} |", self.answered_503)?;
        writeln!(f, "| unreachable (retried) | {} |", self.unreachable)?;
        writeln!(f, "| refused otherwise | {} |", self.refused)?;
        writeln!(f, "| given up by the producer | {} |", self.given_up)?;
        writeln!(
            f,
            "| 202 latency p50 / p99 | {:.1} ms / {:.1} ms |",
            self.latency_p50.as_secs_f64() * 1e3,
            self.latency_p99.as_secs_f64() * 1e3
        )?;
        for recovery in &self.recoveries {
            writeln!(
                f,
                "| {} at {:.0} s | recovered after {:.1} s ({}) |",
                recovery.fault,
                recovery.at,
                recovery.recovered_after.as_secs_f64(),
                recovery.measured_as
            )?;
        }
        writeln!(f, "| lost | {} |", self.lost())?;
        writeln!(f, "| doubled | {} |", self.doubled())?;
        for check in &self.checks {
            writeln!(
                f,
                "| {} | {} of {} |",
                check.what, check.found, check.expected
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "| resident memory (MiB) | start | 25 % | 50 % | 75 % | end | peak |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|")?;
        for (process, samples) in &self.memory {
            if samples.is_empty() {
                continue;
            }
            let at = |fraction: f64| {
                let index = ((samples.len() - 1) as f64 * fraction).round() as usize;
                samples[index].1 as f64 / 1024.0
            };
            let peak = samples.iter().map(|(_, kib)| *kib).max().unwrap_or(0) as f64 / 1024.0;
            writeln!(
                f,
                "| {process} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {peak:.0} |",
                at(0.0),
                at(0.25),
                at(0.5),
                at(0.75),
                at(1.0)
            )?;
        }
        Ok(())
    }
}

/// A service process, restarted with the same settings.
struct Service {
    name: String,
    command: &'static str,
    env: Vec<(&'static str, String)>,
    ready_url: String,
    process: Option<ServiceProcess>,
}

impl Service {
    async fn start(&mut self, binary: &str, logs: &Path, http: &reqwest::Client) {
        let log_name = format!("{}-{}", self.name, unix_millis());
        let mut process = ServiceProcess::start(
            binary,
            &log_name,
            self.command,
            &self.env,
            self.ready_url.clone(),
            logs,
        )
        .await;
        process.wait_ready(http).await;
        self.process = Some(process);
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ServiceProcess::pid)
    }
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// What the producers saw.
#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    answered_503: AtomicU64,
    unreachable: AtomicU64,
    refused: AtomicU64,
    given_up: AtomicU64,
    /// Each 202: when it came (since the start) and how long it took.
    answers: Mutex<Vec<(Duration, Duration)>>,
}

/// One webhook, sent until it is answered 202 (or the producer's patience
/// runs out).
async fn deliver(
    tally: &Tally,
    started: Instant,
    patience: Duration,
    request: impl Fn() -> reqwest::RequestBuilder,
) {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        let sent = Instant::now();
        match request().timeout(Duration::from_secs(15)).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                tally.accepted.fetch_add(1, Ordering::Relaxed);
                let answered = Instant::now();
                tally
                    .answers
                    .lock()
                    .unwrap()
                    .push((answered - started, answered - sent));
                return;
            }
            Ok(response) if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                tally.answered_503.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                tally.unreachable.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tally.given_up.fetch_add(1, Ordering::Relaxed);
}

/// The family of webhook `i`, and its number within the family.
#[derive(Debug, Clone, Copy)]
enum Webhook {
    Checkin(usize),
    Delivery(usize),
    /// A Jenkins build's end, failed or not.
    Build(usize, bool),
}

fn webhook(i: usize) -> Webhook {
    match i % 3 {
        0 => Webhook::Checkin(i / 3),
        1 => Webhook::Delivery(i / 3),
        _ => Webhook::Build(i / 3, (i / 3) % 4 == 0),
    }
}

/// How many of each family `webhooks` makes: check-ins, deliveries, builds,
/// failed builds.
fn families(webhooks: usize) -> (i64, i64, i64, i64) {
    let mut totals = (0, 0, 0, 0);
    for i in 0..webhooks {
        match webhook(i) {
            Webhook::Checkin(_) => totals.0 += 1,
            Webhook::Delivery(_) => totals.1 += 1,
            Webhook::Build(_, failed) => {
                totals.2 += 1;
                totals.3 += i64::from(failed);
            }
        }
    }
    totals
}

/// Messages stored on `subject` (a filter) in the stream that holds it.
async fn subject_count(js: &async_nats::jetstream::Context, subject: &str) -> i64 {
    let Ok(name) = js.stream_by_subject(subject).await else {
        return -1;
    };
    let Ok(stream) = js.get_stream(&name).await else {
        return -1;
    };
    let Ok(mut subjects) = stream.info_with_subjects(subject).await else {
        return -1;
    };
    let mut total = 0;
    while let Some(Ok((_, messages))) = subjects.next().await {
        total += messages as i64;
    }
    total
}

/// The longest wait between consecutive 202s from `from` to `to` (seconds
/// since the start), counting from `from`.
fn longest_gap(answers: &[Duration], from: Duration, to: Duration) -> Duration {
    let mut previous = from;
    let mut longest = Duration::ZERO;
    for at in answers.iter().filter(|at| **at >= from && **at <= to) {
        longest = longest.max(*at - previous);
        previous = *at;
    }
    longest
}

/// Runs the soak; an error says what could not be set up.
pub async fn run(options: SoakOptions) -> Result<SoakReport, String> {
    let run = format!("soak{}", unix_millis() % 1_000_000);
    let scratch = TestDir::new("soak");
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let binary = options.binary.to_string_lossy().into_owned();
    let http = hookmesh_runtime::http::client_builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| e.to_string())?;

    let postgres_bin = PrivatePostgres::find_binaries()
        .ok_or("no PostgreSQL binaries under /usr/lib/postgresql (set HOOKMESH_POSTGRES_BIN)")?;
    let postgres = PrivatePostgres::start(postgres_bin, &scratch.path().join("postgres")).await;
    let database_url = postgres.create_database("hookmesh_soak").await;
    let mut nodes: Vec<ClusterNode> = start_cluster(scratch.path()).await;
    let nats_url = cluster_url(&nodes);

    let gateway_port = free_port();
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let mut gateway = Service {
        name: "gateway".to_owned(),
        command: "gateway",
        env: gateway_env(&nats_url, gateway_port),
        ready_url: format!("{gateway_url}/readyz"),
        process: None,
    };
    gateway.start(&binary, &logs, &http).await;

    let trading_api = crate::trading_api(hookmesh_trading_api_sim::Knobs {
        run_time_ms: 2000,
        ..hookmesh_trading_api_sim::Knobs::default()
    })
    .await;
    let mut consumers = Vec::new();
    for (name, command) in CONSUMERS {
        let ops = format!("127.0.0.1:{}", free_port());
        let mut service = Service {
            name: name.to_owned(),
            command,
            env: consumer_env(
                &nats_url,
                &database_url,
                &ops,
                &trading_api.url(),
                &gateway_url,
            ),
            ready_url: format!("http://{ops}/readyz"),
            process: None,
        };
        service.start(&binary, &logs, &http).await;
        consumers.push(service);
    }

    let (checkins, deliveries, builds, failed_builds) = families(options.webhooks);
    // The campaigns the delivery events count toward, in parts a
    // registration takes.
    let recipients: Vec<Value> = (0..deliveries)
        .map(|n| json!({"provider": "sendgrid", "message_id": format!("m-{n:05}"), "address": format!("r{n}@example.com")}))
        .collect();
    let campaigns = recipients.chunks(CAMPAIGN_SIZE).count() as i64;
    for (k, part) in recipients.chunks(CAMPAIGN_SIZE).enumerate() {
        let registered = http
            .post(format!("{gateway_url}/api/campaigns"))
            .bearer_auth(secrets::API_KEY_ACME)
            .json(&json!({"campaign_id": format!("{run}-campaign-{k}"), "recipients": part}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if registered.status() != reqwest::StatusCode::ACCEPTED {
            return Err(format!("a campaign was answered {}", registered.status()));
        }
    }

    // The load: one webhook every 1/rate s, each retried until 202.
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    let load = {
        let (http, gateway_url, tally, run) = (
            http.clone(),
            gateway_url.clone(),
            tally.clone(),
            run.clone(),
        );
        let (webhooks, rate, patience) = (options.webhooks, options.rate, options.patience);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inflight = tokio::task::JoinSet::new();
            for i in 0..webhooks {
                tick.tick().await;
                let (http, gateway_url, tally, run) = (
                    http.clone(),
                    gateway_url.clone(),
                    tally.clone(),
                    run.clone(),
                );
                inflight.spawn(async move {
                    let request = || match webhook(i) {
                        Webhook::Checkin(n) => checkin_request(&http, &gateway_url, &run, n),
                        Webhook::Delivery(n) => delivery_request(&http, &gateway_url, &run, n),
                        Webhook::Build(n, failed) => {
                            jenkins_request(&http, &gateway_url, &run, n, failed)
                        }
                    };
                    deliver(&tally, started, patience, request).await;
                });
                // Reap finished producers as the run goes, to bound memory.
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        })
    };
    // Sweeps spread over the run, each retried with its Idempotency-Key.
    let sweeps = {
        let (http, gateway_url, run) = (http.clone(), gateway_url.clone(), run.clone());
        let spacing = Duration::from_secs_f64(
            options.webhooks as f64 / options.rate as f64 / (options.sweeps as f64 + 1.0),
        );
        let patience = options.patience;
        let count = options.sweeps;
        tokio::spawn(async move {
            let mut jobs = Vec::new();
            for n in 0..count {
                tokio::time::sleep(spacing).await;
                let deadline = Instant::now() + patience;
                while Instant::now() < deadline {
                    let answer = http
                        .post(format!("{gateway_url}/api/pipelines/trigger"))
                        .bearer_auth(secrets::API_KEY_ACME)
                        .header("Idempotency-Key", format!("{run}-sweep-{n}"))
                        .json(&json!({"ticker": "BTC-USD", "fast_range": [10, 20], "slow_range": [20, 30], "step": 5}))
                        .timeout(Duration::from_secs(15))
                        .send()
                        .await;
                    if let Ok(response) = answer
                        && response.status() == reqwest::StatusCode::ACCEPTED
                        && let Ok(body) = response.json::<Value>().await
                        && let Some(job) = body["job_id"].as_str()
                    {
                        jobs.push(job.to_owned());
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            jobs
        })
    };

    // Memory of every process, sampled through the run.
    let memory: Arc<Mutex<MemorySamples>> = Arc::default();
    let pids: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let refresh_pids = |nodes: &[ClusterNode], gateway: &Service, consumers: &[Service]| {
        let mut list: Vec<(String, u32)> = Vec::new();
        for node in nodes {
            list.extend(node.pid().map(|pid| (format!("nats {}", node.name), pid)));
        }
        list.extend(gateway.pid().map(|pid| ("gateway".to_owned(), pid)));
        for consumer in consumers {
            list.extend(consumer.pid().map(|pid| (consumer.name.clone(), pid)));
        }
        list.extend(
            postgres
                .pid()
                .map(|pid| ("postgres (postmaster)".to_owned(), pid)),
        );
        *pids.lock().unwrap() = list;
    };
    refresh_pids(&nodes, &gateway, &consumers);
    let sampler = {
        let (memory, pids) = (memory.clone(), pids.clone());
        let every = Duration::from_secs_f64(
            (options.webhooks as f64 / options.rate as f64 / 40.0).clamp(1.0, 60.0),
        );
        tokio::spawn(async move {
            loop {
                let at = started.elapsed().as_secs_f64();
                let list = pids.lock().unwrap().clone();
                {
                    let mut memory = memory.lock().unwrap();
                    for (name, pid) in list {
                        memory
                            .entry(name)
                            .or_default()
                            .push((at, resident_kib(pid)));
                    }
                }
                tokio::time::sleep(every).await;
            }
        })
    };

    let accepted = |fraction: f64| {
        let tally = tally.clone();
        let at = (options.webhooks as f64 * fraction) as u64;
        async move {
            // A webhook given up on never comes: count it as past.
            while tally.accepted.load(Ordering::Relaxed) + tally.given_up.load(Ordering::Relaxed)
                < at
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut recoveries = Vec::new();
    let mut windows = Vec::new();

    // A broker node dies (-9) and comes back.
    accepted(0.15).await;
    let killed = started.elapsed();
    nodes[1].kill().await;
    accepted(0.25).await;
    nodes[1].start().await;
    refresh_pids(&nodes, &gateway, &consumers);
    windows.push(("broker node killed -9", killed, started.elapsed()));

    // A consumer replica dies (-9), with batches in hand, and is restarted.
    accepted(0.35).await;
    let at = started.elapsed();
    if let Some(process) = consumers[0].process.take() {
        process.kill().await;
    }
    consumers[0].start(&binary, &logs, &http).await;
    refresh_pids(&nodes, &gateway, &consumers);
    recoveries.push(Recovery {
        fault: "batch-processor replica killed -9",
        at: at.as_secs_f64(),
        recovered_after: started.elapsed() - at,
        measured_as: "until the restarted replica was ready",
    });

    // PostgreSQL stops; the consumers wait for it.
    accepted(0.5).await;
    let at = started.elapsed();
    postgres.pause();
    tokio::time::sleep(options.postgres_outage).await;
    postgres.resume().await;
    refresh_pids(&nodes, &gateway, &consumers);
    let resumed = Instant::now();
    let before = count(&database_url, "SELECT COUNT(*) FROM csr_processed_events").await;
    let deadline = resumed + options.settle;
    while count(&database_url, "SELECT COUNT(*) FROM csr_processed_events").await <= before
        && Instant::now() < deadline
        && before < checkins
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    recoveries.push(Recovery {
        fault: "PostgreSQL stopped",
        at: at.as_secs_f64(),
        recovered_after: resumed.elapsed(),
        measured_as: "from its restart until check-ins were applied again",
    });

    // The gateway restarts (SIGTERM, a graceful stop, then a start).
    accepted(0.7).await;
    let at = started.elapsed();
    if let Some(process) = gateway.process.take() {
        process.stop().await;
    }
    gateway.start(&binary, &logs, &http).await;
    refresh_pids(&nodes, &gateway, &consumers);
    windows.push(("gateway restarted", at, started.elapsed()));

    load.await.map_err(|e| e.to_string())?;
    let jobs = sweeps.await.map_err(|e| e.to_string())?;
    let duration = started.elapsed();

    let mut answers: Vec<(Duration, Duration)> =
        std::mem::take(&mut *tally.answers.lock().unwrap());
    answers.sort();
    let times: Vec<Duration> = answers.iter().map(|(at, _)| *at).collect();
    for (fault, from, to) in windows {
        recoveries.push(Recovery {
            fault,
            at: from.as_secs_f64(),
            recovered_after: longest_gap(&times, from, to + Duration::from_secs(5)),
            measured_as: "the longest wait between two 202s meanwhile",
        });
    }
    recoveries.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut latencies: Vec<Duration> = answers.iter().map(|(_, took)| *took).collect();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };

    // Exactly once: what every 202 promised, read back.
    let given_up = tally.given_up.load(Ordering::Relaxed) as i64;
    let client = async_nats::connect(hookmesh_nats::server_list(&nats_url).as_slice())
        .await
        .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    let expected: Vec<(&'static str, i64, String)> = vec![
        (
            "check-ins applied (csr_processed_events)",
            checkins,
            "SELECT COUNT(*) FROM csr_processed_events".to_owned(),
        ),
        (
            "check-in activities (2 per check-in)",
            2 * checkins,
            "SELECT COUNT(*) FROM csr_activities WHERE kind = 'checkin'".to_owned(),
        ),
        (
            "delivery events logged",
            deliveries,
            "SELECT COUNT(*) FROM delivery_events".to_owned(),
        ),
        (
            "campaigns' delivered counters",
            deliveries,
            "SELECT CAST(COALESCE(SUM(delivered_count), 0) AS BIGINT) FROM delivery_campaigns"
                .to_owned(),
        ),
        ("CI runs", builds, "SELECT COUNT(*) FROM ci_runs".to_owned()),
        (
            "CI events",
            builds,
            "SELECT COUNT(*) FROM ci_events".to_owned(),
        ),
        (
            "CI failures announced (table)",
            failed_builds,
            "SELECT COUNT(*) FROM ci_failure_announcements".to_owned(),
        ),
        (
            "sweep jobs completed",
            jobs.len() as i64,
            "SELECT COUNT(*) FROM pipeline_jobs WHERE status = 'COMPLETED'".to_owned(),
        ),
    ];
    let settle_until = Instant::now() + options.settle;
    let mut checks = Vec::new();
    loop {
        checks.clear();
        for (what, expected, sql) in &expected {
            checks.push(Check {
                what,
                expected: *expected,
                found: count(&database_url, sql).await,
            });
        }
        for (what, expected, subject) in [
            (
                "provider webhooks stored (PROVIDERS)",
                deliveries,
                "providers.>".to_owned(),
            ),
            ("check-ins stored (BUDDY)", checkins, "buddy.>".to_owned()),
            ("CI events stored", builds, "ci.pipeline.>".to_owned()),
            (
                "CI failure announcements (stream)",
                failed_builds,
                hookmesh_contracts::subjects::CI_FAILURE_DETECTED.to_owned(),
            ),
            (
                "campaign completions announced",
                campaigns,
                hookmesh_contracts::subjects::CAMPAIGN_COMPLETED.to_owned(),
            ),
        ] {
            checks.push(Check {
                what,
                expected,
                found: subject_count(&js, &subject).await,
            });
        }
        for job in &jobs {
            checks.push(Check {
                what: "a sweep's completion announced",
                expected: 1,
                found: subject_count(&js, &format!("sweeps.jobs.{job}.completed")).await,
            });
        }
        let settled = checks.iter().all(|c| c.found == c.expected);
        if settled || Instant::now() > settle_until || given_up > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    sampler.abort();
    let report = SoakReport {
        offered: options.webhooks as u64,
        accepted: tally.accepted.load(Ordering::Relaxed),
        answered_503: tally.answered_503.load(Ordering::Relaxed),
        unreachable: tally.unreachable.load(Ordering::Relaxed),
        refused: tally.refused.load(Ordering::Relaxed),
        given_up: given_up as u64,
        duration,
        latency_p50: percentile(0.5),
        latency_p99: percentile(0.99),
        recoveries,
        checks,
        memory: std::mem::take(&mut *memory.lock().unwrap()),
    };
    if report.lost() != 0 || report.doubled() != 0 {
        eprintln!("soak: the logs end:{}", log_tails(&logs));
    }
    for consumer in consumers {
        if let Some(process) = consumer.process {
            process.stop().await;
        }
    }
    if let Some(process) = gateway.process {
        process.stop().await;
    }
    for node in &mut nodes {
        node.kill().await;
    }
    Ok(report)
}
