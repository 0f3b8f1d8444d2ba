//! Seed 004's first two deduplication layers: recent keys in memory (one
//! minute), then the `webhook_dedup` KV bucket shared by every replica (24
//! hours). The third layer is each family's unique constraint, inside the
//! batch's transaction.
//!
//! Keys are isolated by family, source (provider or CI platform) and event
//! type, so the same message id from two providers, or a message's
//! `delivered` and `opened`, are different events.
//!
//! Both layers answer for a whole batch at once: one lock for memory, one
//! batched read per thousand keys for KV. A key is recorded only after the
//! batch that applied it has committed; recording first would turn a
//! failed batch's redelivery into a false duplicate. When KV cannot be read
//! or written, the batch goes on (fail-open, counted) and the database
//! constraint decides alone.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use hookmesh_nats::definitions::WEBHOOK_DEDUP_BUCKET;
use hookmesh_runtime::kv::SeenKeys;

use super::cache::TtlCache;
use crate::telemetry::BatchMetrics;

/// How long the memory layer remembers a key.
pub const MEMORY_TTL: Duration = Duration::from_secs(60);
/// Most keys the memory layer holds.
const MEMORY_CAPACITY: usize = 500_000;
/// How often a bucket that could not be opened is tried again.
const REOPEN_EVERY: Duration = Duration::from_secs(30);

/// An event's identity for deduplication, valid as a KV key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey(String);

impl DedupKey {
    /// `source` and `event_type` must be made of `a-z 0-9 _ - .` (provider
    /// names, platform names and event types are); `id` may hold anything.
    pub fn new(family: &str, source: &str, event_type: &str, id: &str) -> Self {
        Self(SeenKeys::key(
            &format!("{family}.{source}.{event_type}"),
            id,
        ))
    }

    pub fn as_str(&self) -> &str {
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
    reopen: Option<(jetstream::Context, usize)>,
    last_attempt: Mutex<Option<Instant>>,
    metrics: BatchMetrics,
}

impl Deduplicator {
    /// `kv` is `None` when the bucket could not be opened at start.
    pub fn new(family: &'static str, kv: Option<SeenKeys>, metrics: BatchMetrics) -> Self {
        Self {
            family,
            memory: Mutex::new(TtlCache::new(MEMORY_CAPACITY)),
            kv: Mutex::new(kv),
            reopen: None,
            last_attempt: Mutex::new(None),
            metrics,
        }
    }

    /// Opens the bucket again on `js`, every [`REOPEN_EVERY`] at most,
    /// while it is not open.
    pub fn reopening(mut self, js: jetstream::Context, replicas: usize) -> Self {
        self.reopen = Some((js, replicas));
        self
    }

    /// The bucket, when it is open (or opens now).
    async fn bucket(&self) -> Option<SeenKeys> {
        if let Some(kv) = self.kv.lock().expect("never poisoned").clone() {
            return Some(kv);
        }
        let (js, replicas) = self.reopen.as_ref()?;
        {
            let mut last = self.last_attempt.lock().expect("never poisoned");
            if last.is_some_and(|at| at.elapsed() < REOPEN_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        match SeenKeys::open(js, &WEBHOOK_DEDUP_BUCKET, *replicas).await {
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
                self.metrics.dedup_fail_open(self.family);
            }
            return verdicts;
        };
        let unknown: Vec<String> = keys
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(key, _)| key.0.clone())
            .collect();
        if unknown.is_empty() {
            return verdicts;
        }
        match kv.contains_many(&unknown).await {
            Ok(found) => {
                for (key, verdict) in keys.iter().zip(verdicts.iter_mut()) {
                    if verdict.is_none() && found.contains(&key.0) {
                        *verdict = Some(Layer::Kv);
                    }
                }
            }
            Err(error) => {
                self.metrics.dedup_fail_open(self.family);
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
        if let Some(kv) = self.bucket().await {
            let keys: Vec<String> = keys.iter().map(|key| key.0.clone()).collect();
            if let Err(error) = kv.insert_many(&keys).await {
                self.metrics.dedup_fail_open(self.family);
                tracing::warn!(family = self.family, %error, "Cannot record keys in the dedup bucket; the database constraint still holds.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn keys_are_isolated_by_source_and_event_type() {
        let key = DedupKey::new("delivery", "sendgrid", "delivered", "msg_1");
        assert_eq!(
            key,
            DedupKey::new("delivery", "sendgrid", "delivered", "msg_1")
        );
        assert_ne!(key, DedupKey::new("delivery", "ses", "delivered", "msg_1"));
        assert_ne!(
            key,
            DedupKey::new("delivery", "sendgrid", "opened", "msg_1")
        );
        assert_ne!(key, DedupKey::new("ci", "sendgrid", "delivered", "msg_1"));
        assert!(key.as_str().starts_with("delivery.sendgrid.delivered."));
    }

    #[tokio::test]
    async fn memory_answers_for_committed_keys_only() {
        let metrics = BatchMetrics::register(&mut Registry::default());
        let dedup = Deduplicator::new("delivery", None, metrics);
        let a = DedupKey::new("delivery", "p", "delivered", "a");
        let b = DedupKey::new("delivery", "p", "delivered", "b");
        assert_eq!(dedup.seen(&[a.clone(), b.clone()]).await, [None, None]);
        dedup.remember(std::slice::from_ref(&a)).await;
        assert_eq!(dedup.seen(&[a, b]).await, [Some(Layer::Memory), None]);
    }
}
