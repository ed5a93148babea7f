//! Owner lookups for the trusted chain. An ownerReference is only believed when the object it
//! names exists with the same UID. Answers are cached (keyed by the UID they were verified
//! against), so a warm admission makes no API call; a freshly created owner that is not yet known
//! costs one metadata-only GET.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};

use crate::error::Error;

/// What the chain needs of an owner: its identity and its own owners.
#[derive(Debug)]
pub struct OwnerMeta {
    pub uid: String,
    pub owner_references: Vec<OwnerRef>,
}

#[derive(Debug, Clone)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl From<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> for OwnerRef {
    fn from(r: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference) -> Self {
        OwnerRef { api_version: r.api_version, kind: r.kind, name: r.name, uid: r.uid }
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

/// Entries are re-verified after this long, so a changed ownerReference on an owner is seen.
const TTL: Duration = Duration::from_secs(300);
const MAX_ENTRIES: usize = 100_000;

pub struct Owners {
    client: kube::Client,
    cache: Mutex<HashMap<String, (Instant, Arc<OwnerMeta>)>>,
}

impl Owners {
    pub fn new(client: kube::Client) -> Self {
        Owners { client, cache: Mutex::new(HashMap::new()) }
    }

    /// The owner if it exists with `uid`; `None` when it does not (a forged or stale reference).
    pub async fn verified(
        &self,
        api_version: &str,
        kind: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<Arc<OwnerMeta>>, Error> {
        let key = format!("{api_version}/{kind}/{namespace}/{name}");
        if let Some((at, meta)) = self.cache.lock().expect("owner cache").get(&key)
            && at.elapsed() < TTL
            && meta.uid == uid
        {
            crate::metrics::cache_hit();
            return Ok(Some(meta.clone()));
        }
        crate::metrics::cache_miss();

        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &resource);
        let Some(found) = api.get_metadata_opt(name).await.map_err(Error::OwnerLookup)? else {
            return Ok(None);
        };
        let meta = Arc::new(OwnerMeta {
            uid: found.metadata.uid.unwrap_or_default(),
            owner_references: found
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .map(OwnerRef::from)
                .collect(),
        });
        let mut cache = self.cache.lock().expect("owner cache");
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < TTL);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), meta.clone()));
        Ok((meta.uid == uid).then_some(meta))
    }
}
