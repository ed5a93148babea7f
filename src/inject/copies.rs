//! Managed copies of a catalog's pull secrets in tenant namespaces.
//!
//! A copy carries the source's `type` and `data` only, our managed-by label and the source,
//! source-uid and content-hash annotations. It never overwrites a secret that is not ours: the
//! update is a JSON patch whose `test` operations fail unless the secret is our copy of the same
//! source, so the webhook needs no read access to tenant secrets. Concurrent admissions of one
//! namespace wait for a single create; `AlreadyExists` (another replica) is success.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::inject::ledger::{Ledger, NewEntry, PullSecretCopy};
use crate::inject::patch::{add, pointer, test};
use crate::resolve::{Need, Provision};
use crate::state::events::Events;
use crate::state::single_flight::SingleFlight;
use crate::state::ttl::{TtlMap, Weigh};
use crate::{CONTENT_HASH_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_ANNOTATION, SOURCE_UID_ANNOTATION};

/// An ensured copy is trusted from memory this long before it is checked again.
const ENSURED_TTL: Duration = Duration::from_secs(300);
/// Bytes of ensured copies remembered (about 40,000 copies).
const MAX_ENSURED_BYTES: usize = 8 * 1024 * 1024;

/// The name a copy takes when the tenant already owns a secret of the source's name:
/// `<name>-<10 hex of sha256("<srcns>/<srcname>")>`, the same on every replica.
pub fn fallback_name(source_namespace: &str, source_name: &str) -> String {
    let digest = Sha256::digest(format!("{source_namespace}/{source_name}"));
    let suffix = &hex::encode(digest)[..10];
    // Secret names are at most 253 characters.
    let keep = source_name.len().min(253 - 11);
    format!("{}-{suffix}", &source_name[..keep])
}

/// What a copy's content-hash annotation records: which version of its source it holds. It is
/// derived from the source's UID and resourceVersion, never from the credential, so the
/// annotation (readable in every tenant namespace) cannot confirm a guessed credential. Every
/// change of the source's content changes its resourceVersion.
pub fn content_hash(source: &Secret) -> String {
    let mut hash = Sha256::new();
    hash.update(b"source-version\0");
    hash.update(source.metadata.uid.as_deref().unwrap_or("").as_bytes());
    hash.update([0]);
    hash.update(source.metadata.resource_version.as_deref().unwrap_or("").as_bytes());
    hex::encode(hash.finalize())
}

/// The names of our copies of one source among the ledger entries of one namespace (the tenant
/// may hold the source's own name, so it is not always that).
pub fn copies_of<'c>(
    copies_here: &'c [Arc<PullSecretCopy>],
    source_ref: &'c str,
) -> impl Iterator<Item = &'c str> + 'c {
    copies_here.iter().filter(move |entry| entry.spec.source == source_ref).map(|entry| entry.spec.name.as_str())
}

pub struct Copies {
    client: kube::Client,
    events: Events,
    ledger: Ledger,
    /// `<tenant ns>/<source ns>/<source name>` → the copy made from which content.
    ensured: TtlMap<String, EnsuredCopy>,
    /// One create per copy however many admissions arrive at once.
    in_flight: SingleFlight,
}

/// A copy known to hold a source's content.
#[derive(Clone)]
struct EnsuredCopy {
    namespace: String,
    name: String,
    content_hash: String,
}

impl Weigh for EnsuredCopy {
    fn weigh(&self) -> usize {
        self.namespace.weigh() + self.name.weigh() + self.content_hash.weigh()
    }
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
        let ensured = TtlMap::new(ENSURED_TTL, MAX_ENSURED_BYTES);
        let ledger = Ledger::new(client.clone());
        Copies { client, events, ledger, ensured, in_flight: SingleFlight::default() }
    }

    /// The names to list in `imagePullSecrets` of an object in `namespace`: originals as they
    /// are, copies once ensured; unusable sources are left out.
    pub async fn ensure_all(&self, namespace: &str, needs: &[Need], dry_run: bool) -> Result<Vec<String>, Error> {
        let mut names = Vec::with_capacity(needs.len());
        for need in needs {
            match &need.provision {
                Provision::Original => names.push(need.source_name.clone()),
                Provision::Copy(source) => {
                    names.push(self.ensure(namespace, source, dry_run).await?.name().to_string())
                }
                Provision::Unusable(_) => {}
            }
        }
        Ok(names)
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

        self.in_flight
            .run(&key, async {
                if let Some(name) = self.remembered(&key, &hash) {
                    return Ok(Ensured::Unchanged(name));
                }
                let result = self.ensure_either_name(namespace, source, &hash, dry_run).await;
                if let Ok(ensured) = &result
                    && !dry_run
                {
                    let name = ensured.name().to_string();
                    let entry = EnsuredCopy { namespace: namespace.to_string(), name, content_hash: hash.clone() };
                    self.ensured.insert(key.clone(), entry);
                }
                result
            })
            .await
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
        self.ensured.get(key).filter(|copy| copy.content_hash == hash).map(|copy| copy.name)
    }

    /// Creates or updates our copy under `name`; `None` when a secret that is not our copy of
    /// this source holds the name.
    ///
    /// A new copy and its ledger entry are created at once, one round trip for the Pod that
    /// waits on them: the entry is created, never overwritten, and is taken back if the copy is
    /// not made. An entry that exists before its copy is safe from the reconciler: it removes the
    /// entry of an unwanted copy only after the grace period, and makes the missing copy of an
    /// entry still needed.
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
        let params = PostParams { dry_run, field_manager: Some(crate::FIELD_MANAGER.into()) };
        let create = api.create(&params, &copy);
        let (created, entry) = if dry_run {
            (create.await, Ok(None))
        } else {
            tokio::join!(create, self.ledger.create(namespace, name, source, hash))
        };
        match created {
            Ok(created) => {
                crate::telemetry::metrics::copy_created();
                if !dry_run {
                    // An entry was there already (its copy had gone), or the create failed.
                    if !matches!(entry, Ok(Some(_))) {
                        self.ledger.record(namespace, name, source, hash).await?;
                    }
                    let uid = created.metadata.uid.as_deref();
                    self.events.normal(
                        crate::state::events::reference("Secret", namespace, name, uid),
                        crate::state::events::COPIED,
                        format!("copied pull secret {} into this namespace", source_ref(source)),
                    );
                }
                return Ok(Some(Ensured::Created(name.to_string())));
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => {
                self.withdraw(namespace, name, entry).await;
                return Err(Error::Copy { source_secret: source_ref(source), error });
            }
        }

        // The name exists: update it only if it is our copy of the same source.
        let updated = self.update(namespace, name, source, hash, dry_run).await;
        if !matches!(updated, Ok(true)) {
            self.withdraw(namespace, name, entry).await;
        }
        Ok(updated?.then(|| Ensured::Updated(name.to_string())))
    }

    /// Takes back the entry made for a copy that was not made. One left behind (this delete
    /// failed) is harmless: the reconciler's check of it removes it when the name is not our
    /// copy, and makes the copy when it is missing and still needed.
    async fn withdraw(&self, namespace: &str, name: &str, entry: Result<Option<NewEntry>, Error>) {
        if let Ok(Some(entry)) = entry
            && let Err(error) = self.ledger.withdraw(namespace, name, entry).await
        {
            tracing::warn!(%namespace, %name, %error, "could not take back the ledger entry of a copy not made");
        }
    }

    /// Brings our copy `name` of `source` in `namespace` to the source's content (and records it
    /// in the ledger); `false` when the secret is not our copy of this source or has another type
    /// (a failed `test`): it is then left untouched.
    pub async fn update(
        &self,
        namespace: &str,
        name: &str,
        source: &Secret,
        hash: &str,
        dry_run: bool,
    ) -> Result<bool, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let annotation = |name| pointer(["metadata", "annotations", name]);
        let patch = json_patch::Patch(vec![
            test(pointer(["metadata", "labels", MANAGED_BY_LABEL]), json!(MANAGED_BY_VALUE)),
            test(annotation(SOURCE_ANNOTATION), json!(source_ref(source))),
            add(annotation(CONTENT_HASH_ANNOTATION), json!(hash)),
            add(annotation(SOURCE_UID_ANNOTATION), json!(source.metadata.uid.as_deref().unwrap_or_default())),
            // A Secret's type is immutable: a copy of another type is replaced, not patched.
            test(pointer(["type"]), json!(source.type_)),
            add(pointer(["data"]), json!(source.data)),
        ]);
        let params = PatchParams { dry_run, field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() };
        match api.patch(name, &params, &Patch::<()>::Json(patch)).await {
            Ok(_) => {
                crate::telemetry::metrics::copy_updated();
                if !dry_run {
                    self.ledger.record(namespace, name, source, hash).await?;
                }
                Ok(true)
            }
            // A failed `test`: the secret is the tenant's own (or another source's copy).
            Err(kube::Error::Api(status))
                if status.code == 422
                    || status.code == 409
                    || status.code == 500 && status.message.contains("test") =>
            {
                crate::telemetry::metrics::copy_conflict();
                Ok(false)
            }
            Err(error) => Err(Error::Copy { source_secret: source_ref(source), error }),
        }
    }

    /// Forgets that a copy was ensured once the cluster says otherwise: it was deleted, or holds
    /// another version than the one remembered. `None` for `content_hash` forgets it whatever it
    /// holds. True when something was forgotten (remembered decisions that list it are stale).
    pub fn forget(&self, namespace: &str, name: &str, content_hash: Option<&str>) -> bool {
        let mut forgot = false;
        self.ensured.retain(|_, copy| {
            let stale = copy.name == name
                && copy.namespace == namespace
                && content_hash.is_none_or(|hash| hash != copy.content_hash);
            forgot |= stale;
            !stale
        });
        forgot
    }

    /// Forgets every ensured copy (the watch of our copies lists them anew after a gap).
    pub fn forget_all(&self) {
        self.ensured.retain(|_, _| false);
    }

    /// Whether `namespace/name` is our copy of `source_ref`, asked without reading any Secret: a
    /// JSON patch made of `test` operations only, which changes nothing and answers with the
    /// object only when every test holds.
    pub async fn probe(&self, namespace: &str, name: &str, source_ref: &str) -> Result<Probe, Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let patch = json_patch::Patch(vec![
            test(pointer(["metadata", "labels", MANAGED_BY_LABEL]), json!(MANAGED_BY_VALUE)),
            test(pointer(["metadata", "annotations", SOURCE_ANNOTATION]), json!(source_ref)),
        ]);
        let params = PatchParams { field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() };
        match api.patch(name, &params, &Patch::<()>::Json(patch)).await {
            Ok(copy) => Ok(Probe::Ours {
                uid: copy.metadata.uid.unwrap_or_default(),
                resource_version: copy.metadata.resource_version.unwrap_or_default(),
                data: copy.data,
            }),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Probe::Missing),
            Err(kube::Error::Api(status))
                if status.code == 422
                    || status.code == 409
                    || status.code == 500 && status.message.contains("test") =>
            {
                Ok(Probe::NotOurs)
            }
            Err(error) => Err(Error::CopyDelete { namespace: namespace.into(), name: name.into(), error }),
        }
    }

    /// Deletes our copy `namespace/name` of `source_ref` and its ledger entry. The delete carries
    /// the UID and resourceVersion the probe just saw: a Secret that is not our copy, or changed
    /// in between, is never deleted (its entry goes when it is not ours).
    pub async fn delete(&self, namespace: &str, name: &str, source_ref: &str) -> Result<(), Error> {
        let (uid, resource_version) = match self.probe(namespace, name, source_ref).await? {
            Probe::Ours { uid, resource_version, .. } => (uid, resource_version),
            Probe::Missing | Probe::NotOurs => return self.ledger.remove(namespace, name).await,
        };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: Some(uid), resource_version: Some(resource_version) }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                crate::telemetry::metrics::copy_deleted();
                self.ensured.retain(|_, copy| !(copy.name == name && copy.namespace == namespace));
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(Error::CopyDelete { namespace: namespace.into(), name: name.into(), error }),
        }
        self.ledger.remove(namespace, name).await
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

/// What a probe found under a copy's name.
pub enum Probe {
    Ours { uid: String, resource_version: String, data: Option<BTreeMap<String, k8s_openapi::ByteString>> },
    Missing,
    NotOurs,
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
    fn content_hash_follows_the_source_version_and_not_the_credential() {
        let versioned = |uid: &str, version: &str, data: &[u8]| {
            let mut s = secret("kubernetes.io/dockerconfigjson", data);
            s.metadata.uid = Some(uid.into());
            s.metadata.resource_version = Some(version.into());
            content_hash(&s)
        };
        let base = versioned("u", "1", b"{}");
        assert_eq!(base, versioned("u", "1", b"{}"));
        assert_ne!(base, versioned("u", "2", b"{}"), "a new version of the source");
        assert_ne!(base, versioned("other", "1", b"{}"), "another source of the same name");
        assert_eq!(base, versioned("u", "1", b"guess"), "the credential is not hashed");
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
