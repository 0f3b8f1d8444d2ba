//! A Trading API simulator that keeps seed 003's contract to the letter,
//! for the tests and for `hookmesh up` when no `TRADING_API_URL` is set.
//!
//! - `GET /health`;
//! - `POST /api/v1/auth/login` (a session cookie for the SSE stream);
//! - `POST /api/v1/strategy/sweep`: form-encoded, `X-API-Key`, 003's 202
//!   body; the sweep then runs in the background: real SMA, EMA or MACD
//!   crossover backtests ([`backtest`]) of every fast < slow combination
//!   over deterministic price history ([`prices`]), then the completion or
//!   failure callback to `webhook_url`;
//! - `GET /api/v1/sweeps/{sweep_run_id}/best?ticker=&limit=`: results
//!   sorted by score;
//! - `GET /sse-proxy/jobs/{job_id}/stream`: progress in 003's event format.
//!
//! [`Knobs`] let a test (or a person trying failure paths, through
//! `GET/PUT /_sim/knobs`) choose the run time, fail sweeps, drop callbacks;
//! [`Simulator::go_down`] closes the port.

pub mod backtest;
pub mod prices;
mod routes;
mod runner;

pub use routes::{FormRefusal, read_sweep_form};
pub use runner::SweepRequest;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookmesh_contracts::sweep::SweepResult;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// How sweeps behave; read when a sweep is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Knobs {
    /// How long a sweep runs, spread evenly over its combinations.
    pub run_time_ms: u64,
    /// Fail every sweep with this error message instead of completing it.
    pub fail_with: Option<String>,
    /// Run sweeps but never send their callbacks (a lost callback).
    pub drop_callbacks: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            run_time_ms: 5_000,
            fail_with: None,
            drop_callbacks: false,
        }
    }
}

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The key clients must send as `X-API-Key`.
    pub api_key: String,
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    pub knobs: Knobs,
}

/// What a sweep job is doing, as its SSE stream reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SimEvent {
    Progress {
        percent: u32,
        message: String,
        timestamp: String,
    },
    Done {
        done: bool,
        status: &'static str,
        sweep_run_id: String,
    },
    Error {
        error: bool,
        message: String,
        timestamp: String,
    },
}

impl SimEvent {
    fn is_final(&self) -> bool {
        !matches!(self, Self::Progress { .. })
    }
}

/// One accepted sweep.
struct Job {
    /// The latest event, shown first to every new SSE subscriber.
    last: SimEvent,
    events: broadcast::Sender<SimEvent>,
}

/// A finished sweep's results, best first.
struct Run {
    ticker: String,
    results: Vec<SweepResult>,
}

/// The API key, compared in constant time: both sides are HMACed under a
/// random key and the tags compared with `ring::hmac::verify`.
struct ApiKey {
    key: ring::hmac::Key,
    expected: ring::hmac::Tag,
}

impl ApiKey {
    fn new(plain: String) -> Self {
        let key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
                .expect("the system's random source works");
        let expected = ring::hmac::sign(&key, plain.as_bytes());
        Self { key, expected }
    }

    fn matches(&self, candidate: &str) -> bool {
        ring::hmac::verify(&self.key, candidate.as_bytes(), self.expected.as_ref()).is_ok()
    }
}

struct State {
    api_key: ApiKey,
    knobs: Mutex<Knobs>,
    jobs: Mutex<HashMap<String, Job>>,
    runs: Mutex<HashMap<String, Run>>,
    sessions: Mutex<HashSet<String>>,
    down: AtomicBool,
    accepted: AtomicUsize,
    callbacks: AtomicUsize,
    http: reqwest::Client,
}

impl State {
    fn knobs(&self) -> Knobs {
        self.knobs.lock().expect("knobs lock").clone()
    }

    /// Records `event` as the job's latest and sends it to subscribers.
    fn emit(&self, job_id: &str, event: SimEvent) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
        if let Some(job) = jobs.get_mut(job_id) {
            job.last = event.clone();
            let _ = job.events.send(event);
        }
    }
}

/// A running simulator.
pub struct Simulator {
    state: Arc<State>,
    addr: SocketAddr,
    listening: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Simulator {
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            api_key: ApiKey::new(config.api_key),
            knobs: Mutex::new(config.knobs),
            jobs: Mutex::default(),
            runs: Mutex::default(),
            sessions: Mutex::default(),
            down: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            callbacks: AtomicUsize::new(0),
            http: {
                // Callbacks may go to https URLs; ring is the crypto provider.
                let _ = rustls::crypto::ring::default_provider().install_default();
                reqwest::Client::builder()
            }
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(std::io::Error::other)?,
        });
        let simulator = Self {
            listening: Mutex::new(Some(serve(listener, state.clone()))),
            state,
            addr,
        };
        tracing::info!(url = %simulator.url(), "Trading API simulator listening.");
        Ok(simulator)
    }

    /// `http://<address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn knobs(&self) -> Knobs {
        self.state.knobs()
    }

    pub fn set_knobs(&self, knobs: Knobs) {
        *self.state.knobs.lock().expect("knobs lock") = knobs;
    }

    /// Sweeps accepted so far.
    pub fn sweeps_accepted(&self) -> usize {
        self.state.accepted.load(Ordering::Relaxed)
    }

    /// Callbacks delivered so far (answered 2xx).
    pub fn callbacks_delivered(&self) -> usize {
        self.state.callbacks.load(Ordering::Relaxed)
    }

    /// Stops listening: new connections are refused, and requests on open
    /// connections are answered 503 with `Connection: close`. Sweeps
    /// already running carry on.
    pub fn go_down(&self) {
        self.state.down.store(true, Ordering::SeqCst);
        if let Some(task) = self.listening.lock().expect("listener lock").take() {
            task.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn come_back(&self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.state.down.store(false, Ordering::SeqCst);
        *self.listening.lock().expect("listener lock") = Some(serve(listener, self.state.clone()));
        Ok(())
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Ok(mut listening) = self.listening.lock()
            && let Some(task) = listening.take()
        {
            task.abort();
        }
    }
}

fn serve(listener: TcpListener, state: Arc<State>) -> JoinHandle<()> {
    let router = routes::router(state);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "The Trading API simulator stopped serving.");
        }
    })
}
