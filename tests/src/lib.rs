//! The harness of hookmesh's workspace tests.
//!
//! Every test gets its own nats-server (JetStream, a store in a temporary
//! directory, a free port), so tests run in parallel and leave nothing
//! behind; a gateway runs in-process on a free port. Nothing here sleeps for
//! a fixed time: [`eventually`] polls a condition until a deadline.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use hookmesh_gateway::verify::{HmacKey, StandardWebhooksKeys};
use hookmesh_gateway::{Gateway, GatewayConfig, GatewayMetrics};
use hookmesh_nats::server::{self, EmbeddedNats, EmbeddedOptions};
use prometheus_client::registry::Registry;
use tokio::sync::{oneshot, watch};

pub mod client;
pub mod mesh;
pub mod pki;
pub mod process;
pub mod smtp;
pub mod soak;
pub mod up;
pub mod webdriver;

pub use client::{Answer, Call, MemoryGateway, TestClient};

/// The secrets every test gateway is configured with.
pub mod secrets {
    pub const BUDDY: &str = "buddy-test-secret";
    pub const GITHUB: &str = "github-test-secret";
    pub const GITLAB: &str = "gitlab-test-token";
    pub const GITLAB_SIGNING: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    pub const CIRCLECI: &str = "circleci-test-secret";
    pub const JENKINS: &str = "jenkins-test-secret";
    pub const PROVIDERS: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    pub const CALLBACK: &str = "callback-test-secret";
    pub const API_KEY_ACME: &str = "acme-key-0123456789abcdef";
    pub const API_KEY_GLOBEX: &str = "globex-key-0123456789abcdef";
    pub const TRADING_API: &str = "dev-key-000000000000000000000000";

    /// Every secret above: none may reach a log line of any test's service.
    pub const ALL: &[&str] = &[
        BUDDY,
        GITHUB,
        GITLAB,
        GITLAB_SIGNING,
        CIRCLECI,
        JENKINS,
        PROVIDERS,
        CALLBACK,
        API_KEY_ACME,
        API_KEY_GLOBEX,
        TRADING_API,
    ];
}

/// Fails, naming `origin` and the line with the secret masked, when `text`
/// (a service's log, a command's output) holds any of `secrets`.
pub fn assert_no_secret<S: AsRef<str>>(origin: &str, text: &str, secrets: &[S]) {
    for secret in secrets.iter().map(AsRef::as_ref) {
        if secret.is_empty() {
            continue;
        }
        if let Some(line) = text.lines().find(|line| line.contains(secret)) {
            panic!(
                "a secret reached {origin}: {}",
                line.replace(secret, "<SECRET>")
            );
        }
    }
}

/// The values of `secrets.env` in `hookmesh up`'s data dir: the secrets it
/// generated, which must not reach its log either.
pub fn generated_secrets(data_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(data_dir.join("secrets.env"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('=').map(|(_, value)| value.to_owned()))
        .collect()
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TestDir(PathBuf);

impl TestDir {
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "hookmesh-test-{}-{}-{label}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A nats-server of the test's own, with JetStream.
#[derive(Debug)]
pub struct TestNats {
    server: Option<EmbeddedNats>,
    binary: server::NatsServerBinary,
    port: u16,
    url: String,
    // Declared last: the directory goes after the server has stopped.
    dir: TestDir,
}

impl TestNats {
    /// Starts a broker, or fails the test saying how to install one.
    pub async fn start() -> Self {
        let binary = server::find().unwrap_or_else(|error| panic!("{error}"));
        let dir = TestDir::new("nats");
        let options = EmbeddedOptions {
            dir: dir.path().to_owned(),
            port: None,
        };
        let server = EmbeddedNats::start(&binary, &options)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        Self {
            port: server.port(),
            url: server.url().to_owned(),
            server: Some(server),
            binary,
            dir,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the broker (gracefully), keeping its store.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.expect("nats-server stops");
        }
    }

    /// Starts the broker again on the same port and store.
    pub async fn restart(&mut self) {
        self.stop().await;
        let options = EmbeddedOptions {
            dir: self.dir.path().to_owned(),
            port: Some(self.port),
        };
        let server = EmbeddedNats::start(&self.binary, &options)
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        self.server = Some(server);
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("the test broker accepts clients")
    }

    pub async fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.client().await)
    }
}

/// A gateway serving in this process on a free port.
#[derive(Debug)]
pub struct TestGateway {
    pub base_url: String,
    pub gateway: Gateway,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _keeper: watch::Sender<bool>,
}

/// A gateway configuration with every test secret set.
pub fn test_config() -> GatewayConfig {
    let mut config = GatewayConfig::default();
    let secrets = &mut config.secrets;
    secrets.buddy = Some(HmacKey::new(secrets::BUDDY.as_bytes()));
    secrets.github = Some(HmacKey::new(secrets::GITHUB.as_bytes()));
    secrets.gitlab = Some(hookmesh_gateway::verify::SecretToken::new(
        secrets::GITLAB.as_bytes(),
    ));
    secrets.gitlab_signing = Some(StandardWebhooksKeys::parse(secrets::GITLAB_SIGNING).unwrap());
    secrets.circleci = Some(HmacKey::new(secrets::CIRCLECI.as_bytes()));
    secrets.jenkins = Some(hookmesh_gateway::verify::SecretToken::new(
        secrets::JENKINS.as_bytes(),
    ));
    secrets.providers = Some(StandardWebhooksKeys::parse(secrets::PROVIDERS).unwrap());
    secrets.callback = Some(HmacKey::new(secrets::CALLBACK.as_bytes()));
    config.api_keys = hookmesh_gateway::config::parse_api_keys(&format!(
        "acme:{},globex:{}",
        secrets::API_KEY_ACME,
        secrets::API_KEY_GLOBEX
    ))
    .unwrap();
    config
}

impl TestGateway {
    pub async fn start(nats_url: &str, config: GatewayConfig) -> Self {
        let connection = hookmesh_nats::connect(nats_url, "hookmesh-test-gateway")
            .await
            .expect("the test broker accepts the gateway");
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        let (keeper, keeper_stop) = watch::channel(false);
        let gateway = Gateway::start(config, connection, metrics, Arc::new(registry), keeper_stop)
            .await
            .expect("the gateway starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(hookmesh_gateway::serve(
            listener,
            gateway.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            base_url,
            gateway,
            http: hookmesh_runtime::http::client_builder()
                .build()
                .expect("an HTTP client"),
            stop: Some(stop),
            _keeper: keeper,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A TCP port free on 127.0.0.1 at the time of asking, for a child process
/// to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a local port is free")
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// How each source signs a body, as its producers do: the gateway's
/// signers, with the tests' secrets known to parse.
pub mod sign {
    pub use hookmesh_gateway::verify::sign::{basic, circleci, sha256_header};

    /// `webhook-signature` (Standard Webhooks).
    pub fn standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
        hookmesh_gateway::verify::sign::standard(secret, id, timestamp, body)
            .expect("a whsec_ secret")
    }
}

/// Seed 002's webhook `body` to `/webhooks/buddy-events`, signed with
/// `secret` as the platform signs it, delivery id `wh-<id>`, stamped now.
pub fn buddy_request(
    http: &reqwest::Client,
    gateway: &str,
    secret: &str,
    id: &str,
    body: Vec<u8>,
) -> reqwest::RequestBuilder {
    http.post(format!("{gateway}/webhooks/buddy-events"))
        .header("content-type", "application/json")
        .header("X-Webhook-Id", format!("wh-{id}"))
        .header("X-Webhook-Timestamp", unix_now().to_string())
        .header("X-Webhook-Signature", sign::sha256_header(secret, &body))
        .body(body)
}

/// Polls `check` until it yields `Some`, failing the test with `what` after
/// `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A message as a stream stores it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub subject: String,
    pub headers: async_nats::HeaderMap,
    pub payload: bytes::Bytes,
    /// The payload as JSON; `Null` when it is not JSON.
    pub envelope: serde_json::Value,
}

impl StoredMessage {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.as_str())
    }
}

/// Every message of `stream`, in order.
pub async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<StoredMessage> {
    let mut handle = js.get_stream(stream).await.expect("the stream exists");
    let state = handle.info().await.expect("stream info").state.clone();
    let mut messages = Vec::new();
    if state.messages == 0 {
        return messages;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        if let Ok(message) = handle.get_raw_message(sequence).await {
            messages.push(StoredMessage {
                subject: message.subject.to_string(),
                headers: message.headers,
                envelope: serde_json::from_slice(&message.payload).unwrap_or_default(),
                payload: message.payload,
            });
        }
    }
    messages
}

/// Messages stored across every stream of the mesh.
pub async fn total_messages(js: &jetstream::Context) -> u64 {
    let mut total = 0;
    for definition in hookmesh_nats::STREAMS {
        if let Ok(mut stream) = js.get_stream(definition.name()).await {
            total += stream.info().await.map_or(0, |info| info.state.messages);
        }
    }
    total
}

/// A database of the test's own: a fresh SQLite file, or a fresh PostgreSQL
/// database, dropped afterwards.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    postgres: Option<(String, String)>,
    _dir: Option<TestDir>,
}

/// Where PostgreSQL test databases are created.
pub const POSTGRES_VARIABLE: &str = "HOOKMESH_TEST_POSTGRES_URL";
/// Set to `1` (CI does) to fail, rather than skip, PostgreSQL tests when
/// the server cannot be reached.
pub const REQUIRE_POSTGRES_VARIABLE: &str = "HOOKMESH_TEST_REQUIRE_POSTGRES";

impl TestDb {
    pub fn sqlite() -> Self {
        let dir = TestDir::new("db");
        Self {
            url: hookmesh_runtime::db::sqlite_url(&dir.path().join("hookmesh.db")),
            postgres: None,
            _dir: Some(dir),
        }
    }

    /// A fresh database on the PostgreSQL server, or `None` (with a note)
    /// when none is reachable and `HOOKMESH_TEST_REQUIRE_POSTGRES` is not set.
    pub async fn postgres() -> Option<Self> {
        use sqlx::Connection as _;
        let admin = std::env::var(POSTGRES_VARIABLE)
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let mut connection = match sqlx::postgres::PgConnection::connect(&admin).await {
            Ok(connection) => connection,
            Err(error) => {
                if std::env::var(REQUIRE_POSTGRES_VARIABLE).as_deref() == Ok("1") {
                    panic!("PostgreSQL at {admin} is required but unreachable: {error}");
                }
                eprintln!("skipping the PostgreSQL variant: {admin} is unreachable ({error})");
                return None;
            }
        };
        let name = format!(
            "hookmesh_test_{}_{}_{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::Relaxed),
            unix_now()
        );
        // The name is made of digits, letters and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await
            .expect("a test database can be created");
        let (base, _) = admin.rsplit_once('/').expect("a database URL");
        Some(Self {
            url: format!("{base}/{name}"),
            postgres: Some((admin, name)),
            _dir: None,
        })
    }

    /// Both backends: SQLite always, PostgreSQL where it runs.
    pub async fn every_backend() -> Vec<Self> {
        let mut databases = vec![Self::sqlite()];
        databases.extend(Self::postgres().await);
        databases
    }

    /// The PostgreSQL server's administrative URL (panics for SQLite).
    pub fn admin_url(&self) -> String {
        self.postgres
            .as_ref()
            .expect("a PostgreSQL database")
            .0
            .clone()
    }

    /// The PostgreSQL database's name (panics for SQLite).
    pub fn name(&self) -> String {
        self.postgres
            .as_ref()
            .expect("a PostgreSQL database")
            .1
            .clone()
    }

    pub fn backend(&self) -> &'static str {
        if self.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop runs outside any runtime guarantee; use a small one of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                use sqlx::Connection as _;
                if let Ok(mut connection) = sqlx::postgres::PgConnection::connect(&admin).await {
                    let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop))
                        .execute(&mut connection)
                        .await;
                }
            });
        })
        .join();
    }
}

/// What the harness needs of a consumer service running in this process.
pub trait InProcessService: Sized {
    fn readiness(&self) -> Vec<(&'static str, hookmesh_runtime::ops::Check)>;
    /// Resolves once the service, told to stop, has settled its work.
    fn finished(self) -> impl Future<Output = ()>;
}

impl InProcessService for hookmesh_csr_consumer::CsrConsumer {
    fn readiness(&self) -> Vec<(&'static str, hookmesh_runtime::ops::Check)> {
        self.readiness()
    }
    fn finished(self) -> impl Future<Output = ()> {
        self.finished()
    }
}

impl InProcessService for hookmesh_batch_processor::BatchProcessor {
    fn readiness(&self) -> Vec<(&'static str, hookmesh_runtime::ops::Check)> {
        self.readiness()
    }
    fn finished(self) -> impl Future<Output = ()> {
        self.finished()
    }
}

impl InProcessService for hookmesh_sweep_worker::SweepWorker {
    fn readiness(&self) -> Vec<(&'static str, hookmesh_runtime::ops::Check)> {
        self.readiness()
    }
    fn finished(self) -> impl Future<Output = ()> {
        self.finished()
    }
}

/// What a consumer service is started with: a broker connection, metrics
/// of its own and a stop signal.
struct ServiceParts {
    client: async_nats::Client,
    registry: Registry,
    consume: hookmesh_runtime::metrics::ConsumeFamilies,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
}

impl ServiceParts {
    async fn new(nats_url: &str, client_name: &str) -> Self {
        let connection = hookmesh_nats::connect(nats_url, client_name)
            .await
            .expect("the test broker accepts the service");
        let mut registry = Registry::default();
        let consume = hookmesh_runtime::metrics::ConsumeFamilies::register(&mut registry);
        let (stop, stopped) = watch::channel(false);
        Self {
            client: connection.client,
            registry,
            consume,
            stop,
            stopped,
        }
    }
}

/// A consumer service running in this process, with its own metrics; told
/// to stop when dropped.
#[derive(Debug)]
pub struct TestService<S: InProcessService> {
    stop: watch::Sender<bool>,
    service: Option<S>,
    registry: Registry,
}

pub type TestCsr = TestService<hookmesh_csr_consumer::CsrConsumer>;
pub type TestBatch = TestService<hookmesh_batch_processor::BatchProcessor>;
pub type TestSweep = TestService<hookmesh_sweep_worker::SweepWorker>;

impl<S: InProcessService> TestService<S> {
    /// Waits until every readiness check of `service` passes.
    async fn ready(what: &str, service: S, stop: watch::Sender<bool>, registry: Registry) -> Self {
        let readiness = service.readiness();
        eventually(Duration::from_secs(30), &format!("{what} ready"), || {
            let ready = readiness.iter().all(|(_, check)| check().is_ok());
            async move { ready.then_some(()) }
        })
        .await;
        Self {
            stop,
            service: Some(service),
            registry,
        }
    }

    pub fn service(&self) -> &S {
        self.service.as_ref().expect("running")
    }

    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("metrics encode");
        text
    }

    /// The value of a counter or gauge sample, e.g.
    /// `webhook_duplicates_total{family="delivery",layer="kv"}`; 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        metric_sample(&self.registry, sample)
    }

    /// Stops gracefully: settles (commits and acks) the messages in hand,
    /// then returns.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(service) = self.service.take() {
            service.finished().await;
        }
    }
}

impl<S: InProcessService> Drop for TestService<S> {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl TestCsr {
    pub async fn start(nats_url: &str, database_url: &str) -> Self {
        Self::start_batching(
            nats_url,
            database_url,
            hookmesh_csr_consumer::DEFAULT_BATCH_SIZE,
        )
        .await
    }

    /// With batches of at most `batch_size` events.
    pub async fn start_batching(nats_url: &str, database_url: &str, batch_size: usize) -> Self {
        let parts = ServiceParts::new(nats_url, "hookmesh-test-csr").await;
        let mut registry = parts.registry;
        let metrics = hookmesh_csr_consumer::telemetry::CsrMetrics::register(&mut registry);
        let service = hookmesh_csr_consumer::CsrConsumer::start(
            parts.client,
            hookmesh_csr_consumer::CsrSettings {
                database_url: database_url.to_owned(),
                stream_replicas: 1,
                batch_size,
            },
            metrics,
            parts.consume.consumer("csr-consumer"),
            parts.stopped,
        )
        .await
        .expect("the csr-consumer starts");
        Self::ready("the csr-consumer", service, parts.stop, registry).await
    }
}

/// Settings for a test batch-processor: small batches that flush fast.
pub fn batch_settings(database_url: &str) -> hookmesh_batch_processor::BatchSettings {
    hookmesh_batch_processor::BatchSettings {
        database_url: database_url.to_owned(),
        lookup_database_url: None,
        stream_replicas: 1,
        batch_size: 100,
        batch_interval: Duration::from_millis(50),
        adaptive: true,
        workers: 2,
        dedup_kv: true,
        enrich: hookmesh_batch_processor::enrich::EnrichSettings::default(),
    }
}

impl TestBatch {
    pub async fn start(nats_url: &str, settings: hookmesh_batch_processor::BatchSettings) -> Self {
        let parts = ServiceParts::new(nats_url, "hookmesh-test-batch").await;
        let mut registry = parts.registry;
        let metrics = hookmesh_batch_processor::telemetry::BatchMetrics::register(&mut registry);
        let service = hookmesh_batch_processor::BatchProcessor::start(
            parts.client,
            settings,
            metrics,
            parts.consume,
            parts.stopped,
        )
        .await
        .expect("the batch-processor starts");
        Self::ready("the batch-processor", service, parts.stop, registry).await
    }
}

/// Opens `url` for a test's own queries.
pub async fn query_pool(url: &str) -> hookmesh_runtime::db::Pool {
    hookmesh_runtime::db::connect(url)
        .await
        .expect("the test database opens")
}

/// Records `job_id` as a sweep job of `tenant` in the sweep-worker's KV
/// bucket, as the sweep-worker does before submitting, so the gateway
/// accepts callbacks for it.
pub async fn record_sweep_job(js: &jetstream::Context, job_id: &str, tenant: &str) {
    use hookmesh_nats::definitions::SWEEP_JOBS_BUCKET;
    hookmesh_nats::ensure_bucket(js, &SWEEP_JOBS_BUCKET, 1)
        .await
        .expect("the sweep_jobs bucket");
    let bucket = js
        .get_key_value(SWEEP_JOBS_BUCKET.bucket)
        .await
        .expect("the sweep_jobs bucket opens");
    let recorded = hookmesh_contracts::sweep_jobs::RecordedJob {
        tenant_id: hookmesh_contracts::TenantId::parse(tenant).expect("a tenant id"),
        parameters: serde_json::from_value(serde_json::json!({
            "ticker": "BTC-USD", "fast_range": [10, 20], "slow_range": [20, 30], "step": 5,
            "min_trades": 50, "strategy_type": "SMA"
        }))
        .expect("a trigger"),
        created_at: hookmesh_contracts::Timestamp::now(),
    };
    bucket
        .put(job_id, serde_json::to_vec(&recorded).unwrap().into())
        .await
        .expect("a job is recorded");
}

/// The value of a counter or gauge sample in `registry`'s text, e.g.
/// `pipeline_jobs_processed_total{job_type="trading-sweep",status="COMPLETED"}`;
/// 0 when absent.
pub fn metric_sample(registry: &Registry, sample: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("metrics encode");
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == sample).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// A Trading API simulator of the test's own, keyed with
/// [`secrets::TRADING_API`].
pub async fn trading_api(
    knobs: hookmesh_trading_api_sim::Knobs,
) -> hookmesh_trading_api_sim::Simulator {
    hookmesh_trading_api_sim::Simulator::start(hookmesh_trading_api_sim::SimConfig {
        api_key: secrets::TRADING_API.to_owned(),
        addr: ([127, 0, 0, 1], 0).into(),
        knobs,
    })
    .await
    .expect("the Trading API simulator starts")
}

/// Settings for a test sweep-worker: the seeds' rules with short delays.
pub fn sweep_settings(
    database_url: &str,
    trading_api_url: &str,
    public_url: &str,
) -> hookmesh_sweep_worker::SweepSettings {
    let mut settings = hookmesh_sweep_worker::SweepSettings::new(
        database_url,
        trading_api_url,
        secrets::TRADING_API,
        public_url,
        secrets::CALLBACK.as_bytes(),
    );
    settings.retry_delays = vec![
        Duration::from_millis(200),
        Duration::from_millis(400),
        Duration::from_millis(800),
    ];
    settings.request_timeout = Duration::from_secs(5);
    settings
}

impl TestSweep {
    pub async fn start(nats_url: &str, settings: hookmesh_sweep_worker::SweepSettings) -> Self {
        let parts = ServiceParts::new(nats_url, "hookmesh-test-sweep").await;
        let mut registry = parts.registry;
        let metrics = hookmesh_sweep_worker::telemetry::SweepMetrics::register(&mut registry);
        let service = hookmesh_sweep_worker::SweepWorker::start(
            parts.client,
            settings,
            metrics,
            parts.consume,
            parts.stopped,
        )
        .await
        .expect("the sweep-worker starts");
        Self::ready("the sweep-worker", service, parts.stop, registry).await
    }

    pub fn store(&self) -> &hookmesh_sweep_worker::store::SweepStore {
        self.service().store()
    }
}

/// Waits until the durable consumer `durable` of `stream` has nothing
/// pending or unacknowledged: everything published so far is settled.
pub async fn drained(js: &jetstream::Context, stream: &str, durable: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{stream}/{durable} drained"),
        || async {
            let stream = js.get_stream(stream).await.ok()?;
            let info = stream.consumer_info(durable).await.ok()?;
            (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
        },
    )
    .await;
}
