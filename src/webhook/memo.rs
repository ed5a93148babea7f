//! The decision memo: what an object needs, remembered per (namespace, kind, owners) until
//! anything it depends on changes. Pods of one ReplicaSet share an answer, so a warm admission
//! makes no API call and arms no timer.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::review::{Object, Request};
use crate::state::ttl::TtlMap;

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

/// A remembered answer is trusted this long even when nothing it depends on changed, so that a
/// copy deleted behind our back is recreated.
const TTL: Duration = Duration::from_secs(60);
const CAPACITY: usize = 50_000;

pub(crate) struct Memo(TtlMap<String, Remembered>);

impl Memo {
    pub fn new() -> Self {
        Memo(TtlMap::new(TTL, CAPACITY))
    }

    /// The answer computed under `generation`, if still fresh.
    pub fn get(&self, key: &str, generation: u64) -> Option<Arc<Answer>> {
        self.0.get(key).filter(|r| r.generation == generation).map(|r| r.answer)
    }

    pub fn insert(&self, key: String, generation: u64, answer: Arc<Answer>) {
        self.0.insert(key, Remembered { generation, answer });
    }
}

/// The object's namespace, kind, (ServiceAccount) name and owners: everything a decision reads
/// apart from the caches' generation.
pub(crate) fn key(req: &Request<'_>, ns: &str, object: &Object<'_>) -> String {
    let mut key = String::with_capacity(128);
    key.push_str(ns);
    key.push('\0');
    key.push_str(&req.kind.kind);
    if req.kind.kind == "ServiceAccount" {
        key.push('\0');
        key.push_str(req.name.as_deref().or(object.metadata.name.as_deref()).unwrap_or(""));
    }
    for owner in &object.metadata.owner_references {
        for part in [&owner.api_version, &owner.kind, &owner.name, &owner.uid] {
            key.push('\0');
            key.push_str(part);
        }
    }
    key
}
