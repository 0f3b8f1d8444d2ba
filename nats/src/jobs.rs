//! The registry of sweep jobs (KV bucket `sweep_jobs`, key: the job id):
//! whose each job is and what it asked for. The gateway records each job it
//! accepts and the sweep-worker each job it takes (a native publisher's
//! included); the gateway refuses callbacks for jobs not in it, and shows a
//! job QUEUED from it until the sweep-worker has it. One type, used by both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use hookmesh_contracts::sweep_jobs::{JobId, RecordedJob};

use crate::definitions::SWEEP_JOBS_BUCKET;
use crate::ensure_bucket;

/// Longest a read or a write may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why the registry could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the job registry is unreachable: {0}")]
pub struct RegistryError(String);

fn unreachable(error: impl std::fmt::Display) -> RegistryError {
    RegistryError(error.to_string())
}

/// The registry: the KV bucket, or a test's memory.
#[derive(Clone)]
pub enum JobRegistry {
    // Boxed: a KV handle is over a kilobyte, the memory arm a pointer.
    Kv(Box<kv::Store>),
    Memory(Arc<Mutex<HashMap<JobId, RecordedJob>>>),
}

impl std::fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kv(_) => "JobRegistry::Kv",
            Self::Memory(_) => "JobRegistry::Memory",
        })
    }
}

impl JobRegistry {
    /// Ensures the bucket from its file and opens it.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, RegistryError> {
        ensure_bucket(js, &SWEEP_JOBS_BUCKET, replicas)
            .await
            .map_err(unreachable)?;
        Self::open_existing(js).await
    }

    /// Opens the bucket, which must exist.
    pub async fn open_existing(js: &jetstream::Context) -> Result<Self, RegistryError> {
        js.get_key_value(SWEEP_JOBS_BUCKET.bucket)
            .await
            .map(|store| Self::Kv(Box::new(store)))
            .map_err(unreachable)
    }

    pub fn in_memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// The job, if recorded.
    pub async fn get(&self, id: &JobId) -> Result<Option<RecordedJob>, RegistryError> {
        match self {
            Self::Memory(jobs) => Ok(jobs.lock().expect("never poisoned").get(id).cloned()),
            Self::Kv(store) => {
                let Some(value) = tokio::time::timeout(TIMEOUT, store.get(id.as_str()))
                    .await
                    .map_err(|_| unreachable("no answer in time"))?
                    .map_err(unreachable)?
                else {
                    return Ok(None);
                };
                serde_json::from_slice(&value)
                    .map(Some)
                    .map_err(|e| unreachable(format!("an unreadable entry: {e}")))
            }
        }
    }

    /// Records the job (again: the same job recorded twice is one entry).
    pub async fn record(&self, id: &JobId, job: &RecordedJob) -> Result<(), RegistryError> {
        match self {
            Self::Memory(jobs) => {
                jobs.lock()
                    .expect("never poisoned")
                    .insert(id.clone(), job.clone());
                Ok(())
            }
            Self::Kv(store) => {
                let value = serde_json::to_vec(job).expect("jobs serialise");
                tokio::time::timeout(TIMEOUT, store.put(id.as_str(), value.into()))
                    .await
                    .map_err(|_| unreachable("no answer in time"))?
                    .map(|_| ())
                    .map_err(unreachable)
            }
        }
    }
}
