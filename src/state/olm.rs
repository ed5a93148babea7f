//! Projections of OLM's objects: only the fields the trusted chain reads are deserialized, so the
//! caches stay small (a CSV carries icons, descriptions and whole Deployment specs we never use).

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "operators.coreos.com";

macro_rules! olm_resource {
    ($ty:ident, $kind:literal, $version:literal, $plural:literal) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::NamespaceResourceScope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(GROUP)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($version)
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// `CatalogSource`: admin-owned; `spec.secrets` names pull secrets in its own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct CatalogSource {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CatalogSourceSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct CatalogSourceSpec {
    #[serde(default)]
    pub secrets: Vec<String>,
}
olm_resource!(CatalogSource, "CatalogSource", "v1alpha1", "catalogsources");

/// `Subscription`: its OLM-written status says which CSV it installed; its spec (which catalog to
/// install from) is editable by a namespace's `admin` and `edit` roles, and counts only within
/// OLM's own resolution rule (its namespace's catalogs and the global ones).
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct Subscription {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: SubscriptionSpec,
    #[serde(default)]
    pub status: SubscriptionStatus,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct SubscriptionSpec {
    #[serde(default)]
    pub source: String,
    #[serde(default, rename = "sourceNamespace")]
    pub source_namespace: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct SubscriptionStatus {
    #[serde(default, rename = "installedCSV")]
    pub installed_csv: Option<String>,
    #[serde(default, rename = "currentCSV")]
    pub current_csv: Option<String>,
}
olm_resource!(Subscription, "Subscription", "v1alpha1", "subscriptions");

/// `OperatorGroup`: `status.namespaces` is the operator's scope (`[""]` is every namespace).
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct OperatorGroup {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: OperatorGroupStatus,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct OperatorGroupStatus {
    #[serde(default)]
    pub namespaces: Vec<String>,
}
olm_resource!(OperatorGroup, "OperatorGroup", "v1", "operatorgroups");

/// `ClusterServiceVersion`: the owned CRDs and the service accounts of its install strategy.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct ClusterServiceVersion {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CsvSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct CsvSpec {
    #[serde(default, rename = "customresourcedefinitions")]
    pub crds: CsvCrds,
    /// The CSV this one upgrades (OLM's update graph, from the bundle).
    #[serde(default)]
    pub replaces: Option<String>,
    #[serde(default)]
    pub install: CsvInstall,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct CsvCrds {
    #[serde(default)]
    pub owned: Vec<OwnedCrd>,
}

/// `name` is `<plural>.<group>`.
#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct OwnedCrd {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub version: String,
}

impl OwnedCrd {
    /// (group, plural) from `<plural>.<group>`.
    pub fn group_and_plural(&self) -> Option<(&str, &str)> {
        let (plural, group) = self.name.split_once('.')?;
        Some((group, plural))
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct CsvInstall {
    #[serde(default)]
    pub spec: InstallStrategy,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct InstallStrategy {
    #[serde(default)]
    pub permissions: Vec<StrategyPermission>,
    #[serde(default, rename = "clusterPermissions")]
    pub cluster_permissions: Vec<StrategyPermission>,
    #[serde(default)]
    pub deployments: Vec<StrategyDeployment>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct StrategyPermission {
    #[serde(default, rename = "serviceAccountName")]
    pub service_account_name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct StrategyDeployment {
    #[serde(default)]
    pub spec: StrategyDeploymentSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct StrategyDeploymentSpec {
    #[serde(default)]
    pub template: StrategyPodTemplate,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct StrategyPodTemplate {
    #[serde(default)]
    pub spec: StrategyPodSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default)]
pub struct StrategyPodSpec {
    #[serde(default, rename = "serviceAccountName")]
    pub service_account_name: Option<String>,
}
olm_resource!(ClusterServiceVersion, "ClusterServiceVersion", "v1alpha1", "clusterserviceversions");

impl ClusterServiceVersion {
    /// Every service account the install strategy names.
    pub fn service_accounts(&self) -> impl Iterator<Item = &str> {
        let strategy = &self.spec.install.spec;
        strategy
            .permissions
            .iter()
            .chain(&strategy.cluster_permissions)
            .map(|p| p.service_account_name.as_str())
            .chain(strategy.deployments.iter().filter_map(|d| d.spec.template.spec.service_account_name.as_deref()))
            .filter(|n| !n.is_empty())
    }

    /// CSVs copied by OLM into target namespaces carry this label; they are never anchors.
    pub fn is_copied(&self) -> bool {
        self.metadata.labels.as_ref().is_some_and(|l| l.contains_key("olm.copiedFrom"))
    }
}
