//! A bounded map whose entries expire: the decision memo, the owner cache (found and missing)
//! and the ensured-copies cache all remember answers this way, so that a change behind our back
//! is seen within the TTL and no tenant can grow memory without bound. The bound is in bytes:
//! keys and values hold tenant strings, so a count of entries bounds nothing.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one entry costs beyond the bytes [`Weigh`] counts: the table's slot, the timestamp, the
/// recorded weight and the allocations' headers.
const ENTRY_OVERHEAD: usize = 64;

/// The heap bytes a key or value holds.
pub(crate) trait Weigh {
    fn weigh(&self) -> usize;
}

impl Weigh for String {
    fn weigh(&self) -> usize {
        self.capacity()
    }
}

impl Weigh for u128 {
    fn weigh(&self) -> usize {
        0
    }
}

impl Weigh for () {
    fn weigh(&self) -> usize {
        0
    }
}

impl<T: Weigh> Weigh for Arc<T> {
    fn weigh(&self) -> usize {
        std::mem::size_of::<T>() + (**self).weigh()
    }
}

impl<T: Weigh> Weigh for Vec<T> {
    fn weigh(&self) -> usize {
        self.capacity() * std::mem::size_of::<T>() + self.iter().map(Weigh::weigh).sum::<usize>()
    }
}

/// `S` hashes the keys: a key that is a keyed hash already needs no second one.
pub(crate) struct TtlMap<K, V, S = RandomState> {
    ttl: Duration,
    max_bytes: usize,
    entries: Mutex<Entries<K, V, S>>,
}

struct Entries<K, V, S> {
    map: HashMap<K, (Instant, V, usize), S>,
    bytes: usize,
}

impl<K, V, S> Entries<K, V, S> {
    fn retain(&mut self, mut keep: impl FnMut(&K, &Instant, &V) -> bool) {
        let bytes = &mut self.bytes;
        self.map.retain(|k, (at, v, weight)| {
            let kept = keep(k, at, v);
            if !kept {
                *bytes -= *weight;
            }
            kept
        });
    }
}

impl<K: Hash + Eq + Weigh, V: Clone + Weigh, S: BuildHasher + Default> TtlMap<K, V, S> {
    pub(crate) fn new(ttl: Duration, max_bytes: usize) -> Self {
        TtlMap { ttl, max_bytes, entries: Mutex::new(Entries { map: HashMap::default(), bytes: 0 }) }
    }

    /// The value, if it was inserted less than the TTL ago.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().expect("ttl map");
        let (at, value, _) = entries.map.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Inserts, first dropping expired entries when the bytes would pass the bound, and
    /// everything if that is not enough. An entry larger than the whole bound is not kept.
    pub(crate) fn insert(&self, key: K, value: V) {
        let weight = ENTRY_OVERHEAD + key.weigh() + value.weigh();
        if weight > self.max_bytes {
            return;
        }
        let mut entries = self.entries.lock().expect("ttl map");
        if let Some((_, _, old)) = entries.map.remove(&key) {
            entries.bytes -= old;
        }
        if entries.bytes + weight > self.max_bytes {
            let ttl = self.ttl;
            entries.retain(|_, at, _| at.elapsed() < ttl);
            if entries.bytes + weight > self.max_bytes {
                entries.map.clear();
                entries.bytes = 0;
            }
        }
        entries.bytes += weight;
        entries.map.insert(key, (Instant::now(), value, weight));
    }

    /// Forgets one entry.
    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut entries = self.entries.lock().expect("ttl map");
        if let Some((_, _, weight)) = entries.map.remove(key) {
            entries.bytes -= weight;
        }
    }

    /// Forgets the entries for which `keep` is false.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries.lock().expect("ttl map").retain(|k, _, v| keep(k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_forgotten() {
        let map: TtlMap<String, u128> = TtlMap::new(Duration::from_millis(30), 1024);
        map.insert("a".to_string(), 1u128);
        assert_eq!(map.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(map.get("a"), None, "expired");
        map.insert("d".to_string(), 4);
        map.retain(|k, _| k != "d");
        assert_eq!(map.get("d"), None);
        map.insert("e".to_string(), 5);
        map.remove("e");
        assert_eq!(map.get("e"), None);
        map.retain(|_, _| false);
        assert_eq!(map.entries.lock().unwrap().bytes, 0, "every byte given back");
    }

    /// Keys of a megabyte each (a tenant's strings) never hold more than the bound: the count of
    /// entries would not bound them.
    #[test]
    fn the_bound_is_in_bytes() {
        let max = 4 * 1024 * 1024;
        let map: TtlMap<String, ()> = TtlMap::new(Duration::from_secs(60), max);
        for i in 0..100 {
            map.insert(format!("{i}-{}", "k".repeat(1024 * 1024)), ());
            let entries = map.entries.lock().unwrap();
            let held: usize = entries.map.keys().map(|k| k.capacity()).sum();
            assert!(entries.bytes <= max && held <= max, "{} bytes held after {i}", entries.bytes);
        }
        map.insert("x".repeat(max), ());
        assert_eq!(map.get(&"x".repeat(max)), None, "an entry over the whole bound is not kept");
        // Small entries: many fit.
        let small: TtlMap<u128, ()> = TtlMap::new(Duration::from_secs(60), max);
        for i in 0..10_000u128 {
            small.insert(i, ());
        }
        assert_eq!(small.entries.lock().unwrap().map.len(), 10_000);
        small.insert(1, ());
        assert_eq!(small.entries.lock().unwrap().bytes, 10_000 * ENTRY_OVERHEAD, "a replaced entry is counted once");
    }
}
