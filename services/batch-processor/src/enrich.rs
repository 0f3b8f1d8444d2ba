//! Seed 004's enrichment: look each event's key up in a lookup table,
//! cache first, then batched lookups of the misses, a few at a time, under
//! a timeout. A failed or late lookup never holds a batch up: its events go
//! on unenriched, and the fallback is counted.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use hookmesh_runtime::engine::cache::{FastHash, TtlCache};

use crate::telemetry::BatchMetrics;

/// Where enrichment comes from.
pub trait Lookup: Send + Sync + 'static {
    type Key: Clone + Eq + Hash + Send + Sync + 'static;
    type Value: Send + Sync + 'static;

    /// The values of those `keys` the table has.
    fn lookup(
        &self,
        keys: &[Self::Key],
    ) -> impl Future<Output = Result<HashMap<Self::Key, Self::Value>, String>> + Send;
}

/// How lookups are made.
#[derive(Debug, Clone)]
pub struct EnrichSettings {
    /// Longest all of a batch's lookups may take together.
    pub timeout: Duration,
    /// Lookups in flight at once.
    pub concurrency: usize,
    /// Keys per lookup.
    pub chunk: usize,
    /// How long a found value is cached.
    pub found_ttl: Duration,
    /// How long "not in the table" is cached (it may be added soon).
    pub unknown_ttl: Duration,
    pub capacity: usize,
}

impl Default for EnrichSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            concurrency: 4,
            chunk: 500,
            found_ttl: Duration::from_secs(600),
            unknown_ttl: Duration::from_secs(10),
            capacity: 200_000,
        }
    }
}

/// What enrichment found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrichment<V> {
    Found(V),
    /// The table has no such key.
    Unknown,
    /// The lookup failed or timed out: carry on without.
    Skipped,
}

/// Found values (`Some`) and keys the table does not have (`None`).
type LookupCache<L> = TtlCache<Arc<<L as Lookup>::Key>, Option<Arc<<L as Lookup>::Value>>>;

pub struct Enricher<L: Lookup> {
    lookup: Arc<L>,
    /// Values are shared, not copied, between the cache and the batches.
    cache: Mutex<LookupCache<L>>,
    settings: EnrichSettings,
    metrics: BatchMetrics,
}

impl<L: Lookup> std::fmt::Debug for Enricher<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.cache.lock().map(|cache| cache.len()).unwrap_or(0);
        f.debug_struct("Enricher")
            .field("settings", &self.settings)
            .field("cached", &cached)
            .finish_non_exhaustive()
    }
}

impl<L: Lookup> Enricher<L> {
    pub fn new(lookup: L, settings: EnrichSettings, metrics: BatchMetrics) -> Self {
        Self {
            lookup: Arc::new(lookup),
            cache: Mutex::new(TtlCache::new(settings.capacity)),
            settings,
            metrics,
        }
    }

    /// Enrichment for each key, in order.
    ///
    /// Each distinct key is copied once at most (a miss, for its lookup and
    /// then the cache): a batch of ten thousand is enriched at once, so the
    /// working set is kept to references into `keys`.
    pub async fn enrich(&self, keys: &[L::Key]) -> Vec<Enrichment<Arc<L::Value>>> {
        let now = Instant::now();
        let mut answers: HashMap<&L::Key, Enrichment<Arc<L::Value>>, FastHash> =
            HashMap::with_capacity_and_hasher(keys.len(), FastHash::default());
        let mut misses = Vec::new();
        {
            let cache = self.cache.lock().expect("the cache is never poisoned");
            for key in keys {
                if answers.contains_key(key) {
                    continue;
                }
                let answer = match cache.get(key, now) {
                    Some(Some(value)) => Enrichment::Found(value.clone()),
                    Some(None) => Enrichment::Unknown,
                    None => {
                        misses.push(key);
                        Enrichment::Skipped
                    }
                };
                answers.insert(key, answer);
            }
        }
        self.metrics
            .enrichment("cached", (answers.len() - misses.len()) as u64);
        if !misses.is_empty() {
            self.look_up(&misses, &mut answers).await;
        }
        keys.iter()
            .map(|key| answers.get(key).cloned().unwrap_or(Enrichment::Skipped))
            .collect()
    }

    async fn look_up<'k>(
        &self,
        misses: &[&'k L::Key],
        answers: &mut HashMap<&'k L::Key, Enrichment<Arc<L::Value>>, FastHash>,
    ) {
        let chunks: Vec<_> = misses
            .chunks(self.settings.chunk.max(1))
            .map(|chunk| self.look_up_chunk(chunk))
            .collect();
        let lookups =
            futures_util::stream::iter(chunks).buffer_unordered(self.settings.concurrency.max(1));
        tokio::pin!(lookups);
        let deadline = tokio::time::sleep(self.settings.timeout);
        tokio::pin!(deadline);
        let mut found = 0;
        let mut unknown = 0;
        loop {
            tokio::select! {
                next = lookups.next() => match next {
                    Some((chunk, owned, Ok(mut values))) => {
                        let now = Instant::now();
                        let mut cache = self.cache.lock().expect("the cache is never poisoned");
                        for (key, owned) in chunk.iter().zip(owned) {
                            match values.remove(&owned) {
                                Some(value) => {
                                    found += 1;
                                    let value = Arc::new(value);
                                    cache.insert(Arc::new(owned), Some(value.clone()), self.settings.found_ttl, now);
                                    answers.insert(*key, Enrichment::Found(value));
                                }
                                None => {
                                    unknown += 1;
                                    cache.insert(Arc::new(owned), None, self.settings.unknown_ttl, now);
                                    answers.insert(*key, Enrichment::Unknown);
                                }
                            }
                        }
                    }
                    Some((chunk, _, Err(error))) => {
                        self.metrics.enrichment_fallback("error", chunk.len() as u64);
                        tracing::warn!(%error, keys = chunk.len(), "Enrichment lookup failed; those events go on unenriched.");
                    }
                    None => break,
                },
                () = &mut deadline => {
                    let left = misses_left(answers);
                    self.metrics.enrichment_fallback("timeout", left as u64);
                    tracing::warn!(timeout = ?self.settings.timeout, keys = left, "Enrichment lookups timed out; those events go on unenriched.");
                    break;
                }
            }
        }
        self.metrics.enrichment("found", found);
        self.metrics.enrichment("unknown", unknown);
    }

    /// One lookup: `chunk`, its keys' copies (they go on to the cache) and
    /// what the table has of them.
    async fn look_up_chunk<'c, 'k>(
        &self,
        chunk: &'c [&'k L::Key],
    ) -> (
        &'c [&'k L::Key],
        Vec<L::Key>,
        Result<HashMap<L::Key, L::Value>, String>,
    ) {
        let owned: Vec<L::Key> = chunk.iter().map(|key| (*key).clone()).collect();
        let result = self.lookup.lookup(&owned).await;
        (chunk, owned, result)
    }
}

fn misses_left<K, V, S>(answers: &HashMap<K, Enrichment<V>, S>) -> usize {
    answers
        .values()
        .filter(|answer| matches!(answer, Enrichment::Skipped))
        .count()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use prometheus_client::registry::Registry;

    use super::*;

    /// Squares of even numbers; odd numbers are not in the table; 13 fails
    /// its whole lookup; 99 never answers.
    struct Squares {
        calls: AtomicUsize,
    }

    impl Lookup for Squares {
        type Key = u32;
        type Value = u32;

        async fn lookup(&self, keys: &[u32]) -> Result<HashMap<u32, u32>, String> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            if keys.contains(&99) {
                std::future::pending::<()>().await;
            }
            if keys.contains(&13) {
                return Err("unlucky".into());
            }
            Ok(keys
                .iter()
                .filter(|k| *k % 2 == 0)
                .map(|k| (*k, k * k))
                .collect())
        }
    }

    fn enricher(chunk: usize) -> Enricher<Squares> {
        let settings = EnrichSettings {
            chunk,
            timeout: Duration::from_millis(200),
            ..EnrichSettings::default()
        };
        let metrics = BatchMetrics::register(&mut Registry::default());
        Enricher::new(
            Squares {
                calls: AtomicUsize::new(0),
            },
            settings,
            metrics,
        )
    }

    #[tokio::test]
    async fn found_unknown_and_cached() {
        let enricher = enricher(10);
        let answers = enricher.enrich(&[2, 3, 2]).await;
        assert_eq!(
            answers,
            [
                Enrichment::Found(Arc::new(4)),
                Enrichment::Unknown,
                Enrichment::Found(Arc::new(4))
            ]
        );
        assert_eq!(
            enricher.lookup.calls.load(Ordering::Relaxed),
            1,
            "one batched lookup"
        );
        enricher.enrich(&[2, 3]).await;
        assert_eq!(
            enricher.lookup.calls.load(Ordering::Relaxed),
            1,
            "answered from the cache"
        );
    }

    #[tokio::test]
    async fn a_failed_chunk_is_skipped_and_the_others_still_answer() {
        let enricher = enricher(2);
        let answers = enricher.enrich(&[13, 14, 4, 6]).await;
        assert_eq!(
            answers,
            [
                Enrichment::Skipped,
                Enrichment::Skipped,
                Enrichment::Found(Arc::new(16)),
                Enrichment::Found(Arc::new(36))
            ]
        );
    }

    #[tokio::test]
    async fn a_lookup_that_hangs_is_cut_off_by_the_timeout() {
        let enricher = enricher(1);
        let answers = enricher.enrich(&[2, 99]).await;
        assert_eq!(
            answers,
            [Enrichment::Found(Arc::new(4)), Enrichment::Skipped]
        );
    }
}
