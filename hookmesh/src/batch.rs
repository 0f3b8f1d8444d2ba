//! `hookmesh batch-processor`, and the batch-processor inside `hookmesh up`.

use hookmesh_batch_processor::telemetry::BatchMetrics;
use hookmesh_batch_processor::{BatchProcessor, BatchSettings};
use hookmesh_runtime::metrics::ConsumeFamilies;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use hookmesh_nats::NatsEndpoint;

use crate::AnyError;
use crate::cli::{BatchProcessorCommand, CommonArgs};

/// Connects and starts the batch-processor.
pub async fn start(
    nats: &NatsEndpoint,
    settings: BatchSettings,
    metrics: BatchMetrics,
    consume: ConsumeFamilies,
    shutdown: watch::Receiver<bool>,
) -> Result<BatchProcessor, AnyError> {
    let connection = nats.connect("hookmesh-batch-processor").await?;
    Ok(BatchProcessor::start(connection.client, settings, metrics, consume, shutdown).await?)
}

pub async fn run(args: BatchProcessorCommand, common: CommonArgs) -> Result<(), AnyError> {
    let nats = common.nats_or_default();
    let database_url = args.service.database.url_or_default();
    let mut registry = Registry::default();
    let consume = ConsumeFamilies::register(&mut registry);
    let metrics = BatchMetrics::register(&mut registry);
    let (stop, stopped) = watch::channel(false);
    let settings = args.batch.settings(&database_url, common.stream_replicas);
    let service = start(&nats, settings, metrics, consume, stopped).await?;
    tracing::info!(ops = %args.service.ops_addr, database = %hookmesh_runtime::db::redacted(&database_url), batch = ?args.batch, "batch-processor running.");
    let readiness = service.readiness();
    crate::service::serve_until_signalled(
        "batch-processor",
        args.service.ops_addr,
        registry,
        readiness,
        stop,
        service.finished(),
    )
    .await
}
