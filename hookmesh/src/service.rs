//! What every single-service command does around its service: the
//! operations endpoints, and a graceful stop on SIGINT or SIGTERM.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hookmesh_runtime::ops::Check;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::{AnyError, shutdown};

/// Serves `/health`, `/readyz` (from `readiness`) and `/metrics` on
/// `ops_addr` until a signal; then tells the service to stop, waits for
/// `finished` (the work in hand settled), and stops serving.
pub async fn serve_until_signalled(
    name: &'static str,
    ops_addr: SocketAddr,
    registry: Registry,
    readiness: Vec<(&'static str, Check)>,
    stop: watch::Sender<bool>,
    finished: impl Future<Output = ()>,
) -> Result<(), AnyError> {
    let ops = hookmesh_runtime::ops::router(Arc::new(registry), readiness);
    let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    let ops_server = tokio::spawn(hookmesh_runtime::ops::serve(ops_addr, ops, async {
        let _ = ops_stopped.await;
    }));
    let signal = shutdown::signalled().await;
    tracing::info!(
        service = name,
        signal,
        "Stopping: settling the messages in hand."
    );
    let _ = stop.send(true);
    finished.await;
    let _ = stop_ops.send(());
    ops_server.await??;
    tracing::info!(service = name, "Stopped.");
    Ok(())
}
