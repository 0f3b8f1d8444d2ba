//! `hookmesh gateway`, and the gateway inside `hookmesh up`.

use std::sync::Arc;

use hookmesh_gateway::{Gateway, GatewayArgs, GatewayConfig, GatewayMetrics};
use hookmesh_nats::Connection;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use hookmesh_nats::NatsEndpoint;

use crate::AnyError;
use crate::cli::{CommonArgs, GatewayCommand};
use crate::shutdown;

/// Longest wait for the broker connection to flush at shutdown.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A gateway serving in the background.
#[derive(Debug)]
pub struct RunningGateway {
    /// `http://<address>` it listens on.
    pub url: String,
    server: JoinHandle<std::io::Result<()>>,
    stop_serving: oneshot::Sender<()>,
    stop_keeper: watch::Sender<bool>,
    connection: Connection,
}

/// Connects to `nats`, ensures the streams and starts serving; its
/// `/metrics` shows all of `registry`.
pub async fn start(
    args: &GatewayArgs,
    common: &CommonArgs,
    nats: &NatsEndpoint,
    metrics: GatewayMetrics,
    registry: Arc<Registry>,
) -> Result<RunningGateway, AnyError> {
    let config = GatewayConfig::from_args(args, common.stream_replicas)?;
    let connection = nats.connect("hookmesh-gateway").await?;
    let (stop_keeper, keeper_stopped) = watch::channel(false);
    let gateway = Gateway::start(
        config,
        connection.clone(),
        metrics,
        registry,
        keeper_stopped,
    )
    .await?;
    let listener = TcpListener::bind(args.http_addr).await.map_err(|error| {
        format!(
            "cannot listen on {} ({error}); set HOOKMESH_HTTP_ADDR to a free address",
            args.http_addr
        )
    })?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_serving, stop_requested) = oneshot::channel();
    let server = tokio::spawn(hookmesh_gateway::serve(
        listener,
        gateway.clone(),
        async move {
            let _ = stop_requested.await;
        },
    ));
    Ok(RunningGateway {
        url,
        server,
        stop_serving,
        stop_keeper,
        connection,
    })
}

impl RunningGateway {
    /// Stops accepting connections, finishes the requests in flight (each
    /// answers only once its publish is acknowledged or refused), then
    /// flushes and closes the broker connection.
    pub async fn stop(self) -> Result<(), AnyError> {
        let _ = self.stop_serving.send(());
        self.server.await??;
        let _ = self.stop_keeper.send(true);
        // Every accepted request already waited for its acknowledgement; the
        // flush only pushes out what is left, and must not wait for a broker
        // that is gone.
        match tokio::time::timeout(FLUSH_TIMEOUT, self.connection.client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "Could not flush the broker connection."),
            Err(_) => tracing::warn!("The broker connection did not flush in time."),
        }
        Ok(())
    }
}

pub async fn run(args: GatewayCommand, common: CommonArgs) -> Result<(), AnyError> {
    let nats = common.nats_or_default();
    let mut registry = Registry::default();
    let metrics = GatewayMetrics::register(&mut registry);
    let gateway = start(&args.gateway, &common, &nats, metrics, Arc::new(registry)).await?;
    tracing::info!(url = %gateway.url, nats = %nats.redacted(), "Gateway listening.");
    let signal = shutdown::signalled().await;
    tracing::info!(signal, "Stopping: finishing the requests in flight.");
    gateway.stop().await?;
    tracing::info!("Gateway stopped.");
    Ok(())
}
