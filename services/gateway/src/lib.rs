//! hookmesh's HTTP gateway: authenticate, verify, validate, normalise,
//! publish to JetStream, answer — and nothing else (no database writes).
//!
//! - [`routes`](crate::router): the axum routes and the checks they share.
//! - [`verify`]: each source's signature or credential scheme.
//! - [`normalize`]: CI platform payloads → seed 001's pipeline event.
//! - [`broker`]: what the routes need of the broker, as one seam (JetStream,
//!   or memory for tests without one).
//! - [`publish`]: JetStream publishing (202 only after the ack) and keeping
//!   the streams in place.
//! - [`error`]: every refusal, mapped to its HTTP status in one place.
//! - [`reads`]: `GET /api/…` answered by the owning service over NATS
//!   request/reply.
//! - `server`: the connection loop and its limits on slow, idle and too
//!   many clients.
//! - [`ui`]: the dashboard at `/ui`, and [`operators`]: the filters and
//!   rates behind its operator pages and the admin API.
//! - [`config`], [`metrics`], [`ratelimit`], [`trace`].

pub mod broker;
pub mod config;
pub mod error;
pub mod metrics;
pub mod normalize;
pub mod operators;
pub mod publish;
pub mod ratelimit;
pub mod reads;
mod routes;
mod server;
pub mod source;
pub mod trace;
pub mod ui;
pub mod verify;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hookmesh_nats::{Connection, EnsureError};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use broker::{Broker, MemoryBroker, NatsBroker};
pub use config::{GatewayArgs, GatewayConfig};
pub use metrics::GatewayMetrics;
pub use publish::Publisher;

use ratelimit::RateLimiter;

/// How long start-up waits for the broker before serving anyway (answering
/// 503 and becoming ready when the broker arrives).
const STARTUP_BROKER_WAIT: Duration = Duration::from_secs(5);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot subscribe to JetStream acknowledgements: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
    #[error(transparent)]
    Streams(#[from] EnsureError),
}

/// The gateway's shared state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway(Arc<Inner>);

/// What every request handler reads.
#[derive(Debug)]
pub struct Inner {
    config: GatewayConfig,
    broker: Arc<dyn Broker>,
    metrics: GatewayMetrics,
    limiter: RateLimiter,
    /// Every metric of the process, for `/metrics`.
    registry: Arc<Registry>,
    /// Dashboard sessions.
    sessions: ui::session::Sessions,
    /// Rates of streams and consumers, sampled as operators look.
    rates: operators::Rates,
}

impl Deref for Gateway {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Gateway {
    /// Connects the publisher, ensures the streams when the broker is
    /// reachable within a few seconds (a definition NATS cannot apply is an
    /// error), and keeps them ensured across reconnections until `shutdown`.
    pub async fn start(
        config: GatewayConfig,
        connection: Connection,
        metrics: GatewayMetrics,
        registry: Arc<Registry>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, StartError> {
        let publisher = Publisher::new(connection.client, config.publish_timeout).await?;
        publisher
            .ensure_streams_now(config.stream_replicas, STARTUP_BROKER_WAIT)
            .await?;
        tokio::spawn(publisher.clone().keep_streams(
            config.stream_replicas,
            connection.connects,
            shutdown,
        ));
        Ok(Self::new(
            config,
            Arc::new(NatsBroker::new(publisher)),
            metrics,
            registry,
        ))
    }

    /// A gateway over `broker`: JetStream, or memory in tests.
    pub fn new(
        config: GatewayConfig,
        broker: Arc<dyn Broker>,
        metrics: GatewayMetrics,
        registry: Arc<Registry>,
    ) -> Self {
        let limiter = RateLimiter::new(config.rate_limits.iter().flat_map(|(family, rate)| {
            let keys: Vec<String> = match family.as_str() {
                "api" => config
                    .api_keys
                    .iter()
                    .map(|(tenant, _)| format!("api:{tenant}"))
                    .collect(),
                "providers" => config
                    .providers
                    .iter()
                    .map(|provider| format!("providers:{provider}"))
                    .collect(),
                other => vec![other.to_owned()],
            };
            keys.into_iter().map(move |key| (key, *rate))
        }));
        if config.ui_session_key.is_none() {
            tracing::warn!(
                "HOOKMESH_UI_SESSION_SECRET is unset: dashboard sessions are signed with a key drawn \
                 now, so a restart signs everyone out and other gateway replicas refuse this one's \
                 sessions. Set the same secret on every replica."
            );
        }
        let sessions = ui::session::Sessions::new(config.ui_session, config.ui_session_key.clone());
        Self(Arc::new(Inner {
            sessions,
            rates: operators::Rates::default(),
            config,
            broker,
            metrics,
            limiter,
            registry,
        }))
    }

    pub fn router(&self) -> Router {
        routes::router(self.clone())
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }
}

/// Serves `gateway` on `listener` within its connection limits until
/// `shutdown` resolves, then closes idle connections and finishes the
/// requests in flight (each of which answers only after its publish is
/// acknowledged or refused).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = gateway.config.connections;
    server::serve(listener, gateway.router(), limits, shutdown).await
}
