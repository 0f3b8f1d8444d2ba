//! A bounded map whose entries expire: the in-memory deduplication layer
//! and the enrichment cache.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The engine's hasher for maps of its own keys (seeded per map).
pub type FastHash = foldhash::fast::RandomState;

/// Each key is held twice, in the map and in the order of expiry: keys that
/// own text should be cheap to clone (an `Arc`), as the caches hold hundreds
/// of thousands of them.
#[derive(Debug)]
pub struct TtlCache<K, V> {
    entries: HashMap<K, (Instant, V), FastHash>,
    /// Keys in insertion order with the expiry they were inserted with, for
    /// eviction without scanning the map.
    order: VecDeque<(Instant, K)>,
    capacity: usize,
}

impl<K: Clone + Eq + Hash, V> TtlCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::default(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn get<Q>(&self, key: &Q, now: Instant) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|(expires, _)| *expires > now)
            .map(|(_, value)| value)
    }

    pub fn insert(&mut self, key: K, value: V, ttl: Duration, now: Instant) {
        let expires = now + ttl;
        self.order.push_back((expires, key.clone()));
        self.entries.insert(key, (expires, value));
        self.evict(now);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops expired entries from the front, then the oldest while over
    /// capacity. A key inserted again has a newer expiry, so its stale
    /// position in `order` removes nothing.
    fn evict(&mut self, now: Instant) {
        while let Some((expires, _)) = self.order.front() {
            let over_capacity = self.entries.len() > self.capacity;
            if *expires > now && !over_capacity {
                break;
            }
            let (expires, key) = self.order.pop_front().expect("front exists");
            if self
                .entries
                .get(&key)
                .is_some_and(|(current, _)| *current == expires)
            {
                self.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn entries_expire_after_their_ttl() {
        let start = Instant::now();
        let mut cache = TtlCache::new(10);
        cache.insert("a", 1, MINUTE, start);
        assert_eq!(cache.get(&"a", start + Duration::from_secs(59)), Some(&1));
        assert_eq!(cache.get(&"a", start + MINUTE), None);
        cache.insert("b", 2, MINUTE, start + MINUTE * 2);
        assert_eq!(cache.len(), 1, "the expired entry was evicted");
    }

    #[test]
    fn the_oldest_entries_go_when_full() {
        let start = Instant::now();
        let mut cache = TtlCache::new(3);
        for (i, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.insert(key, i, MINUTE, start);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&"a", start), None);
        assert_eq!(cache.get(&"d", start), Some(&3));
    }

    #[test]
    fn inserting_again_refreshes_the_expiry() {
        let start = Instant::now();
        let mut cache = TtlCache::new(10);
        cache.insert("a", 1, MINUTE, start);
        cache.insert("a", 2, MINUTE, start + Duration::from_secs(50));
        cache.insert("b", 3, MINUTE, start + Duration::from_secs(70));
        assert_eq!(cache.get(&"a", start + Duration::from_secs(100)), Some(&2));
    }
}
