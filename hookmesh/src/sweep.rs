//! `hookmesh sweep-worker`, the sweep-worker inside `hookmesh up`, and the
//! built-in Trading API simulator that `up` runs when no `TRADING_API_URL`
//! is set.

use hookmesh_runtime::metrics::ConsumeFamilies;
use hookmesh_sweep_worker::config::{Endpoints, seconds};
use hookmesh_sweep_worker::telemetry::SweepMetrics;
use hookmesh_sweep_worker::{SweepSettings, SweepWorker};
use hookmesh_trading_api_sim::{Knobs, SimConfig, Simulator};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use hookmesh_nats::NatsEndpoint;

use crate::AnyError;
use crate::cli::{CommonArgs, SweepWorkerCommand};

/// Connects and starts the sweep-worker.
pub async fn start(
    nats: &NatsEndpoint,
    settings: SweepSettings,
    metrics: SweepMetrics,
    consume: ConsumeFamilies,
    shutdown: watch::Receiver<bool>,
) -> Result<SweepWorker, AnyError> {
    let connection = nats.connect("hookmesh-sweep-worker").await?;
    Ok(SweepWorker::start(connection.client, settings, metrics, consume, shutdown).await?)
}

/// Starts the built-in Trading API simulator on a free loopback port.
pub async fn start_simulator(api_key: &str, run_time_secs: f64) -> Result<Simulator, AnyError> {
    let run_time = seconds(run_time_secs, "HOOKMESH_SIM_RUN_TIME_SECS")?;
    let simulator = Simulator::start(SimConfig {
        api_key: api_key.to_owned(),
        addr: ([127, 0, 0, 1], 0).into(),
        knobs: Knobs {
            run_time_ms: u64::try_from(run_time.as_millis()).unwrap_or(u64::MAX),
            ..Knobs::default()
        },
    })
    .await
    .map_err(|e| format!("cannot start the Trading API simulator: {e}"))?;
    Ok(simulator)
}

fn required<'a>(value: &'a Option<String>, variable: &str, why: &str) -> Result<&'a str, AnyError> {
    value
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("{variable} is required: {why}").into())
}

pub async fn run(args: SweepWorkerCommand, common: CommonArgs) -> Result<(), AnyError> {
    let nats = common.nats_or_default();
    let database_url = args.service.database.url_or_default();
    let sweep = &args.sweep;
    let endpoints = Endpoints {
        trading_api_url: required(
            &sweep.trading_api_url,
            "TRADING_API_URL",
            "the Trading API to submit sweeps to",
        )?,
        trading_api_key: required(
            &sweep.trading_api_key,
            "TRADING_API_KEY",
            "the Trading API's X-API-Key",
        )?,
        public_url: required(
            &sweep.public_url,
            "HOOKMESH_PUBLIC_URL",
            "the gateway's URL as the Trading API reaches it, for callbacks",
        )?,
        callback_secret: required(
            &args.callback_secret,
            "HOOKMESH_CALLBACK_SECRET",
            "it signs the callback URLs, and the gateway needs the same one",
        )?,
        local: false,
    };
    let settings = sweep.settings(endpoints, &database_url, common.stream_replicas)?;
    let mut registry = Registry::default();
    let consume = ConsumeFamilies::register(&mut registry);
    let metrics = SweepMetrics::register(&mut registry);
    let (stop, stopped) = watch::channel(false);
    let service = start(&nats, settings.clone(), metrics, consume, stopped).await?;
    tracing::info!(ops = %args.service.ops_addr, database = %hookmesh_runtime::db::redacted(&database_url), settings = ?settings, "sweep-worker running.");
    let readiness = service.readiness();
    crate::service::serve_until_signalled(
        "sweep-worker",
        args.service.ops_addr,
        registry,
        readiness,
        stop,
        service.finished(),
    )
    .await
}
