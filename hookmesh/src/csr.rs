//! `hookmesh csr-consumer`, and the csr-consumer inside `hookmesh up`.

use hookmesh_csr_consumer::telemetry::CsrMetrics;
use hookmesh_csr_consumer::{CsrConsumer, CsrSettings};
use hookmesh_runtime::metrics::{ConsumeFamilies, ConsumeMetrics};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use hookmesh_nats::NatsEndpoint;

use crate::AnyError;
use crate::cli::{CommonArgs, CsrConsumerCommand};

/// Connects and starts the csr-consumer.
pub async fn start(
    nats: &NatsEndpoint,
    settings: CsrSettings,
    metrics: CsrMetrics,
    consume: ConsumeMetrics,
    shutdown: watch::Receiver<bool>,
) -> Result<CsrConsumer, AnyError> {
    let connection = nats.connect("hookmesh-csr-consumer").await?;
    Ok(CsrConsumer::start(connection.client, settings, metrics, consume, shutdown).await?)
}

pub async fn run(command: CsrConsumerCommand, common: CommonArgs) -> Result<(), AnyError> {
    let args = command.service;
    let nats = common.nats_or_default();
    let database_url = args.database.url_or_default();
    let settings = command.csr.settings(&database_url, common.stream_replicas);
    let mut registry = Registry::default();
    let consume = ConsumeFamilies::register(&mut registry).consumer("csr-consumer");
    let metrics = CsrMetrics::register(&mut registry);
    let (stop, stopped) = watch::channel(false);
    let service = start(&nats, settings, metrics, consume, stopped).await?;
    tracing::info!(ops = %args.ops_addr, database = %hookmesh_runtime::db::redacted(&database_url), "csr-consumer running.");
    let readiness = service.readiness();
    crate::service::serve_until_signalled(
        "csr-consumer",
        args.ops_addr,
        registry,
        readiness,
        stop,
        service.finished(),
    )
    .await
}
