//! `PullSecretLink`: a CSV's link to its catalog, remembered. OLM's records of an install go
//! before the CSV does (it keeps five InstallPlans per namespace; an administrator deletes the
//! Subscription to stop upgrades or as the first step of an uninstall, and the CSV keeps running),
//! so the reconciler writes down each link it proved from a Subscription, one cluster-scoped
//! object per CSV that only the project's identities may write, and deletes it once that CSV
//! (by UID) is gone. The index falls back on it where no Subscription names the CSV any more.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct PullSecretLink {
    pub metadata: ObjectMeta,
    pub spec: LinkSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LinkSpec {
    pub csv_namespace: String,
    pub csv_name: String,
    /// The CSV the link holds for: another CSV under the same name is not linked by it.
    #[serde(rename = "csvUID")]
    pub csv_uid: String,
    /// The Subscription that named the CSV when the link was proven.
    pub subscription: String,
    pub catalog_namespace: String,
    pub catalog_name: String,
}

project_resource!(PullSecretLink, "PullSecretLink", "pullsecretlinks");

/// The link's object name: one per CSV, whatever the length of its namespace and name.
pub fn name_of(csv_namespace: &str, csv_name: &str) -> String {
    let digest = Sha256::digest(format!("{csv_namespace}/{csv_name}"));
    format!("csv-{}", &hex::encode(digest)[..32])
}
