//! Seed 004's first two deduplication layers: recent keys in memory (one
//! minute), then the family's KV bucket shared by every replica
//! (`webhook_dedup`, 24 hours; `csr_events`, 30 days). The third layer is
//! each family's unique constraint, inside the batch's transaction.
//!
//! Both layers answer for a whole batch at once: one lock for memory, one
//! batched read per thousand keys for KV. A key is recorded only after the
//! batch that applied it has committed; recording first would turn a
//! failed batch's redelivery into a false duplicate. When KV cannot be read
//! or written, the batch goes on (fail-open, counted) and the database
//! constraint decides alone.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::sync::Arc;

use async_nats::jetstream;
use hookmesh_nats::BucketDefinition;
use tokio::sync::Semaphore;

use super::Observer;
use super::cache::TtlCache;
use crate::kv::SeenKeys;

/// How long the memory layer remembers a key.
pub const MEMORY_TTL: Duration = Duration::from_secs(60);
/// Most keys the memory layer holds.
const MEMORY_CAPACITY: usize = 500_000;
/// Most batches' keys being written to KV at once.
const KV_WRITES_IN_FLIGHT: usize = 4;
/// How often a bucket that could not be opened is tried again.
const REOPEN_EVERY: Duration = Duration::from_secs(30);

/// An event's identity for deduplication, valid as a KV key. Shared, not
/// copied: a batch's key goes to its in-batch index, the memory layer and
/// the KV writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey(Arc<str>);

impl DedupKey {
    /// The key of `id` within `scope`; `scope` must be made of
    /// `A-Z a-z 0-9 _ - .` (tenant ids, provider and platform names and
    /// event types are), `id` may hold anything.
    pub fn new(scope: &str, id: &str) -> Self {
        Self(SeenKeys::key(scope, id).into())
    }

    /// A key isolated by family, source (provider or CI platform) and event
    /// type, so that the same message id from two providers, or a message's
    /// `delivered` and `opened`, are different events.
    pub fn of_source(family: &str, source: &str, event_type: &str, id: &str) -> Self {
        Self::new(&format!("{family}.{source}.{event_type}"), id)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for DedupKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Which layer recognised a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Memory,
    Kv,
    Database,
}

impl Layer {
    pub fn label(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Kv => "kv",
            Self::Database => "database",
        }
    }
}

/// The memory and KV layers for one family.
#[derive(Debug)]
pub struct Deduplicator {
    family: &'static str,
    memory: Mutex<TtlCache<DedupKey, ()>>,
    kv: Mutex<Option<SeenKeys>>,
    /// Where to open the bucket again when it could not be, and when that
    /// was last tried.
    reopen: Option<(jetstream::Context, BucketDefinition, usize)>,
    last_attempt: Mutex<Option<Instant>>,
    observer: Arc<dyn Observer>,
    /// Bounds the KV writes in flight.
    writes: Arc<Semaphore>,
}

impl Deduplicator {
    /// Memory only, or memory and `kv`.
    pub fn new(family: &'static str, kv: Option<SeenKeys>, observer: Arc<dyn Observer>) -> Self {
        Self {
            family,
            memory: Mutex::new(TtlCache::new(MEMORY_CAPACITY)),
            kv: Mutex::new(kv),
            reopen: None,
            last_attempt: Mutex::new(None),
            observer,
            writes: Arc::new(Semaphore::new(KV_WRITES_IN_FLIGHT)),
        }
    }

    /// Ensures and opens `bucket` on `js`. When it cannot be opened, the
    /// family goes on without it (fail-open, counted) and it is opened again
    /// every [`REOPEN_EVERY`] at most until it can be.
    pub async fn open(
        family: &'static str,
        js: &jetstream::Context,
        bucket: BucketDefinition,
        replicas: usize,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let kv = match SeenKeys::open(js, &bucket, replicas).await {
            Ok(seen) => Some(seen),
            Err(error) => {
                observer.dedup_fail_open();
                tracing::warn!(family, %error, "The dedup bucket is unavailable; the database constraint decides alone.");
                None
            }
        };
        let mut dedup = Self::new(family, kv, observer);
        dedup.reopen = Some((js.clone(), bucket, replicas));
        dedup
    }

    /// The bucket, when it is open (or opens now).
    async fn bucket(&self) -> Option<SeenKeys> {
        if let Some(kv) = self.kv.lock().expect("never poisoned").clone() {
            return Some(kv);
        }
        let (js, bucket, replicas) = self.reopen.as_ref()?;
        {
            let mut last = self.last_attempt.lock().expect("never poisoned");
            if last.is_some_and(|at| at.elapsed() < REOPEN_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        match SeenKeys::open(js, bucket, *replicas).await {
            Ok(kv) => {
                tracing::info!(family = self.family, "The dedup bucket is open again.");
                *self.kv.lock().expect("never poisoned") = Some(kv.clone());
                Some(kv)
            }
            Err(error) => {
                tracing::warn!(family = self.family, %error, "The dedup bucket still cannot be opened.");
                None
            }
        }
    }

    /// For each key, the layer that has seen it, if any.
    pub async fn seen(&self, keys: &[DedupKey]) -> Vec<Option<Layer>> {
        let now = Instant::now();
        let mut verdicts: Vec<Option<Layer>> = {
            let memory = self
                .memory
                .lock()
                .expect("the memory layer is never poisoned");
            keys.iter()
                .map(|key| memory.get(key, now).map(|()| Layer::Memory))
                .collect()
        };
        let Some(kv) = self.bucket().await else {
            if self.reopen.is_some() {
                self.observer.dedup_fail_open();
            }
            return verdicts;
        };
        let unknown: Vec<&str> = keys
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(key, _)| key.as_str())
            .collect();
        if unknown.is_empty() {
            return verdicts;
        }
        match kv.contains_many(&unknown).await {
            Ok(found) => {
                for (key, verdict) in keys.iter().zip(verdicts.iter_mut()) {
                    if verdict.is_none() && found.contains(key.as_str()) {
                        *verdict = Some(Layer::Kv);
                    }
                }
            }
            Err(error) => {
                self.observer.dedup_fail_open();
                tracing::warn!(family = self.family, %error, "Cannot read the dedup bucket; the database constraint decides alone.");
            }
        }
        verdicts
    }

    /// Records keys whose events are committed.
    pub async fn remember(&self, keys: &[DedupKey]) {
        if keys.is_empty() {
            return;
        }
        let now = Instant::now();
        {
            let mut memory = self
                .memory
                .lock()
                .expect("the memory layer is never poisoned");
            for key in keys {
                memory.insert(key.clone(), (), MEMORY_TTL, now);
            }
        }
        // Off the batch's path: its acks need not wait for the bucket, and
        // a key that arrives late there costs only a later duplicate's early
        // exit. A few writes at most are in flight; more wait their turn.
        if let Some(kv) = self.bucket().await {
            let keys = keys.to_vec();
            let Ok(permit) = self.writes.clone().acquire_owned().await else {
                return;
            };
            let (observer, family) = (self.observer.clone(), self.family);
            tokio::spawn(async move {
                if let Err(error) = kv.insert_many(&keys).await {
                    observer.dedup_fail_open();
                    tracing::warn!(family, %error, "Cannot record keys in the dedup bucket; the database constraint still holds.");
                }
                drop(permit);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::Counting;

    #[test]
    fn keys_are_isolated_by_source_and_event_type() {
        let key = DedupKey::of_source("delivery", "sendgrid", "delivered", "msg_1");
        assert_eq!(
            key,
            DedupKey::of_source("delivery", "sendgrid", "delivered", "msg_1")
        );
        assert_ne!(
            key,
            DedupKey::of_source("delivery", "ses", "delivered", "msg_1")
        );
        assert_ne!(
            key,
            DedupKey::of_source("delivery", "sendgrid", "opened", "msg_1")
        );
        assert_ne!(
            key,
            DedupKey::of_source("ci", "sendgrid", "delivered", "msg_1")
        );
        assert!(key.as_str().starts_with("delivery.sendgrid.delivered."));
        assert!(DedupKey::new("acme", "evt-1").as_str().starts_with("acme."));
    }

    #[tokio::test]
    async fn memory_answers_for_committed_keys_only() {
        let dedup = Deduplicator::new("delivery", None, Arc::new(Counting::default()));
        let a = DedupKey::of_source("delivery", "p", "delivered", "a");
        let b = DedupKey::of_source("delivery", "p", "delivered", "b");
        assert_eq!(dedup.seen(&[a.clone(), b.clone()]).await, [None, None]);
        dedup.remember(std::slice::from_ref(&a)).await;
        assert_eq!(dedup.seen(&[a, b]).await, [Some(Layer::Memory), None]);
    }
}
