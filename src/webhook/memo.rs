//! The decision memo: what an object needs, remembered per (namespace, kind, owners) until
//! anything it depends on changes: a change to the watched OLM objects drops every answer, a
//! copy changed behind our back only the answers of its namespace. Pods of one ReplicaSet share an answer, so a warm admission
//! makes no API call and arms no timer.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::review::{Object, Request};
use crate::state::caches::Caches;
use crate::state::ttl::{TtlMap, Weigh};

/// What an object needs, as the webhook answers and logs it.
#[derive(Default, Debug)]
pub(crate) struct Answer {
    /// Names to have in `imagePullSecrets` (ensured copies, or originals in the catalog's namespace).
    pub wanted: Vec<String>,
    pub catalogs: Vec<String>,
    pub chain: Vec<String>,
    pub warnings: Vec<String>,
    /// Why nothing is needed, when nothing is.
    pub none_reason: Option<String>,
    /// The patch for a Pod without `imagePullSecrets` (the usual case), built once.
    pub pod_patch: OnceLock<Option<Arc<Patched>>>,
}

/// A patch ready for the response, and the reason the log line gives for it.
#[derive(Debug)]
pub(crate) struct Patched {
    pub json: Vec<u8>,
    pub reason: String,
}

/// An answer, the caches' generation it was computed under and its namespace (hashed).
#[derive(Clone)]
struct Remembered {
    generation: u64,
    namespace: u64,
    answer: Arc<Answer>,
}

/// What the caches were when a decision began: an answer computed from them is remembered only
/// if they did not change for its namespace meanwhile.
#[derive(Clone, Copy)]
pub(crate) struct Computed {
    generation: u64,
    stale_seq: u64,
}

impl Weigh for Remembered {
    fn weigh(&self) -> usize {
        let a = &self.answer;
        // The Pod patch is built after the answer is remembered: a few names' worth.
        const PATCH: usize = 256;
        std::mem::size_of::<Answer>()
            + [&a.wanted, &a.catalogs, &a.chain, &a.warnings].iter().map(|list| list.weigh()).sum::<usize>()
            + a.none_reason.as_ref().map_or(0, Weigh::weigh)
            + PATCH
    }
}

/// A remembered answer is trusted this long even when nothing it depends on changed, so that a
/// copy deleted behind our back is recreated.
const TTL: Duration = Duration::from_secs(60);
/// Bytes of answers remembered (tens of thousands of owner sets).
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// Answers by a 128-bit keyed hash of what they depend on: the strings in a key come from the
/// tenant (owner names can be megabytes long), the hash is 16 bytes whatever they are. The hash
/// keys are random per process, so no tenant can make two objects' keys collide.
pub(crate) struct Memo {
    answers: TtlMap<u128, Remembered, BuildHasherDefault<KeyedAlready>>,
    keys: (std::collections::hash_map::RandomState, std::collections::hash_map::RandomState),
    /// The namespace invalidation ([`Caches::stale_seq`]) whose answers were dropped last.
    dropped_to: AtomicU64,
}

/// The memo's keys are keyed hashes already: the map uses their low 64 bits as they are.
#[derive(Default)]
struct KeyedAlready(u64);

impl Hasher for KeyedAlready {
    fn write(&mut self, bytes: &[u8]) {
        for (i, byte) in bytes.iter().take(8).enumerate() {
            self.0 |= u64::from(*byte) << (8 * i);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Memo {
    pub fn new() -> Self {
        Memo { answers: TtlMap::new(TTL, MAX_BYTES), keys: Default::default(), dropped_to: AtomicU64::new(0) }
    }

    /// Where the caches are now; drops first the answers of namespaces invalidated since the
    /// last call (every answer, when too many were).
    pub fn begin(&self, caches: &Caches) -> Computed {
        let computed = Computed { generation: caches.generation(), stale_seq: caches.stale_seq() };
        let dropped_to = self.dropped_to.load(Ordering::Acquire);
        if computed.stale_seq != dropped_to {
            match caches.stale_since(dropped_to) {
                Some(namespaces) => {
                    let stale: HashSet<u64> = namespaces.iter().map(|ns| self.namespace(ns)).collect();
                    self.answers.retain(|_, r| !stale.contains(&r.namespace));
                }
                None => self.answers.retain(|_, _| false),
            }
            self.dropped_to.fetch_max(computed.stale_seq, Ordering::AcqRel);
        }
        computed
    }

    /// The answer computed under the caches' generation `at`, if still fresh.
    pub fn get(&self, key: u128, at: Computed) -> Option<Arc<Answer>> {
        self.answers.get(&key).filter(|r| r.generation == at.generation).map(|r| r.answer)
    }

    /// Remembers an answer for `namespace` computed from the caches as they were `at`, unless
    /// that namespace was invalidated meanwhile.
    pub fn insert(&self, key: u128, namespace: &str, at: Computed, caches: &Caches, answer: Arc<Answer>) {
        if caches.stale_seq() != at.stale_seq
            && caches.stale_since(at.stale_seq).is_none_or(|stale| stale.iter().any(|ns| ns == namespace))
        {
            return;
        }
        let remembered = Remembered { generation: at.generation, namespace: self.namespace(namespace), answer };
        self.answers.insert(key, remembered);
    }

    fn namespace(&self, namespace: &str) -> u64 {
        let mut hasher = self.keys.0.build_hasher();
        hasher.write(namespace.as_bytes());
        hasher.finish()
    }

    /// The object's namespace, kind, (ServiceAccount) name and owners: everything a decision
    /// reads apart from the caches' generation. A dry run's answer (its copies were not made) is
    /// kept apart from a real one.
    pub fn key(&self, req: &Request<'_>, ns: &str, object: &Object<'_>, dry_run: bool) -> u128 {
        let mut hashers = (self.keys.0.build_hasher(), self.keys.1.build_hasher());
        let mut part = |text: &str| {
            for hasher in [&mut hashers.0, &mut hashers.1] {
                hasher.write(text.as_bytes());
                hasher.write_u8(0xff);
            }
        };
        part(ns);
        part(&req.kind.kind);
        if req.kind.kind == "ServiceAccount" {
            part(req.name.as_deref().or(object.metadata.name.as_deref()).unwrap_or(""));
        }
        for owner in &object.metadata.owner_references {
            for text in [&owner.api_version, &owner.kind, &owner.name, &owner.uid] {
                part(text);
            }
        }
        if dry_run {
            part("dry run");
        }
        (u128::from(hashers.0.finish()) << 64) | u128::from(hashers.1.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::caches::Fixture;

    #[test]
    fn a_namespace_invalidated_drops_only_its_answers() {
        let feed = Caches::from_fixture(Fixture::default());
        let caches = feed.caches();
        let memo = Memo::new();
        let at = memo.begin(caches);
        memo.insert(1, "a", at, caches, Arc::default());
        memo.insert(2, "b", at, caches, Arc::default());
        caches.invalidate_namespace("a");
        let at = memo.begin(caches);
        assert!(memo.get(1, at).is_none(), "a's answer dropped");
        assert!(memo.get(2, at).is_some(), "b's answer kept");

        // An answer computed before its namespace was invalidated is not remembered.
        let before = memo.begin(caches);
        caches.invalidate_namespace("b");
        memo.insert(3, "b", before, caches, Arc::default());
        memo.insert(4, "c", before, caches, Arc::default());
        let at = memo.begin(caches);
        assert!(memo.get(2, at).is_none() && memo.get(3, at).is_none());
        assert!(memo.get(4, at).is_some(), "c was not invalidated");

        // More invalidations at once than are recorded drop every answer.
        for i in 0..2000 {
            caches.invalidate_namespace(&format!("x{i}"));
        }
        assert!(memo.get(4, memo.begin(caches)).is_none());
        // A change to the watched objects drops every answer too.
        let at = memo.begin(caches);
        memo.insert(5, "c", at, caches, Arc::default());
        caches.invalidate();
        assert!(memo.get(5, memo.begin(caches)).is_none());
    }
}
