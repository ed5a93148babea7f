//! A bounded map whose entries expire: the decision memo, the owner cache and the ensured-copies
//! cache all remember answers this way, so that a change behind our back is seen within the TTL
//! and no tenant can grow memory without bound.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct TtlMap<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Hash + Eq, V: Clone> TtlMap<K, V> {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        TtlMap { ttl, capacity, entries: Mutex::new(HashMap::new()) }
    }

    /// The value, if it was inserted less than the TTL ago.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().expect("ttl map");
        let (at, value) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Inserts, first dropping expired entries when full, and everything if that is not enough.
    pub(crate) fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().expect("ttl map");
        if entries.len() >= self.capacity {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }

    /// Forgets one entry.
    pub(crate) fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.entries.lock().expect("ttl map").remove(key);
    }

    /// Forgets the entries for which `keep` is false.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        self.entries.lock().expect("ttl map").retain(|k, (_, v)| keep(k, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let map = TtlMap::new(Duration::from_millis(30), 2);
        map.insert("a".to_string(), 1);
        assert_eq!(map.get("a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(map.get("a"), None, "expired");
        map.insert("b".to_string(), 2);
        map.insert("c".to_string(), 3);
        map.insert("d".to_string(), 4);
        assert_eq!(map.get("d"), Some(4));
        assert!(map.entries.lock().unwrap().len() <= 2);
        map.retain(|k, _| k != "d");
        assert_eq!(map.get("d"), None);
        map.insert("e".to_string(), 5);
        map.remove("e");
        assert_eq!(map.get("e"), None);
    }
}
