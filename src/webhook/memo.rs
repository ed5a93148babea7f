//! The decision memo: what an object needs, remembered per (namespace, kind, owners) until
//! anything it depends on changes. Pods of one ReplicaSet share an answer, so a warm admission
//! makes no API call and arms no timer.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::review::{Object, Request};
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

/// An answer and the caches' generation it was computed under.
#[derive(Clone)]
struct Remembered {
    generation: u64,
    answer: Arc<Answer>,
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
    answers: TtlMap<u128, Remembered>,
    keys: (std::collections::hash_map::RandomState, std::collections::hash_map::RandomState),
}

impl Memo {
    pub fn new() -> Self {
        Memo { answers: TtlMap::new(TTL, MAX_BYTES), keys: Default::default() }
    }

    /// The answer computed under `generation`, if still fresh.
    pub fn get(&self, key: u128, generation: u64) -> Option<Arc<Answer>> {
        self.answers.get(&key).filter(|r| r.generation == generation).map(|r| r.answer)
    }

    pub fn insert(&self, key: u128, generation: u64, answer: Arc<Answer>) {
        self.answers.insert(key, Remembered { generation, answer });
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
