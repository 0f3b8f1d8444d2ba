//! The batch-processor's flags, each mirroring an environment variable, and
//! the settings they make.

use clap::builder::TypedValueParser as _;
use std::time::Duration;

use crate::enrich::EnrichSettings;
use crate::{BatchSettings, DEFAULT_BATCH_INTERVAL, DEFAULT_BATCH_SIZE, DEFAULT_WORKERS};

/// How the batch-processor batches and enriches.
#[derive(Clone, clap::Args)]
pub struct BatchArgs {
    /// Most events per batch. A batch is handed over when it holds this many, or when its first
    /// event has waited HOOKMESH_BATCH_INTERVAL_MS, whichever comes first.
    #[arg(long, env = "HOOKMESH_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub batch_size: usize,

    /// Longest the first event of a batch waits for the batch to fill, in milliseconds.
    #[arg(long, env = "HOOKMESH_BATCH_INTERVAL_MS", default_value_t = DEFAULT_BATCH_INTERVAL.as_millis() as u64)]
    pub batch_interval_ms: u64,

    /// Adaptive batching (seed 004): while a worker is idle, a partial batch is handed over as
    /// soon as no further event is waiting, so a trickle is committed within milliseconds and a
    /// backlog still goes in full batches. false: a partial batch always waits
    /// HOOKMESH_BATCH_INTERVAL_MS.
    #[arg(long, env = "HOOKMESH_BATCH_ADAPTIVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub batch_adaptive: bool,

    /// Batches of each family handled at once: while one waits on the database, the next is
    /// read and deduplicated.
    #[arg(long, env = "HOOKMESH_BATCH_WORKERS", default_value_t = DEFAULT_WORKERS, value_parser = clap::value_parser!(u16).range(1..=32).map(usize::from))]
    pub batch_workers: usize,

    /// Seed 004's distributed layer of deduplication: the KV bucket webhook_dedup, shared by
    /// every replica. false: the memory layer and the database constraint alone decide, which
    /// are exact too; it saves a KV read and write per event (see docs/batch.md, deduplication).
    #[arg(long, env = "HOOKMESH_DEDUP_KV", default_value_t = true, action = clap::ArgAction::Set)]
    pub dedup_kv: bool,

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
            .field("batch_adaptive", &self.batch_adaptive)
            .field("batch_workers", &self.batch_workers)
            .field("dedup_kv", &self.dedup_kv)
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

impl BatchArgs {
    /// The service's settings, on `database_url` with streams of
    /// `stream_replicas` replicas.
    pub fn settings(&self, database_url: &str, stream_replicas: usize) -> BatchSettings {
        BatchSettings {
            database_url: database_url.to_owned(),
            lookup_database_url: self.lookup_database_url.clone(),
            stream_replicas,
            batch_size: self.batch_size,
            batch_interval: Duration::from_millis(self.batch_interval_ms),
            adaptive: self.batch_adaptive,
            workers: self.batch_workers,
            dedup_kv: self.dedup_kv,
            enrich: EnrichSettings {
                timeout: Duration::from_millis(self.enrich_timeout_ms),
                concurrency: self.enrich_concurrency,
                ..EnrichSettings::default()
            },
        }
    }
}
