//! The immutable index the hot path reads: built from the watch caches of OLM's objects whenever
//! one of them changes, and swapped in atomically. Lookups take `&str` and allocate nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use kube::core::{Selector, SelectorExt};
use kube::{Resource, ResourceExt};

use crate::state::olm::{CatalogSource, ClusterServiceVersion, InstallPlan, OperatorGroup, Subscription};
use crate::{INJECT_ANNOTATION, NAMESPACE_SELECTOR_ANNOTATION};

type ByNamespace<V> = HashMap<String, HashMap<String, V>>;
/// CSV name → the (namespace, name) of the catalogs an InstallPlan installed it from.
type CatalogsByCsv<'p> = HashMap<&'p str, Vec<(&'p str, &'p str)>>;

fn lookup<'m, V>(map: &'m ByNamespace<V>, namespace: &str, name: &str) -> Option<&'m V> {
    map.get(namespace)?.get(name)
}

/// Where catalogs count. OLM resolves a Subscription only from catalogs in its own namespace and
/// in the global catalog namespace; the webhook reads secrets only in the namespaces it is
/// configured with (the chart grants it a Role there and nowhere else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogNamespaces {
    /// OLM's global catalog namespace: its catalogs serve Subscriptions in every namespace.
    pub global: String,
    /// Further namespaces with catalogs, each serving only its own namespace's Subscriptions.
    pub private: Vec<String>,
}

impl Default for CatalogNamespaces {
    fn default() -> Self {
        CatalogNamespaces { global: "openshift-marketplace".into(), private: Vec::new() }
    }
}

impl CatalogNamespaces {
    /// Every namespace whose catalogs (and source secrets) the webhook reads.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.global.as_str())
            .chain(self.private.iter().map(String::as_str).filter(|p| *p != self.global))
    }

    pub fn contains(&self, namespace: &str) -> bool {
        self.all().any(|n| n == namespace)
    }

    /// Whether OLM would resolve a Subscription in `subscription_namespace` from a catalog in
    /// `catalog_namespace`, and that catalog is one we read.
    pub fn serves(&self, catalog_namespace: &str, subscription_namespace: &str) -> bool {
        self.contains(catalog_namespace)
            && (catalog_namespace == self.global || catalog_namespace == subscription_namespace)
    }
}

/// A CatalogSource whose secrets may be handed out.
#[derive(Debug)]
pub struct Catalog {
    pub namespace: String,
    pub name: String,
    pub secrets: Vec<String>,
    namespace_selector: Option<Selector>,
}

impl Catalog {
    /// Whether the catalog's `namespace-selector` annotation (if any) admits a namespace.
    pub fn admits(&self, namespace_labels: &BTreeMap<String, String>) -> bool {
        self.namespace_selector.as_ref().is_none_or(|s| s.matches(namespace_labels))
    }
}

#[derive(Debug)]
pub struct Csv {
    pub uid: String,
    pub service_accounts: Vec<String>,
}

/// A Subscription that installed a CSV, and the catalog it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogLink {
    pub subscription: String,
    pub catalog_namespace: String,
    pub catalog_name: String,
}

/// Where an operator installed in a namespace reaches, from its OperatorGroup's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(HashSet<String>),
}

/// A CRD owned by a CSV: a custom resource of this kind anchors its dependents to the CSV.
#[derive(Debug, Clone)]
pub struct CrdOwner {
    pub csv_namespace: String,
    pub csv_name: String,
    pub plural: String,
}

#[derive(Default, Debug)]
pub struct Index {
    catalogs: ByNamespace<Catalog>,
    csvs: ByNamespace<Csv>,
    /// CSV namespace → CSV name → the Subscriptions (and so catalogs) it came from.
    catalogs_by_csv: ByNamespace<Vec<CatalogLink>>,
    scopes: HashMap<String, Scope>,
    /// (group, kind) → the CSVs that own the CRD.
    crd_owners: HashMap<(String, String), Vec<CrdOwner>>,
    /// Operator namespace → the catalogs (with secrets) its installed CSVs came from.
    operator_catalogs: HashMap<String, Vec<(String, String)>>,
    /// Fast path: namespaces reached by some operator whose catalog has secrets.
    reached: HashSet<String>,
    reaches_all: bool,
    ignored: Vec<IgnoredCatalog>,
}

/// A CatalogSource with secrets that the webhook does not act for, and must say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredCatalog {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub why: Ignored,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Ignored {
    /// Its namespace-selector annotation does not parse: its secrets go nowhere.
    InvalidSelector { selector: String, error: String },
    /// It is outside the configured catalog namespaces: its secrets are not ours to read.
    NamespaceNotConfigured,
}

impl Index {
    pub fn build(
        scope: &CatalogNamespaces,
        catalogs: &[impl AsRef<CatalogSource>],
        subscriptions: &[impl AsRef<Subscription>],
        install_plans: &[impl AsRef<InstallPlan>],
        csvs: &[impl AsRef<ClusterServiceVersion>],
        operator_groups: &[impl AsRef<OperatorGroup>],
    ) -> Index {
        let mut index = Index::default();
        for cat in catalogs.iter().map(AsRef::as_ref) {
            let (Some(ns), name) = (cat.namespace(), cat.name_any()) else { continue };
            let annotations = cat.annotations();
            if annotations.get(INJECT_ANNOTATION).is_some_and(|v| v == "false") || cat.spec.secrets.is_empty() {
                continue;
            }
            let uid = || cat.meta().uid.clone().unwrap_or_default();
            if !scope.contains(&ns) {
                index.ignored.push(IgnoredCatalog {
                    namespace: ns,
                    name,
                    uid: uid(),
                    why: Ignored::NamespaceNotConfigured,
                });
                continue;
            }
            let namespace_selector = match annotations.get(NAMESPACE_SELECTOR_ANNOTATION) {
                None => None,
                Some(text) => match super::selector::parse(text) {
                    Ok(selector) => Some(selector),
                    Err(error) => {
                        // Fail closed: a selector we cannot read matches nothing; the reconciler
                        // reports it (log, Event on the CatalogSource).
                        index.ignored.push(IgnoredCatalog {
                            namespace: ns,
                            name,
                            uid: uid(),
                            why: Ignored::InvalidSelector { selector: text.clone(), error },
                        });
                        continue;
                    }
                },
            };
            let mut secrets = cat.spec.secrets.clone();
            secrets.dedup();
            index
                .catalogs
                .entry(ns.clone())
                .or_default()
                .insert(name.clone(), Catalog { namespace: ns, name, secrets, namespace_selector });
        }

        for og in operator_groups.iter().map(AsRef::as_ref) {
            let Some(ns) = og.namespace() else { continue };
            let targets = &og.status.namespaces;
            let scope = if targets.iter().any(String::is_empty) {
                Scope::All
            } else {
                Scope::Namespaces(targets.iter().cloned().collect())
            };
            index.scopes.insert(ns, scope);
        }

        // CSV → catalog, as OLM recorded it in the InstallPlans of the CSV's namespace (status
        // that tenants cannot write): namespace → CSV → catalogs it was installed from.
        let mut installed_from: HashMap<String, CatalogsByCsv> = HashMap::new();
        for plan in install_plans.iter().map(AsRef::as_ref) {
            let Some(ns) = plan.namespace() else { continue };
            let by_csv = installed_from.entry(ns).or_default();
            for step in &plan.status.plan {
                by_csv.entry(&step.csv).or_default().push((&step.catalog_namespace, &step.catalog_name));
            }
        }
        for sub in subscriptions.iter().map(AsRef::as_ref) {
            let Some(ns) = sub.namespace() else { continue };
            // The spec is only a cross-check: a tenant who points it at another catalog gets no
            // link at all, since OLM installed the CSV from the catalog its InstallPlan records.
            let spec_ns = if sub.spec.source_namespace.is_empty() { ns.as_str() } else { &sub.spec.source_namespace };
            let spec_catalog = (spec_ns, sub.spec.source.as_str());
            // Nor does a catalog OLM would not resolve from: another tenant's private catalog.
            if !scope.serves(spec_ns, &ns) {
                continue;
            }
            for csv in [&sub.status.installed_csv, &sub.status.current_csv].into_iter().flatten() {
                let recorded = installed_from.get(&ns).and_then(|by_csv| by_csv.get(csv.as_str()));
                if !recorded.is_some_and(|catalogs| catalogs.contains(&spec_catalog)) {
                    continue;
                }
                let link = CatalogLink {
                    subscription: sub.name_any(),
                    catalog_namespace: spec_catalog.0.to_string(),
                    catalog_name: spec_catalog.1.to_string(),
                };
                let list = index.catalogs_by_csv.entry(ns.clone()).or_default().entry(csv.clone()).or_default();
                if !list.contains(&link) {
                    list.push(link);
                }
            }
        }

        for csv in csvs.iter().map(AsRef::as_ref) {
            let (Some(ns), name) = (csv.namespace(), csv.name_any()) else { continue };
            if csv.is_copied() {
                continue;
            }
            for owned in &csv.spec.crds.owned {
                let Some((group, plural)) = owned.group_and_plural() else { continue };
                index.crd_owners.entry((group.to_string(), owned.kind.clone())).or_default().push(CrdOwner {
                    csv_namespace: ns.clone(),
                    csv_name: name.clone(),
                    plural: plural.to_string(),
                });
            }
            let entry = Csv {
                uid: csv.meta().uid.clone().unwrap_or_default(),
                service_accounts: csv.service_accounts().map(str::to_string).collect(),
            };
            index.csvs.entry(ns).or_default().insert(name, entry);
        }

        // The fast path: every namespace some operator from a catalog with secrets reaches.
        for (ns, by_name) in &index.catalogs_by_csv {
            let mut from: Vec<(String, String)> = Vec::new();
            for (csv, links) in by_name {
                if lookup(&index.csvs, ns, csv).is_none() {
                    continue;
                }
                for l in links {
                    let pair = (l.catalog_namespace.clone(), l.catalog_name.clone());
                    if lookup(&index.catalogs, &pair.0, &pair.1).is_some() && !from.contains(&pair) {
                        from.push(pair);
                    }
                }
            }
            if from.is_empty() {
                continue;
            }
            index.operator_catalogs.insert(ns.clone(), from);
            index.reached.insert(ns.clone());
            match index.scopes.get(ns) {
                Some(Scope::All) => index.reaches_all = true,
                Some(Scope::Namespaces(targets)) => index.reached.extend(targets.iter().cloned()),
                None => {}
            }
        }
        index
    }

    /// False when no operator from a catalog with secrets reaches the namespace: most admissions
    /// in a cluster end here, answered from memory.
    pub fn reaches(&self, namespace: &str) -> bool {
        self.reaches_all || self.reached.contains(namespace)
    }

    pub fn csv(&self, namespace: &str, name: &str) -> Option<&Csv> {
        lookup(&self.csvs, namespace, name)
    }

    pub fn catalog(&self, namespace: &str, name: &str) -> Option<&Catalog> {
        lookup(&self.catalogs, namespace, name)
    }

    /// The catalogs whose Subscription installed (or is installing) this CSV.
    pub fn catalogs_of(&self, csv_namespace: &str, csv_name: &str) -> &[CatalogLink] {
        lookup(&self.catalogs_by_csv, csv_namespace, csv_name).map_or(&[], Vec::as_slice)
    }

    /// Whether an operator installed in `operator_namespace` reaches `namespace`.
    pub fn in_scope(&self, operator_namespace: &str, namespace: &str) -> bool {
        operator_namespace == namespace
            || match self.scopes.get(operator_namespace) {
                Some(Scope::All) => true,
                Some(Scope::Namespaces(targets)) => targets.contains(namespace),
                None => false,
            }
    }

    /// Whether `secret` of a catalog in `source_namespace` may be in `namespace`: some installed
    /// operator from that catalog reaches the namespace and the catalog admits its labels. A copy
    /// for which this turns false is cleaned up after the grace period.
    pub fn offers(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        source_namespace: &str,
        secret: &str,
    ) -> bool {
        self.operator_catalogs.iter().any(|(operator_ns, catalogs)| {
            self.in_scope(operator_ns, namespace)
                && catalogs.iter().any(|(catalog_ns, catalog_name)| {
                    catalog_ns == source_namespace
                        && self
                            .catalog(catalog_ns, catalog_name)
                            .is_some_and(|c| c.admits(namespace_labels) && c.secrets.iter().any(|s| s == secret))
                })
        })
    }

    /// Catalogs with secrets that are ignored, and why.
    pub fn ignored(&self) -> &[IgnoredCatalog] {
        &self.ignored
    }

    /// Whether some catalog (with injection on) in `source_namespace` lists `secret`.
    pub fn lists_secret(&self, source_namespace: &str, secret: &str) -> bool {
        self.catalogs
            .get(source_namespace)
            .is_some_and(|by_name| by_name.values().any(|c| c.secrets.iter().any(|s| s == secret)))
    }

    /// The CSVs owning CRDs of this group and kind.
    pub fn crd_owners(&self, group: &str, kind: &str) -> &[CrdOwner] {
        // The key is owned; a miss is the common case and costs one small allocation only when
        // some CSV owns CRDs at all.
        if self.crd_owners.is_empty() {
            return &[];
        }
        self.crd_owners.get(&(group.to_string(), kind.to_string())).map_or(&[], Vec::as_slice)
    }

    /// CSVs in `namespace` whose install strategy names the service account.
    pub fn csvs_naming_service_account<'s>(
        &'s self,
        namespace: &str,
        service_account: &'s str,
    ) -> impl Iterator<Item = &'s str> + 's {
        self.csvs
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(move |(_, csv)| csv.service_accounts.iter().any(|sa| sa == service_account))
            .map(|(name, _)| name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn sample(og_targets: serde_json::Value) -> Index {
        let catalogs: Vec<CatalogSource> = vec![
            from(
                json!({"metadata": {"namespace": "openshift-marketplace", "name": "private"}, "spec": {"secrets": ["creds"]}}),
            ),
            from(json!({"metadata": {"namespace": "openshift-marketplace", "name": "public"}, "spec": {}})),
        ];
        let subs: Vec<Subscription> = vec![
            from(json!({"metadata": {"namespace": "ops", "name": "etcd"},
                "spec": {"source": "private", "sourceNamespace": "openshift-marketplace"},
                "status": {"installedCSV": "etcd.v1", "currentCSV": "etcd.v2"}})),
            from(json!({"metadata": {"namespace": "other", "name": "x"},
                "spec": {"source": "public", "sourceNamespace": "openshift-marketplace"},
                "status": {"installedCSV": "x.v1"}})),
        ];
        let csvs: Vec<ClusterServiceVersion> = vec![
            from(json!({"metadata": {"namespace": "ops", "name": "etcd.v1", "uid": "u1"}, "spec": {
                "customresourcedefinitions": {"owned": [{"name": "etcdclusters.etcd.database.coreos.com", "kind": "EtcdCluster", "version": "v1"}]},
                "install": {"strategy": "deployment", "spec": {
                    "permissions": [{"serviceAccountName": "etcd-operator"}],
                    "deployments": [{"name": "d", "spec": {"template": {"spec": {"serviceAccountName": "runner"}}}}]}}}})),
            from(
                json!({"metadata": {"namespace": "team", "name": "etcd.v1", "uid": "u2", "labels": {"olm.copiedFrom": "ops"}}}),
            ),
            from(json!({"metadata": {"namespace": "other", "name": "x.v1", "uid": "u3"}})),
        ];
        let ogs: Vec<OperatorGroup> =
            vec![from(json!({"metadata": {"namespace": "ops", "name": "og"}, "status": {"namespaces": og_targets}}))];
        let step = |csv: &str, catalog: &str| {
            json!({"resolving": csv, "status": "Created", "resource": {"group": "operators.coreos.com", "version": "v1alpha1",
                "kind": "ClusterServiceVersion", "name": csv, "sourceName": catalog, "sourceNamespace": "openshift-marketplace"}})
        };
        let plans: Vec<InstallPlan> = vec![
            from(json!({"metadata": {"namespace": "ops", "name": "install-1"},
                "status": {"plan": [step("etcd.v1", "private"), step("etcd.v2", "private"),
                    {"resolving": "etcd.v1", "status": "Created", "resource": {"kind": "ConfigMap", "name": "c"}}]}})),
            from(
                json!({"metadata": {"namespace": "other", "name": "install-x"}, "status": {"plan": [step("x.v1", "public")]}}),
            ),
        ];
        Index::build(&CatalogNamespaces::default(), &wrap(catalogs), &wrap(subs), &wrap(plans), &wrap(csvs), &wrap(ogs))
    }

    fn global(namespace: &str) -> CatalogNamespaces {
        CatalogNamespaces { global: namespace.into(), private: Vec::new() }
    }

    fn wrap<T>(v: Vec<T>) -> Vec<std::sync::Arc<T>> {
        v.into_iter().map(std::sync::Arc::new).collect()
    }

    #[test]
    fn scope_comes_from_operator_group_status() {
        let index = sample(json!(["ops", "team"]));
        assert!(index.reaches("ops") && index.reaches("team"));
        assert!(!index.reaches("other"), "the operator in `other` comes from a catalog without secrets");
        assert!(!index.reaches("elsewhere"));
        assert!(index.in_scope("ops", "team"));
        assert!(!index.in_scope("ops", "elsewhere"));

        let all = sample(json!([""]));
        assert!(all.reaches("anything") && all.in_scope("ops", "anything"));
    }

    #[test]
    fn offers_follows_scope_catalog_and_secret_list() {
        let index = sample(json!(["ops", "team"]));
        let none = BTreeMap::new();
        assert!(index.offers("team", &none, "openshift-marketplace", "creds"));
        assert!(index.offers("ops", &none, "openshift-marketplace", "creds"));
        assert!(!index.offers("elsewhere", &none, "openshift-marketplace", "creds"), "out of scope");
        assert!(!index.offers("team", &none, "openshift-marketplace", "other"), "not in spec.secrets");
        assert!(!index.offers("team", &none, "elsewhere", "creds"), "another catalog namespace");
        assert!(
            !index.offers("other", &none, "openshift-marketplace", "creds"),
            "operator from a catalog without secrets"
        );
    }

    #[test]
    fn the_catalog_is_the_one_the_install_plan_records_and_the_spec_only_cross_checks() {
        let catalogs: Vec<CatalogSource> = vec![
            from(json!({"metadata": {"namespace": "m", "name": "a"}, "spec": {"secrets": ["s"]}})),
            from(json!({"metadata": {"namespace": "m", "name": "b"}, "spec": {"secrets": ["t"]}})),
        ];
        let sub = |source: &str| -> Vec<Subscription> {
            vec![from(
                json!({"metadata": {"namespace": "ops", "name": "op"}, "spec": {"source": source, "sourceNamespace": "m"},
                "status": {"installedCSV": "op.v1"}}),
            )]
        };
        let plans: Vec<InstallPlan> = vec![from(
            json!({"metadata": {"namespace": "ops", "name": "p"}, "status": {"plan": [
            {"resolving": "op.v1", "status": "Created", "resource": {"group": "operators.coreos.com", "version": "v1alpha1",
                "kind": "ClusterServiceVersion", "name": "op.v1", "sourceName": "a", "sourceNamespace": "m"}}]}}),
        )];
        let csvs: Vec<ClusterServiceVersion> =
            vec![from(json!({"metadata": {"namespace": "ops", "name": "op.v1", "uid": "u"}}))];
        let none = Vec::<std::sync::Arc<OperatorGroup>>::new();
        let (catalogs, plans, csvs) = (wrap(catalogs), wrap(plans), wrap(csvs));
        let m = global("m");
        let installed = Index::build(&m, &catalogs, &wrap(sub("a")), &plans, &csvs, &none);
        assert_eq!(installed.catalogs_of("ops", "op.v1")[0].catalog_name, "a");
        let edited = Index::build(&m, &catalogs, &wrap(sub("b")), &plans, &csvs, &none);
        assert!(edited.catalogs_of("ops", "op.v1").is_empty(), "a spec pointed elsewhere links to nothing");
        let unrecorded =
            Index::build(&m, &catalogs, &wrap(sub("a")), &Vec::<std::sync::Arc<InstallPlan>>::new(), &csvs, &none);
        assert!(unrecorded.catalogs_of("ops", "op.v1").is_empty(), "no InstallPlan, no link");
    }

    #[test]
    fn csv_leads_to_catalogs_through_installed_and_current_csv() {
        let index = sample(json!(["ops"]));
        let links = index.catalogs_of("ops", "etcd.v1");
        assert_eq!((links[0].subscription.as_str(), links[0].catalog_name.as_str()), ("etcd", "private"));
        assert_eq!(links[0].catalog_namespace, "openshift-marketplace");
        assert_eq!(index.catalogs_of("ops", "etcd.v2").len(), 1);
        assert!(index.catalog("openshift-marketplace", "public").is_none(), "no secrets: not a catalog we act for");
        assert_eq!(index.csv("ops", "etcd.v1").unwrap().uid, "u1");
        assert!(index.csv("team", "etcd.v1").is_none(), "copied CSVs are never anchors");
    }

    #[test]
    fn crd_owners_and_install_strategy_service_accounts() {
        let index = sample(json!(["ops"]));
        let owners = index.crd_owners("etcd.database.coreos.com", "EtcdCluster");
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].plural, "etcdclusters");
        assert!(index.crd_owners("etcd.database.coreos.com", "Other").is_empty());
        let naming: Vec<_> = index.csvs_naming_service_account("ops", "runner").collect();
        assert_eq!(naming, ["etcd.v1"]);
        assert_eq!(index.csvs_naming_service_account("ops", "etcd-operator").count(), 1);
        assert_eq!(index.csvs_naming_service_account("ops", "default").count(), 0);
    }

    #[test]
    fn namespace_selector_annotation_restricts_and_fails_closed() {
        let catalogs: Vec<CatalogSource> = vec![
            from(
                json!({"metadata": {"namespace": "m", "name": "a", "annotations": {NAMESPACE_SELECTOR_ANNOTATION: "tier=prod"}}, "spec": {"secrets": ["s"]}}),
            ),
            from(
                json!({"metadata": {"namespace": "m", "name": "b", "annotations": {NAMESPACE_SELECTOR_ANNOTATION: "{\"matchExpressions\":[{\"key\":\"tier\",\"operator\":\"In\",\"values\":[\"dev\"]}]}"}}, "spec": {"secrets": ["s"]}}),
            ),
            from(
                json!({"metadata": {"namespace": "m", "name": "c", "annotations": {NAMESPACE_SELECTOR_ANNOTATION: "{broken"}}, "spec": {"secrets": ["s"]}}),
            ),
            from(
                json!({"metadata": {"namespace": "m", "name": "d", "annotations": {INJECT_ANNOTATION: "false"}}, "spec": {"secrets": ["s"]}}),
            ),
        ];
        let none: Vec<std::sync::Arc<Subscription>> = vec![];
        let index = Index::build(
            &global("m"),
            &wrap(catalogs),
            &none,
            &Vec::<std::sync::Arc<InstallPlan>>::new(),
            &Vec::<std::sync::Arc<ClusterServiceVersion>>::new(),
            &Vec::<std::sync::Arc<OperatorGroup>>::new(),
        );
        let prod = BTreeMap::from([("tier".to_string(), "prod".to_string())]);
        let dev = BTreeMap::from([("tier".to_string(), "dev".to_string())]);
        assert!(index.catalog("m", "a").unwrap().admits(&prod));
        assert!(!index.catalog("m", "a").unwrap().admits(&dev));
        assert!(index.catalog("m", "b").unwrap().admits(&dev));
        assert!(index.catalog("m", "c").is_none());
        assert_eq!(index.ignored().len(), 1);
        assert_eq!(index.ignored()[0].name, "c");
        assert!(matches!(&index.ignored()[0].why, Ignored::InvalidSelector { selector, .. } if selector == "{broken"));
        assert!(index.catalog("m", "d").is_none());
    }

    /// A Subscription whose CSV OLM really installed from `catalog_ns/a`, in `sub_ns`.
    fn installed_from(catalog_ns: &str, sub_ns: &str, scope: &CatalogNamespaces) -> Index {
        let catalogs: Vec<CatalogSource> = vec![from(
            json!({"metadata": {"namespace": catalog_ns, "name": "a", "uid": "cat"}, "spec": {"secrets": ["s"]}}),
        )];
        let subs: Vec<Subscription> = vec![from(json!({"metadata": {"namespace": sub_ns, "name": "op"},
            "spec": {"source": "a", "sourceNamespace": catalog_ns}, "status": {"installedCSV": "op.v1"}}))];
        let plans: Vec<InstallPlan> = vec![from(
            json!({"metadata": {"namespace": sub_ns, "name": "p"}, "status": {"plan": [
            {"resolving": "op.v1", "status": "Created", "resource": {"group": "operators.coreos.com", "version": "v1alpha1",
                "kind": "ClusterServiceVersion", "name": "op.v1", "sourceName": "a", "sourceNamespace": catalog_ns}}]}}),
        )];
        let csvs: Vec<ClusterServiceVersion> =
            vec![from(json!({"metadata": {"namespace": sub_ns, "name": "op.v1", "uid": "u"}}))];
        let none = Vec::<std::sync::Arc<OperatorGroup>>::new();
        Index::build(scope, &wrap(catalogs), &wrap(subs), &wrap(plans), &wrap(csvs), &none)
    }

    #[test]
    fn a_catalog_counts_only_where_olm_resolves_from_it() {
        let scope = CatalogNamespaces { global: "market".into(), private: vec!["team-a".into(), "team-b".into()] };
        let linked = |index: &Index, ns: &str| !index.catalogs_of(ns, "op.v1").is_empty();
        assert!(linked(&installed_from("market", "ops", &scope), "ops"), "the global catalog serves every namespace");
        assert!(linked(&installed_from("team-a", "team-a", &scope), "team-a"), "a private catalog serves its own");
        let cross = installed_from("team-a", "team-b", &scope);
        assert!(!linked(&cross, "team-b"), "another tenant's private catalog serves nobody else");
        assert!(!cross.reaches("team-b"));

        let unconfigured = installed_from("elsewhere", "elsewhere", &scope);
        assert!(!linked(&unconfigured, "elsewhere") && unconfigured.catalog("elsewhere", "a").is_none());
        assert_eq!(
            unconfigured.ignored(),
            [IgnoredCatalog {
                namespace: "elsewhere".into(),
                name: "a".into(),
                uid: "cat".into(),
                why: Ignored::NamespaceNotConfigured
            }]
        );
        assert!(installed_from("market", "ops", &scope).ignored().is_empty());
    }
}
