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

use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use hookmesh_nats::BucketDefinition;
use tokio::sync::Semaphore;

use super::Observer;
use super::cache::{FastHash, TtlCache};
use crate::kv::SeenKeys;

/// How long the memory layer remembers a key.
pub const MEMORY_TTL: Duration = Duration::from_secs(60);
/// Most keys the memory layer holds.
const MEMORY_CAPACITY: usize = 500_000;
/// Most batches' keys being written to KV at once.
const KV_WRITES_IN_FLIGHT: usize = 4;
/// How often a bucket that could not be opened is tried again.
const REOPEN_EVERY: Duration = Duration::from_secs(30);

/// An event's identity for deduplication: its scope and the digest of its
/// id, written as its KV key (`<scope>.<hex digest>`). No allocation of its
/// own: scopes are few (a family, source and event type; a tenant) and
/// shared by their events, and the digest is 16 bytes inline. Every batch's
/// keys and the memory layer's half a million are held this way.
#[derive(Clone)]
pub struct DedupKey {
    digest: [u8; 16],
    scope: Arc<str>,
}

/// Most scopes one thread keeps for sharing; past it, it starts again.
const SHARED_SCOPES: usize = 1024;

thread_local! {
    /// The scopes this thread has made keys in, and a buffer to spell one.
    static SCOPES: std::cell::RefCell<(String, HashSet<Arc<str>, FastHash>)> =
        std::cell::RefCell::default();
}

impl DedupKey {
    /// The key of `id` within `scope`; `scope` must be made of
    /// `A-Z a-z 0-9 _ - .` (tenant ids, provider and platform names and
    /// event types are), `id` may hold anything.
    pub fn new(scope: &str, id: &str) -> Self {
        Self::in_scope(&[scope], id)
    }

    /// A key isolated by family, source (provider or CI platform) and event
    /// type, so that the same message id from two providers, or a message's
    /// `delivered` and `opened`, are different events.
    pub fn of_source(family: &str, source: &str, event_type: &str, id: &str) -> Self {
        Self::in_scope(&[family, source, event_type], id)
    }

    /// The key of `id` in the scope that `parts` spell, joined by dots.
    fn in_scope(parts: &[&str], id: &str) -> Self {
        let scope = SCOPES.with_borrow_mut(|(spelled, scopes)| {
            spelled.clear();
            for (n, part) in parts.iter().enumerate() {
                if n > 0 {
                    spelled.push('.');
                }
                spelled.push_str(part);
            }
            if let Some(scope) = scopes.get(spelled.as_str()) {
                return scope.clone();
            }
            if scopes.len() >= SHARED_SCOPES {
                scopes.clear();
            }
            let scope: Arc<str> = spelled.as_str().into();
            scopes.insert(scope.clone());
            scope
        });
        Self {
            digest: SeenKeys::digest(id),
            scope,
        }
    }
}

impl PartialEq for DedupKey {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest
            && (Arc::ptr_eq(&self.scope, &other.scope) || self.scope == other.scope)
    }
}

impl Eq for DedupKey {}

/// The digest alone: it is already uniform, and equal keys have equal
/// digests.
impl Hash for DedupKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.digest));
    }
}

/// The key as KV holds it.
impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SeenKeys::write_key(f, &self.scope, &self.digest)
    }
}

impl fmt::Debug for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DedupKey({self})")
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
        let unknown: Vec<&DedupKey> = keys
            .iter()
            .zip(&verdicts)
            .filter(|(_, verdict)| verdict.is_none())
            .map(|(key, _)| key)
            .collect();
        if unknown.is_empty() {
            return verdicts;
        }
        match kv.contains_many(&unknown).await {
            Ok(found) => {
                let unknown_verdicts = verdicts.iter_mut().filter(|verdict| verdict.is_none());
                for (verdict, found) in unknown_verdicts.zip(found) {
                    if found {
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
        assert_eq!(
            key.to_string(),
            SeenKeys::key("delivery.sendgrid.delivered", "msg_1"),
            "written as its KV key"
        );
        assert_eq!(
            DedupKey::new("acme", "evt-1").to_string(),
            SeenKeys::key("acme", "evt-1")
        );
    }

    #[test]
    fn keys_made_on_other_threads_are_the_same_key() {
        let here = DedupKey::of_source("delivery", "ses", "opened", "m");
        let there = std::thread::spawn(|| DedupKey::of_source("delivery", "ses", "opened", "m"))
            .join()
            .unwrap();
        assert!(
            !Arc::ptr_eq(&here.scope, &there.scope),
            "each thread shares its own"
        );
        assert_eq!(here, there);
        let mut keys = HashSet::new();
        keys.insert(here);
        assert!(keys.contains(&there));
        assert!(!keys.contains(&DedupKey::of_source("delivery", "ses", "clicked", "m")));
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
