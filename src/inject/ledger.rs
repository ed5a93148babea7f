//! The ledger of copies: one cluster-scoped `PullSecretCopy` per copy we made, so that no identity
//! of ours has to list or watch Secrets outside the catalog namespaces to find its copies. An
//! entry records where the copy is, which source it holds and at which version; it survives
//! restarts and outlives its catalog, so clean-up finds copies of a catalog since deleted.
//!
//! What a tenant does to a copy reaches the ledger through admission: the webhook is called for
//! UPDATE and DELETE of Secrets labelled as ours, and marks the entry ([`Observed`]); every
//! replica watches the ledger and the reconciler acts on the mark.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions};
use kube::core::ApiResource;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::inject::patch::{pointer, remove, test};

/// On an entry: what was observed of the copy since it was last written (an [`Observed`]).
pub const OBSERVED_ANNOTATION: &str = "pullsecret-injector.io/observed";

/// `PullSecretCopy`: one copy in a tenant namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct PullSecretCopy {
    pub metadata: ObjectMeta,
    pub spec: CopySpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CopySpec {
    /// Where the copy is.
    pub namespace: String,
    pub name: String,
    /// `<namespace>/<name>` of the source secret.
    pub source: String,
    #[serde(rename = "sourceUID")]
    pub source_uid: String,
    /// Which version of the source the copy was last written from (see `copies::content_hash`).
    pub content_hash: String,
}

project_resource!(PullSecretCopy, "PullSecretCopy", "pullsecretcopies");

/// What admission saw happen to a copy, by someone other than a write that keeps it true.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// Deleted: made again while it is still needed.
    Deleted,
    /// Its data or type changed: restored from the source.
    Altered,
    /// Our label or source annotation was taken off: the Secret is the tenant's now, and is left
    /// alone (the next copy takes the hashed name).
    Released,
}

impl Observed {
    pub fn as_str(self) -> &'static str {
        match self {
            Observed::Deleted => "deleted",
            Observed::Altered => "altered",
            Observed::Released => "released",
        }
    }

    pub fn of(entry: &PullSecretCopy) -> Option<Observed> {
        match entry.annotations().get(OBSERVED_ANNOTATION).map(String::as_str) {
            Some("deleted") => Some(Observed::Deleted),
            Some("altered") => Some(Observed::Altered),
            Some("released") => Some(Observed::Released),
            _ => None,
        }
    }
}

/// The entry's name: a digest of where the copy is, the same on every replica.
pub fn entry_name(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}"));
    format!("copy-{}", &hex::encode(digest)[..40])
}

/// The entry a [`Ledger::create`] made, as it was made: withdrawn only if nobody changed it since.
pub struct NewEntry {
    uid: String,
    resource_version: String,
}

#[derive(Clone)]
pub struct Ledger {
    api: Api<PullSecretCopy>,
    /// The same resource, for writes of a body built as JSON.
    entries: Api<DynamicObject>,
}

impl Ledger {
    pub fn new(client: kube::Client) -> Self {
        let entries = Api::all_with(client.clone(), &ApiResource::erase::<PullSecretCopy>(&()));
        Ledger { api: Api::all(client), entries }
    }

    /// Records that `namespace/name` is our copy of `source` at version `content_hash`, and
    /// clears any observation (server-side apply: creates or updates in one call).
    pub async fn record(&self, namespace: &str, name: &str, source: &Secret, content_hash: &str) -> Result<(), Error> {
        let entry = entry(namespace, name, source, content_hash);
        let params = PatchParams::apply(crate::FIELD_MANAGER).force();
        let applied = self.api.patch(&entry_name(namespace, name), &params, &Patch::Apply(&entry)).await;
        let applied = applied.map_err(Error::Ledger)?;
        // The copy is true again: what was observed of it is dealt with.
        match Observed::of(&applied) {
            Some(seen) => self.unmark(namespace, name, seen).await,
            None => Ok(()),
        }
    }

    /// Records a copy about to be made, at the same time as it is made: a create, so an entry
    /// already there (of a copy another source may hold under this name) is never overwritten.
    /// `None` when there is one; the caller records the copy with [`Ledger::record`] once it
    /// knows the copy is ours.
    pub async fn create(
        &self,
        namespace: &str,
        name: &str,
        source: &Secret,
        content_hash: &str,
    ) -> Result<Option<NewEntry>, Error> {
        let entry = entry(namespace, name, source, content_hash);
        let params = PostParams { dry_run: false, field_manager: Some(crate::FIELD_MANAGER.into()) };
        match self.entries.create(&params, &entry).await {
            Ok(created) => Ok(Some(NewEntry {
                uid: created.metadata.uid.unwrap_or_default(),
                resource_version: created.metadata.resource_version.unwrap_or_default(),
            })),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(error) => Err(Error::Ledger(error)),
        }
    }

    /// Takes back an entry [`Ledger::create`] made for a copy that was not made after all, unless
    /// it was written since (another replica recorded its own copy under the name meanwhile).
    pub async fn withdraw(&self, namespace: &str, name: &str, entry: NewEntry) -> Result<(), Error> {
        let params = DeleteParams {
            preconditions: Some(Preconditions { uid: Some(entry.uid), resource_version: Some(entry.resource_version) }),
            ..Default::default()
        };
        match self.api.delete(&entry_name(namespace, name), &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(error) => Err(Error::Ledger(error)),
        }
    }

    /// Marks the entry of `namespace/name` (if there is one) with what was observed.
    pub async fn mark(&self, namespace: &str, name: &str, observed: Observed) -> Result<(), Error> {
        let patch = json!({ "metadata": { "annotations": { OBSERVED_ANNOTATION: observed.as_str() } } });
        self.patch(namespace, name, &Patch::Merge(&patch)).await
    }

    /// Takes the observation `handled` off the entry, and only that one: a newer observation
    /// (the tenant changed the copy again meanwhile) stays for the next pass.
    pub async fn unmark(&self, namespace: &str, name: &str, handled: Observed) -> Result<(), Error> {
        let path = || pointer(["metadata", "annotations", OBSERVED_ANNOTATION]);
        let patch = json_patch::Patch(vec![test(path(), json!(handled.as_str())), remove(path())]);
        self.patch(namespace, name, &Patch::<()>::Json(patch)).await
    }

    /// Patches the entry; gone, or a failed `test` (changed meanwhile), is no error.
    async fn patch<P: serde::Serialize + std::fmt::Debug>(
        &self,
        namespace: &str,
        name: &str,
        patch: &Patch<P>,
    ) -> Result<(), Error> {
        let params = PatchParams { field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() };
        match self.api.patch(&entry_name(namespace, name), &params, patch).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status))
                if status.code == 404
                    || status.code == 422
                    || status.code == 500 && status.message.contains("test") =>
            {
                Ok(())
            }
            Err(error) => Err(Error::Ledger(error)),
        }
    }

    /// Forgets a copy that is gone or no longer ours.
    pub async fn remove(&self, namespace: &str, name: &str) -> Result<(), Error> {
        match self.api.delete(&entry_name(namespace, name), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(error) => Err(Error::Ledger(error)),
        }
    }
}

/// The whole entry of our copy `namespace/name` of `source` at version `content_hash`, as it is
/// created or applied.
fn entry(namespace: &str, name: &str, source: &Secret, content_hash: &str) -> DynamicObject {
    let spec = CopySpec {
        namespace: namespace.to_string(),
        name: name.to_string(),
        source: format!("{}/{}", source.namespace().unwrap_or_default(), source.name_any()),
        source_uid: source.uid().unwrap_or_default(),
        content_hash: content_hash.to_string(),
    };
    DynamicObject::new(&entry_name(namespace, name), &ApiResource::erase::<PullSecretCopy>(&()))
        .data(json!({ "spec": spec }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_valid_object_names_and_distinct_per_copy() {
        let a = entry_name("team-a", "creds");
        assert_eq!(a, entry_name("team-a", "creds"));
        assert_ne!(a, entry_name("team-a", "creds2"));
        assert!(a.len() <= 63 && a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        let long = entry_name(&"n".repeat(63), &"s".repeat(253));
        assert_eq!(long.len(), a.len());
    }

    #[test]
    fn observations_round_trip_through_the_annotation() {
        for observed in [Observed::Deleted, Observed::Altered, Observed::Released] {
            let mut entry = PullSecretCopy::default();
            entry.annotations_mut().insert(OBSERVED_ANNOTATION.into(), observed.as_str().into());
            assert_eq!(Observed::of(&entry), Some(observed));
        }
        assert_eq!(Observed::of(&PullSecretCopy::default()), None);
    }
}
