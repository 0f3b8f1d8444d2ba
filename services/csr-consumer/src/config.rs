//! The csr-consumer's flags, each mirroring an environment variable, and
//! the settings they make.

use crate::{CsrSettings, DEFAULT_BATCH_SIZE};
use clap::builder::TypedValueParser as _;

/// How the csr-consumer batches.
#[derive(Debug, Clone, clap::Args)]
pub struct CsrArgs {
    /// Most buddy events applied in one transaction. A batch holds whatever has arrived, so a
    /// trickle is applied at once and a backlog in full batches.
    #[arg(long, env = "HOOKMESH_CSR_BATCH_SIZE", default_value_t = DEFAULT_BATCH_SIZE, value_parser = clap::value_parser!(u16).range(1..=10_000).map(usize::from))]
    pub csr_batch_size: usize,
}

impl CsrArgs {
    /// The service's settings, on `database_url` with streams of
    /// `stream_replicas` replicas.
    pub fn settings(&self, database_url: &str, stream_replicas: usize) -> CsrSettings {
        CsrSettings {
            database_url: database_url.to_owned(),
            stream_replicas,
            batch_size: self.csr_batch_size,
        }
    }
}
