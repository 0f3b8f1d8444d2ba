//! Waiting for the signal to stop: SIGINT (Ctrl-C) or SIGTERM (Kubernetes).

use tokio::signal::unix::{SignalKind, signal};

/// Resolves on the first SIGINT or SIGTERM, naming it.
pub async fn signalled() -> &'static str {
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops hookmesh.");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
