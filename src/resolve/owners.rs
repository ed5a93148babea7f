//! Owner lookups for the trusted chain. An ownerReference is only believed when the object it
//! names exists with the same UID. Answers are cached (keyed by the UID they were verified
//! against), so a warm admission makes no API call; a freshly created owner that is not yet known
//! costs one metadata-only GET through an [`OwnerSource`], answered from the API server's watch
//! cache. Only when that cache does not have the owner with the referenced UID (it can lag a
//! create by milliseconds) is it read again from etcd: a quorum read waits behind every write
//! etcd has to apply, which is slowest in the bursts that create owners, and a stale copy of an
//! owner with the same UID is as good as the cached answers below.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject, GetParams};
use kube::core::{ApiResource, GroupVersionKind};

use tracing::warn;

use crate::error::Error;
use crate::state::single_flight::SingleFlight;
use crate::state::ttl::{TtlMap, Weigh};
use crate::telemetry::metrics;

/// What the chain needs of an owner: its identity and its own owners.
#[derive(Debug, Clone)]
pub struct OwnerMeta {
    pub uid: String,
    pub owner_references: Vec<OwnerRef>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Weigh for OwnerMeta {
    fn weigh(&self) -> usize {
        self.uid.weigh() + self.owner_references.weigh()
    }
}

impl Weigh for OwnerRef {
    fn weigh(&self) -> usize {
        self.api_version.weigh() + self.kind.weigh() + self.name.weigh() + self.uid.weigh()
    }
}

impl From<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> for OwnerRef {
    fn from(r: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> Self {
        OwnerRef { api_version: r.api_version, kind: r.kind, name: r.name, uid: r.uid }
    }
}

/// One object to look up: `plural` comes from the CSV that owns the kind, or is a built-in.
#[derive(Debug, Clone, Copy)]
pub struct OwnerQuery<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    pub plural: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Which copy of an object a lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The API server's watch cache (`resourceVersion=0`): served from its memory, no round trip
    /// to etcd, but it may lag a create by milliseconds.
    Cached,
    /// A quorum read from etcd: the object as it is now.
    Latest,
}

/// Where owners are read from: the API server in production, a map in tests.
pub trait OwnerSource: Send + Sync + 'static {
    /// The object's metadata, or `None` when it does not exist (in the copy `read` asks for).
    fn get<'a>(&'a self, query: OwnerQuery<'a>, read: Read) -> BoxFuture<'a, Result<Option<OwnerMeta>, kube::Error>>;
}

/// Metadata-only GETs against the API server.
pub struct ApiOwners(pub kube::Client);

impl OwnerSource for ApiOwners {
    fn get<'a>(&'a self, q: OwnerQuery<'a>, read: Read) -> BoxFuture<'a, Result<Option<OwnerMeta>, kube::Error>> {
        Box::pin(async move {
            let (group, version) = q.api_version.split_once('/').unwrap_or(("", q.api_version));
            let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, q.kind), q.plural);
            let api: Api<DynamicObject> = Api::namespaced_with(self.0.clone(), q.namespace, &resource);
            let params = match read {
                Read::Cached => GetParams::any(),
                Read::Latest => GetParams::default(),
            };
            Ok(api.get_metadata_opt_with(q.name, &params).await?.map(|found| OwnerMeta {
                uid: found.metadata.uid.unwrap_or_default(),
                owner_references: found
                    .metadata
                    .owner_references
                    .unwrap_or_default()
                    .into_iter()
                    .map(OwnerRef::from)
                    .collect(),
            }))
        })
    }
}

/// Workload kinds whose plural is known without discovery.
pub fn builtin_plural(api_version: &str, kind: &str) -> Option<&'static str> {
    Some(match (api_version, kind) {
        ("apps/v1", "ReplicaSet") => "replicasets",
        ("apps/v1", "Deployment") => "deployments",
        ("apps/v1", "StatefulSet") => "statefulsets",
        ("apps/v1", "DaemonSet") => "daemonsets",
        ("batch/v1", "Job") => "jobs",
        ("batch/v1", "CronJob") => "cronjobs",
        _ => return None,
    })
}

fn key(query: &OwnerQuery<'_>) -> String {
    format!("{}/{}/{}/{}", query.api_version, query.kind, query.namespace, query.name)
}

/// The `missing` key of a reference to `key` with a UID its object does not have.
fn mismatch_key(key: &str, uid: &str) -> String {
    format!("{key}#{uid}")
}

/// Entries are re-verified after this long, so a changed ownerReference on an owner is seen.
const TTL: Duration = Duration::from_secs(300);
/// Bytes of owners remembered (about 50,000 of a few hundred bytes each).
const MAX_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of misses remembered: a key is at most about 700 bytes (its parts are bounded).
const MAX_MISSING_BYTES: usize = 4 * 1024 * 1024;
/// A lookup that found nothing is remembered this long: a made-up owner costs one GET per
/// period however many objects name it.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);

/// What a lookup established about an ownerReference.
#[derive(Debug)]
pub enum Verified {
    /// The owner exists with the referenced UID.
    Owner(Arc<OwnerMeta>),
    /// No such owner with that UID: a forged or stale reference.
    NotFound,
    /// The API server refused the lookup (403): this webhook may not read `resource`.
    Forbidden { resource: String },
}

/// Verified owner lookups, cached.
pub struct Owners {
    source: Box<dyn OwnerSource>,
    cache: TtlMap<String, Arc<OwnerMeta>>,
    /// Owners looked up and not found, briefly: by key when nothing has the name, by
    /// [`mismatch_key`] when the object of that name has another UID.
    missing: TtlMap<String, ()>,
    /// One lookup per owner at a time: concurrent reviews of a new ReplicaSet's Pods wait for the
    /// first one's answer instead of each asking the API server.
    in_flight: SingleFlight,
    /// Resources whose refusal was logged already: once per resource, not per review.
    forbidden_logged: Mutex<HashSet<String>>,
}

impl Owners {
    pub fn new(source: impl OwnerSource) -> Self {
        Owners {
            source: Box::new(source),
            cache: TtlMap::new(TTL, MAX_BYTES),
            missing: TtlMap::new(NEGATIVE_TTL, MAX_MISSING_BYTES),
            in_flight: SingleFlight::default(),
            forbidden_logged: Mutex::default(),
        }
    }

    /// Whether the owner named by `query` exists with `uid`. A refused lookup is an answer (the
    /// path it was on is dropped), never an error that would deny the object.
    pub async fn verified(&self, query: OwnerQuery<'_>, uid: &str) -> Result<Verified, Error> {
        self.verified_prefetching(query, uid, None).await
    }

    /// As `verified`; when `query` has to be looked up, `alongside` (the owner its object is
    /// expected to name) is fetched at the same time, so that the next hop finds it cached: a new
    /// ReplicaSet's first Pod waits for one round trip instead of two. Only a prefetch: an owner
    /// is believed when a verified object names it with its UID, as before.
    pub async fn verified_prefetching(
        &self,
        query: OwnerQuery<'_>,
        uid: &str,
        alongside: Option<OwnerQuery<'_>>,
    ) -> Result<Verified, Error> {
        let key = key(&query);
        if let Some(known) = self.remembered(&key, uid) {
            metrics::cache_hit();
            return Ok(known);
        }
        let lookup = self.in_flight.run(&key, async {
            match self.remembered(&key, uid) {
                Some(known) => {
                    metrics::cache_hit();
                    Ok(known)
                }
                None => self.look_up(query, &key, uid).await,
            }
        });
        match alongside {
            Some(next) => tokio::join!(lookup, self.prefetch(next)).0,
            None => lookup.await,
        }
    }

    /// Forgets what is cached of `query`'s object, so the next lookup reads it again.
    pub fn forget(&self, query: OwnerQuery<'_>) {
        self.cache.remove(&key(&query));
    }

    /// The cached answer: the owner if it was found with this UID, or that it was not found.
    fn remembered(&self, key: &str, uid: &str) -> Option<Verified> {
        if let Some(meta) = self.cache.get(key)
            && meta.uid == uid
        {
            return Some(Verified::Owner(meta));
        }
        self.missing.get(key).or_else(|| self.missing.get(&mismatch_key(key, uid))).map(|()| Verified::NotFound)
    }

    fn known(&self, key: &str) -> bool {
        self.cache.get(key).is_some() || self.missing.get(key).is_some()
    }

    /// Caches `query`'s owner if it exists and is not known yet. Only what was found is kept: a
    /// guess that finds nothing must not hide an owner created a moment later (the lookup that
    /// needs it asks again), and a failure is left to that lookup too.
    async fn prefetch(&self, query: OwnerQuery<'_>) {
        let key = key(&query);
        if self.known(&key) {
            return;
        }
        self.in_flight
            .run(&key, async {
                if !self.known(&key) {
                    let _ = self.fetch(query, &key, None).await;
                }
            })
            .await
    }

    async fn look_up(&self, query: OwnerQuery<'_>, key: &str, uid: &str) -> Result<Verified, Error> {
        match self.fetch(query, key, Some(uid)).await {
            Ok(Some(meta)) if meta.uid == uid => Ok(Verified::Owner(meta)),
            Ok(Some(_)) => {
                // Read from etcd: no object with that UID can appear under the name later.
                self.missing.insert(mismatch_key(key, uid), ());
                Ok(Verified::NotFound)
            }
            Ok(None) => {
                // Only a lookup remembers that nothing was found, briefly.
                self.missing.insert(key.to_string(), ());
                Ok(Verified::NotFound)
            }
            Err(kube::Error::Api(status)) if status.code == 403 => Ok(self.forbidden(query)),
            Err(e) => Err(Error::OwnerLookup(e)),
        }
    }

    /// One GET from the API server's cache, and one from etcd when the cache does not have the
    /// owner with `uid`; without a `uid` (a prefetch's guess) what the cache has. What it found is
    /// cached.
    async fn fetch(
        &self,
        query: OwnerQuery<'_>,
        key: &str,
        uid: Option<&str>,
    ) -> Result<Option<Arc<OwnerMeta>>, kube::Error> {
        metrics::cache_miss();
        let mut found = self.source.get(query, Read::Cached).await?;
        if let Some(uid) = uid
            && found.as_ref().is_none_or(|meta| meta.uid != uid)
        {
            metrics::owner_read_from_etcd();
            found = self.source.get(query, Read::Latest).await?;
        }
        let found = found.map(Arc::new);
        if let Some(meta) = &found {
            self.cache.insert(key.to_string(), meta.clone());
        }
        Ok(found)
    }

    fn forbidden(&self, query: OwnerQuery<'_>) -> Verified {
        let group = query.api_version.split_once('/').map_or("", |(group, _)| group);
        let resource = if group.is_empty() { query.plural.to_string() } else { format!("{}.{group}", query.plural) };
        metrics::owner_lookup_forbidden(&resource);
        if self.forbidden_logged.lock().expect("forbidden set").insert(resource.clone()) {
            warn!(
                %resource,
                "may not get {resource}: paths through such owners are dropped; grant `get` on it (chart value \
                 operandOwnerRules, or a ClusterRole labelled pullsecret-injector.io/aggregate-to-operand-owners)"
            );
        }
        Verified::Forbidden { resource }
    }
}
