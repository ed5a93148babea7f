//! Managed copies of a catalog's pull secrets in tenant namespaces.
//!
//! A copy carries the source's `type` and `data` only, our managed-by label and the source,
//! source-uid and content-hash annotations. It never overwrites a secret that is not ours: the
//! update is a JSON patch whose `test` operations fail unless the secret is our copy of the same
//! source, so the webhook needs no read access to tenant secrets. Concurrent admissions of one
//! namespace wait for a single create; `AlreadyExists` (another replica) is success.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::events::Events;
use crate::patch::escape_pointer;
use crate::{CONTENT_HASH_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_ANNOTATION, SOURCE_UID_ANNOTATION};

/// Only these secret types are ever copied: a pull secret is all a tenant gets.
pub const PULL_SECRET_TYPES: [&str; 2] = ["kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"];

/// An ensured copy is trusted from memory this long before it is checked again.
const ENSURED_TTL: Duration = Duration::from_secs(300);

/// The name a copy takes when the tenant already owns a secret of the source's name:
/// `<name>-<10 hex of sha256("<srcns>/<srcname>")>`, the same on every replica.
pub fn fallback_name(source_namespace: &str, source_name: &str) -> String {
    let digest = Sha256::digest(format!("{source_namespace}/{source_name}"));
    let suffix = &hex::encode(digest)[..10];
    // Secret names are at most 253 characters.
    let keep = source_name.len().min(253 - 11);
    format!("{}-{suffix}", &source_name[..keep])
}

/// A digest of what a copy must contain: its type and data.
pub fn content_hash(secret: &Secret) -> String {
    let mut hash = Sha256::new();
    hash.update(secret.type_.as_deref().unwrap_or("").as_bytes());
    for (key, value) in secret.data.iter().flatten() {
        hash.update([0]);
        hash.update(key.as_bytes());
        hash.update([0]);
        hash.update(&value.0);
    }
    hex::encode(hash.finalize())
}

/// Why a source secret is not handed out.
pub fn unusable(secret: Option<&Secret>) -> Option<&'static str> {
    match secret {
        None => Some("does not exist"),
        Some(s) if !PULL_SECRET_TYPES.contains(&s.type_.as_deref().unwrap_or("")) => {
            Some("is not a pull secret (type must be kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg)")
        }
        Some(_) => None,
    }
}

pub struct Copies {
    client: kube::Client,
    events: Events,
    /// `<tenant ns>/<source ns>/<source name>` → (copy name, content hash, when ensured).
    ensured: Mutex<HashMap<String, (String, String, Instant)>>,
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub enum Ensured {
    Created(String),
    Updated(String),
    Unchanged(String),
}

impl Ensured {
    pub fn name(&self) -> &str {
        match self {
            Ensured::Created(n) | Ensured::Updated(n) | Ensured::Unchanged(n) => n,
        }
    }
}

impl Copies {
    pub fn new(client: kube::Client, events: Events) -> Self {
        Copies { client, events, ensured: Mutex::new(HashMap::new()), in_flight: Mutex::new(HashMap::new()) }
    }

    /// Makes sure `namespace` has our copy of `source`, and returns its name. With `dry_run`
    /// the API server validates every write and persists none.
    pub async fn ensure(&self, namespace: &str, source: &Secret, dry_run: bool) -> Result<Ensured, Error> {
        let source_ns = source.metadata.namespace.as_deref().unwrap_or_default();
        let source_name = source.metadata.name.as_deref().unwrap_or_default();
        let hash = content_hash(source);
        let key = format!("{namespace}/{source_ns}/{source_name}");
        if let Some(name) = self.remembered(&key, &hash) {
            return Ok(Ensured::Unchanged(name));
        }

        // One create per copy however many admissions arrive at once.
        let gate = self.in_flight.lock().expect("in-flight map").entry(key.clone()).or_default().clone();
        let _held = gate.lock().await;
        if let Some(name) = self.remembered(&key, &hash) {
            return Ok(Ensured::Unchanged(name));
        }

        let result = self.ensure_either_name(namespace, source, &hash, dry_run).await;
        if let Ok(ensured) = &result
            && !dry_run
        {
            let entry = (ensured.name().to_string(), hash, Instant::now());
            self.ensured.lock().expect("ensured map").insert(key.clone(), entry);
        }
        self.in_flight.lock().expect("in-flight map").remove(&key);
        result
    }

    /// The source's own name, else the hashed fallback name.
    async fn ensure_either_name(
        &self,
        namespace: &str,
        source: &Secret,
        hash: &str,
        dry_run: bool,
    ) -> Result<Ensured, Error> {
        let source_ns = source.metadata.namespace.as_deref().unwrap_or_default();
        let source_name = source.metadata.name.as_deref().unwrap_or_default();
        if let Some(ensured) = self.ensure_named(namespace, source_name, source, hash, dry_run).await? {
            return Ok(ensured);
        }
        let fallback = fallback_name(source_ns, source_name);
        self.ensure_named(namespace, &fallback, source, hash, dry_run).await?.ok_or_else(|| Error::CopyNameTaken {
            namespace: namespace.to_string(),
            source_secret: format!("{source_ns}/{source_name}"),
        })
    }

    fn remembered(&self, key: &str, hash: &str) -> Option<String> {
        let ensured = self.ensured.lock().expect("ensured map");
        let (name, known_hash, at) = ensured.get(key)?;
        (known_hash == hash && at.elapsed() < ENSURED_TTL).then(|| name.clone())
    }

    /// Creates or updates our copy under `name`; `None` when a secret that is not our copy of
    /// this source holds the name.
    async fn ensure_named(
        &self,
        namespace: &str,
        name: &str,
        source: &Secret,
        hash: &str,
        dry_run: bool,
    ) -> Result<Option<Ensured>, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let copy = build_copy(namespace, name, source, hash);
        match api.create(&PostParams { dry_run, field_manager: Some(crate::FIELD_MANAGER.into()) }, &copy).await {
            Ok(created) => {
                crate::metrics::copy_created();
                if !dry_run {
                    let uid = created.metadata.uid.as_deref();
                    self.events.normal(
                        crate::events::reference("Secret", namespace, name, uid),
                        crate::events::COPIED,
                        format!("copied pull secret {} into this namespace", source_ref(source)),
                    );
                }
                return Ok(Some(Ensured::Created(name.to_string())));
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(Error::Copy(e)),
        }

        // The name exists: update it only if it is our copy of the same source.
        Ok(self.update(namespace, name, source, hash, dry_run).await?.then(|| Ensured::Updated(name.to_string())))
    }

    /// Brings our copy `name` of `source` in `namespace` to the source's content; `false` when the
    /// secret is not our copy of this source or has another type (a failed `test`): it is then
    /// left untouched.
    pub async fn update(
        &self,
        namespace: &str,
        name: &str,
        source: &Secret,
        hash: &str,
        dry_run: bool,
    ) -> Result<bool, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let source_ref = source_ref(source);
        let patch = json!([
            { "op": "test", "path": format!("/metadata/labels/{}", escape_pointer(MANAGED_BY_LABEL)), "value": MANAGED_BY_VALUE },
            { "op": "test", "path": format!("/metadata/annotations/{}", escape_pointer(SOURCE_ANNOTATION)), "value": source_ref },
            { "op": "add", "path": format!("/metadata/annotations/{}", escape_pointer(CONTENT_HASH_ANNOTATION)), "value": hash },
            { "op": "add", "path": format!("/metadata/annotations/{}", escape_pointer(SOURCE_UID_ANNOTATION)), "value": source.metadata.uid.as_deref().unwrap_or_default() },
            // A Secret's type is immutable: a copy of another type is replaced, not patched.
            { "op": "test", "path": "/type", "value": source.type_ },
            { "op": "add", "path": "/data", "value": source.data },
        ]);
        let patch: json_patch::Patch = serde_json::from_value(patch).expect("a valid JSON patch");
        let params = PatchParams { dry_run, field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() };
        match api.patch(name, &params, &Patch::<()>::Json(patch)).await {
            Ok(_) => {
                crate::metrics::copy_updated();
                Ok(true)
            }
            // A failed `test`: the secret is the tenant's own (or another source's copy).
            Err(kube::Error::Api(status))
                if status.code == 422
                    || status.code == 409
                    || status.code == 500 && status.message.contains("test") =>
            {
                crate::metrics::copy_conflict();
                Ok(false)
            }
            Err(e) => Err(Error::Copy(e)),
        }
    }

    /// Deletes our copy, only in the version that was read (uid and resourceVersion
    /// preconditions): a copy changed in between is looked at again on the next pass.
    pub async fn delete(&self, namespace: &str, name: &str, uid: &str, resource_version: &str) -> Result<(), Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(uid.to_string()),
                resource_version: Some(resource_version.to_string()),
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                crate::metrics::copy_deleted();
                self.ensured
                    .lock()
                    .expect("ensured map")
                    .retain(|key, (copy, _, _)| !(copy == name && key.split('/').next() == Some(namespace)));
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(Error::Copy(e)),
        }
    }
}

/// `<namespace>/<name>` of a source secret: the value of the source annotation on its copies.
fn source_ref(source: &Secret) -> String {
    format!(
        "{}/{}",
        source.metadata.namespace.as_deref().unwrap_or_default(),
        source.metadata.name.as_deref().unwrap_or_default()
    )
}

fn build_copy(namespace: &str, name: &str, source: &Secret, hash: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())])),
            annotations: Some(BTreeMap::from([
                (SOURCE_ANNOTATION.to_string(), source_ref(source)),
                (SOURCE_UID_ANNOTATION.to_string(), source.metadata.uid.clone().unwrap_or_default()),
                (CONTENT_HASH_ANNOTATION.to_string(), hash.to_string()),
            ])),
            ..Default::default()
        },
        type_: source.type_.clone(),
        data: source.data.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(type_: &str, data: &[u8]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                namespace: Some("m".into()),
                name: Some("creds".into()),
                ..Default::default()
            },
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(".dockerconfigjson".to_string(), ByteString(data.to_vec()))])),
            ..Default::default()
        }
    }

    #[test]
    fn fallback_name_is_stable_and_distinct_per_source() {
        let a = fallback_name("openshift-marketplace", "creds");
        assert_eq!(a, fallback_name("openshift-marketplace", "creds"));
        assert!(a.starts_with("creds-") && a.len() == "creds-".len() + 10);
        assert_ne!(a, fallback_name("other", "creds"));
        assert!(fallback_name("m", &"x".repeat(300)).len() <= 253);
    }

    #[test]
    fn content_hash_follows_type_and_data() {
        let base = content_hash(&secret("kubernetes.io/dockerconfigjson", b"{}"));
        assert_eq!(base, content_hash(&secret("kubernetes.io/dockerconfigjson", b"{}")));
        assert_ne!(base, content_hash(&secret("kubernetes.io/dockerconfigjson", b"{\"auths\":{}}")));
        assert_ne!(base, content_hash(&secret("kubernetes.io/dockercfg", b"{}")));
    }

    #[test]
    fn only_existing_pull_secrets_are_usable() {
        assert!(unusable(None).is_some());
        assert!(unusable(Some(&secret("Opaque", b"x"))).is_some());
        assert!(unusable(Some(&secret("kubernetes.io/dockercfg", b"x"))).is_none());
    }

    #[test]
    fn the_copy_has_type_data_label_and_annotations_only() {
        let mut source = secret("kubernetes.io/dockerconfigjson", b"{}");
        source.metadata.labels = Some(BTreeMap::from([("team".to_string(), "x".to_string())]));
        source.metadata.uid = Some("src-uid".into());
        let copy = build_copy("tenant", "creds", &source, "h");
        assert_eq!(copy.metadata.namespace.as_deref(), Some("tenant"));
        assert_eq!(copy.metadata.labels.unwrap().len(), 1);
        let annotations = copy.metadata.annotations.unwrap();
        assert_eq!(annotations[SOURCE_ANNOTATION], "m/creds");
        assert_eq!(annotations[SOURCE_UID_ANNOTATION], "src-uid");
        assert_eq!(copy.data, source.data);
        assert_eq!(copy.type_, source.type_);
    }
}
