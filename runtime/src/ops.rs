//! The operations endpoints every service serves: `/health` (liveness),
//! `/readyz` (readiness, from the service's own checks) and `/metrics`.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hookmesh_contracts::health::Health;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::db::Pool;

/// A readiness check: `Ok` when ready, the reason otherwise.
pub type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Ready while the client is connected to the broker.
pub fn broker_check(client: async_nats::Client) -> Check {
    Arc::new(move || match client.connection_state() {
        async_nats::connection::State::Connected => Ok(()),
        _ => Err("not connected".to_owned()),
    })
}

/// Whether the database answers: set by each batch's commit or failure,
/// and by a ping every few seconds when there is no traffic.
#[derive(Debug, Clone)]
pub struct DatabaseHealth {
    ok: Arc<AtomicBool>,
}

impl Default for DatabaseHealth {
    fn default() -> Self {
        Self {
            ok: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl DatabaseHealth {
    pub fn record(&self, ok: bool) {
        self.ok.store(ok, Ordering::Relaxed);
    }

    pub fn check(&self) -> Check {
        let ok = self.ok.clone();
        Arc::new(move || {
            if ok.load(Ordering::Relaxed) {
                Ok(())
            } else {
                Err("unreachable".to_owned())
            }
        })
    }

    /// Pings `pool` every five seconds until `shutdown` turns true.
    pub async fn watch(self, pool: Pool, mut shutdown: watch::Receiver<bool>) {
        loop {
            let ping = sqlx::query("SELECT 1").execute(&pool).await;
            self.record(ping.is_ok());
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// `GET /health`: the process answers (003's format).
pub async fn health() -> Json<Health> {
    Json(Health::healthy())
}

/// `GET /metrics` over `registry`, in the OpenMetrics text format.
pub fn metrics_response(registry: &Registry) -> Response {
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(%error, "Could not encode the metrics.");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /readyz` from named checks: 200 when all pass, 503 naming those
/// that do not.
pub fn readiness_response(checks: &[(&'static str, Check)]) -> Response {
    let results: BTreeMap<&str, String> = checks
        .iter()
        .map(|(name, check)| (*name, check().err().unwrap_or_else(|| "ok".to_owned())))
        .collect();
    let ready = results.values().all(|result| result == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": results,
    });
    (status, Json(body)).into_response()
}

#[derive(Clone)]
struct OpsState {
    registry: Arc<Registry>,
    checks: Arc<Vec<(&'static str, Check)>>,
}

/// The router of a service without an HTTP API of its own.
pub fn router(registry: Arc<Registry>, checks: Vec<(&'static str, Check)>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(health))
        .route(
            "/readyz",
            get(|State(state): State<OpsState>| async move { readiness_response(&state.checks) }),
        )
        .route(
            "/metrics",
            get(|State(state): State<OpsState>| async move { metrics_response(&state.registry) }),
        )
        .with_state(OpsState {
            registry,
            checks: Arc::new(checks),
        })
}

/// Serves `router` on `address` until `shutdown` resolves.
pub async fn serve(
    address: SocketAddr,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
