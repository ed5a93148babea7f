//! The immutable index the hot path reads: built from the watch caches of OLM's objects whenever
//! one of them changes, and swapped in atomically. Lookups take `&str` and allocate nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use kube::core::{Selector, SelectorExt};
use kube::{Resource, ResourceExt};

use crate::state::links::PullSecretLink;
use crate::state::olm::{CatalogSource, ClusterServiceVersion, OperatorGroup, Subscription};
use crate::{INJECT_ANNOTATION, NAMESPACE_SELECTOR_ANNOTATION};

type ByNamespace<V> = HashMap<String, HashMap<String, V>>;

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
    /// The CSV this one upgrades (`spec.replaces`): it keeps running until this one succeeds.
    replaces: Option<String>,
}

/// A Subscription that installed a CSV, and the catalog it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogLink {
    pub subscription: String,
    pub catalog_namespace: String,
    pub catalog_name: String,
    /// No Subscription names the CSV any more: the link is the one the reconciler wrote down
    /// ([`PullSecretLink`]) when one did.
    pub remembered: bool,
}

/// A Subscription as the link reads it: kept to say why a CSV of its namespace has no link.
#[derive(Debug)]
struct SubscriptionView {
    name: String,
    catalog_namespace: String,
    catalog_name: String,
    /// Whether OLM resolves this Subscription from that catalog (and the catalog is one we read).
    served: bool,
    /// The CSVs its status names and those they replace that are still present.
    csvs: Vec<String>,
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
    /// Namespace → its Subscriptions, for [`Index::missing_link`].
    subscriptions: HashMap<String, Vec<SubscriptionView>>,
    /// Every CatalogSource, with secrets or not: tells "gone" from "nothing to hand out".
    existing_catalogs: HashSet<(String, String)>,
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
        csvs: &[impl AsRef<ClusterServiceVersion>],
        operator_groups: &[impl AsRef<OperatorGroup>],
        links: &[impl AsRef<PullSecretLink>],
    ) -> Index {
        let mut index = Index::default();
        for cat in catalogs.iter().map(AsRef::as_ref) {
            let (Some(ns), name) = (cat.namespace(), cat.name_any()) else { continue };
            index.existing_catalogs.insert((ns.clone(), name.clone()));
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
                replaces: csv.spec.replaces.clone().filter(|r| !r.is_empty()),
            };
            index.csvs.entry(ns).or_default().insert(name, entry);
        }

        // CSV → catalog: the Subscription whose OLM-written status names the CSV (installedCSV,
        // currentCSV), or names a CSV that replaces it while it still runs, leads to the catalog
        // its spec names, where OLM itself resolves from. OLM's InstallPlans are no record: it
        // keeps five per namespace and deletes them with the Subscription.
        let mut pending: Vec<String> = Vec::new();
        for sub in subscriptions.iter().map(AsRef::as_ref) {
            let Some(ns) = sub.namespace() else { continue };
            let spec_ns = if sub.spec.source_namespace.is_empty() { ns.as_str() } else { &sub.spec.source_namespace };
            // A catalog OLM would not resolve from (another tenant's private catalog) serves
            // nobody, whatever the spec says.
            let served = scope.serves(spec_ns, &ns);
            let mut named: Vec<String> = [&sub.status.installed_csv, &sub.status.current_csv]
                .into_iter()
                .flatten()
                .filter(|c| !c.is_empty())
                .cloned()
                .collect();
            named.dedup();
            // Through `replaces` to the versions an upgrade has not yet taken down; each CSV at
            // most once, so the walk ends.
            let mut next = 0;
            while let Some(csv) = named.get(next) {
                let replaced = lookup(&index.csvs, &ns, csv).and_then(|c| c.replaces.as_deref());
                if let Some(replaced) = replaced.filter(|r| lookup(&index.csvs, &ns, r).is_some())
                    && !named.iter().any(|n| n == replaced)
                {
                    named.push(replaced.to_string());
                }
                next += 1;
            }
            if served {
                // A CSV OLM names before the watch delivers it: its own namespace is not left to
                // the fast path (OLM creates the operator's ServiceAccount right after the CSV).
                if lookup(&index.catalogs, spec_ns, &sub.spec.source).is_some()
                    && named.iter().any(|csv| lookup(&index.csvs, &ns, csv).is_none())
                {
                    pending.push(ns.clone());
                }
                for csv in &named {
                    let link = CatalogLink {
                        subscription: sub.name_any(),
                        catalog_namespace: spec_ns.to_string(),
                        catalog_name: sub.spec.source.clone(),
                        remembered: false,
                    };
                    let list = index.catalogs_by_csv.entry(ns.clone()).or_default().entry(csv.clone()).or_default();
                    if !list.contains(&link) {
                        list.push(link);
                    }
                }
            }
            index.subscriptions.entry(ns.clone()).or_default().push(SubscriptionView {
                name: sub.name_any(),
                catalog_namespace: spec_ns.to_string(),
                catalog_name: sub.spec.source.clone(),
                served,
                csvs: named,
            });
        }

        // Links remembered past OLM's records, where no Subscription links the CSV any more: for
        // the CSV of that UID only, and only where OLM resolves from as configured now.
        for link in links.iter().map(AsRef::as_ref) {
            let spec = &link.spec;
            let present =
                lookup(&index.csvs, &spec.csv_namespace, &spec.csv_name).is_some_and(|c| c.uid == spec.csv_uid);
            if !present || !scope.serves(&spec.catalog_namespace, &spec.csv_namespace) {
                continue;
            }
            let by_csv = index.catalogs_by_csv.entry(spec.csv_namespace.clone()).or_default();
            let list = by_csv.entry(spec.csv_name.clone()).or_default();
            if list.is_empty() {
                list.push(CatalogLink {
                    subscription: spec.subscription.clone(),
                    catalog_namespace: spec.catalog_namespace.clone(),
                    catalog_name: spec.catalog_name.clone(),
                    remembered: true,
                });
            }
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
        index.reached.extend(pending);
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

    /// The links a Subscription proves now, of CSVs that exist: (CSV namespace, CSV name, CSV
    /// UID, link), one per CSV. What the reconciler writes down.
    pub fn proven_links(&self) -> impl Iterator<Item = (&str, &str, &str, &CatalogLink)> {
        self.catalogs_by_csv.iter().flat_map(move |(ns, by_name)| {
            by_name.iter().filter_map(move |(name, links)| {
                let csv = lookup(&self.csvs, ns, name)?;
                let link = links.iter().find(|l| !l.remembered)?;
                Some((ns.as_str(), name.as_str(), csv.uid.as_str(), link))
            })
        })
    }

    /// Why a CSV has no catalog, as exactly as the Subscriptions of its namespace tell.
    pub fn missing_link(&self, csv_namespace: &str, csv_name: &str) -> String {
        let subscriptions = self.subscriptions.get(csv_namespace).map_or(&[][..], Vec::as_slice);
        if subscriptions.is_empty() {
            return format!("no Subscription in namespace {csv_namespace}");
        }
        match subscriptions.iter().find(|s| !s.served && s.csvs.iter().any(|c| c == csv_name)) {
            Some(s) => format!(
                "Subscription/{} names catalog {}/{}, which OLM does not resolve from for namespace {csv_namespace} \
                 (only its own namespace and the global catalog namespace, among those configured)",
                s.name, s.catalog_namespace, s.catalog_name
            ),
            None => {
                "no Subscription names this CSV (status installedCSV or currentCSV, or a CSV that replaces it)".into()
            }
        }
    }

    /// Whether a CatalogSource of that name exists (with secrets or not, enabled or not).
    pub fn catalog_exists(&self, namespace: &str, name: &str) -> bool {
        self.existing_catalogs.contains(&(namespace.to_string(), name.to_string()))
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
        Index::build(&CatalogNamespaces::default(), &wrap(catalogs), &wrap(subs), &wrap(csvs), &wrap(ogs), &no_links())
    }

    fn global(namespace: &str) -> CatalogNamespaces {
        CatalogNamespaces { global: namespace.into(), private: Vec::new() }
    }

    fn wrap<T>(v: Vec<T>) -> Vec<std::sync::Arc<T>> {
        v.into_iter().map(std::sync::Arc::new).collect()
    }

    fn no_links() -> Vec<std::sync::Arc<PullSecretLink>> {
        Vec::new()
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

    /// OLM's records of an install come and go (five InstallPlans per namespace, deleted with the
    /// Subscription); the Subscription's status and spec are what links, through `replaces` to
    /// the versions an upgrade has not taken down yet.
    #[test]
    fn the_link_follows_the_subscription_and_the_replaces_chain() {
        let catalogs: Vec<CatalogSource> = vec![
            from(json!({"metadata": {"namespace": "m", "name": "a"}, "spec": {"secrets": ["s"]}})),
            from(json!({"metadata": {"namespace": "m", "name": "renamed"}, "spec": {"secrets": ["s"]}})),
            from(json!({"metadata": {"namespace": "m", "name": "bare"}, "spec": {}})),
        ];
        let sub = |source: &str, installed: &str, current: &str| -> Vec<Subscription> {
            vec![from(
                json!({"metadata": {"namespace": "ops", "name": "op"}, "spec": {"source": source, "sourceNamespace": "m"},
                "status": {"installedCSV": installed, "currentCSV": current}}),
            )]
        };
        let csv = |name: &str, replaces: Option<&str>| -> ClusterServiceVersion {
            from(json!({"metadata": {"namespace": "ops", "name": name, "uid": name}, "spec": {"replaces": replaces}}))
        };
        // v3 replaces v2 replaces v1; v1 is gone, v0 never was in this namespace's chain.
        let csvs = wrap(vec![csv("op.v2", Some("op.v1")), csv("op.v3", Some("op.v2")), csv("op.v0", None)]);
        let none = Vec::<std::sync::Arc<OperatorGroup>>::new();
        let (catalogs, m) = (wrap(catalogs), global("m"));
        let build = |subs: Vec<Subscription>| Index::build(&m, &catalogs, &wrap(subs), &csvs, &none, &no_links());
        let catalog_of = |index: &Index, csv: &str| -> Vec<String> {
            index.catalogs_of("ops", csv).iter().map(|l| l.catalog_name.clone()).collect()
        };

        // Upgrading: installedCSV and currentCSV are already v3; v2 still runs its Deployment.
        let upgrading = build(sub("a", "op.v3", "op.v3"));
        assert_eq!(catalog_of(&upgrading, "op.v3"), ["a"]);
        assert_eq!(catalog_of(&upgrading, "op.v2"), ["a"], "the version being replaced keeps its link");
        assert!(catalog_of(&upgrading, "op.v1").is_empty() && catalog_of(&upgrading, "op.v0").is_empty());
        assert!(upgrading.reaches("ops"));

        // Repointed to a renamed catalog: the link follows the spec.
        assert_eq!(catalog_of(&build(sub("renamed", "op.v3", "op.v3")), "op.v3"), ["renamed"]);

        // Why there is no link, exactly.
        assert_eq!(build(vec![]).missing_link("ops", "op.v3"), "no Subscription in namespace ops");
        assert!(upgrading.missing_link("ops", "op.v0").starts_with("no Subscription names this CSV"));
        let unserved =
            Index::build(&global("other"), &catalogs, &wrap(sub("a", "op.v3", "op.v3")), &csvs, &none, &no_links());
        assert!(catalog_of(&unserved, "op.v2").is_empty());
        assert!(
            unserved
                .missing_link("ops", "op.v2")
                .starts_with("Subscription/op names catalog m/a, which OLM does not resolve from"),
            "{}",
            unserved.missing_link("ops", "op.v2")
        );
        let bare = build(sub("bare", "op.v3", "op.v3"));
        assert!(bare.catalog("m", "bare").is_none() && bare.catalog_exists("m", "bare"));
        assert!(!bare.catalog_exists("m", "gone"));
    }

    /// A link the reconciler wrote down while a Subscription named the CSV holds after that
    /// Subscription is gone: for that CSV (by UID) only, within OLM's rule, never over a live one.
    #[test]
    fn a_remembered_link_holds_where_no_subscription_names_the_csv() {
        let catalogs = wrap::<CatalogSource>(vec![
            from(json!({"metadata": {"namespace": "m", "name": "a"}, "spec": {"secrets": ["s"]}})),
            from(json!({"metadata": {"namespace": "m", "name": "b"}, "spec": {"secrets": ["t"]}})),
        ]);
        let csvs = wrap::<ClusterServiceVersion>(vec![from(
            json!({"metadata": {"namespace": "ops", "name": "op.v1", "uid": "u1"}}),
        )]);
        let link = |uid: &str| -> Vec<std::sync::Arc<PullSecretLink>> {
            wrap(vec![from(json!({"metadata": {"name": "l"}, "spec": {"csvNamespace": "ops", "csvName": "op.v1",
                "csvUID": uid, "subscription": "op", "catalogNamespace": "m", "catalogName": "a"}}))])
        };
        let none = Vec::<std::sync::Arc<OperatorGroup>>::new();
        let no_subs = Vec::<std::sync::Arc<Subscription>>::new();

        let gone = Index::build(&global("m"), &catalogs, &no_subs, &csvs, &none, &link("u1"));
        let links = gone.catalogs_of("ops", "op.v1");
        assert_eq!((links[0].catalog_name.as_str(), links[0].remembered), ("a", true));
        assert!(gone.reaches("ops"));
        assert!(gone.proven_links().next().is_none(), "no Subscription proves it now: nothing to write down");

        let renamed = Index::build(&global("m"), &catalogs, &no_subs, &csvs, &none, &link("u0"));
        assert!(renamed.catalogs_of("ops", "op.v1").is_empty(), "another CSV under the name");
        let elsewhere = Index::build(&global("n"), &catalogs, &no_subs, &csvs, &none, &link("u1"));
        assert!(elsewhere.catalogs_of("ops", "op.v1").is_empty(), "not where OLM resolves from now");

        let subs = wrap::<Subscription>(vec![from(json!({"metadata": {"namespace": "ops", "name": "op"},
            "spec": {"source": "b", "sourceNamespace": "m"}, "status": {"installedCSV": "op.v1"}}))]);
        let live = Index::build(&global("m"), &catalogs, &subs, &csvs, &none, &link("u1"));
        let links = live.catalogs_of("ops", "op.v1");
        assert_eq!(links.len(), 1);
        assert_eq!((links[0].catalog_name.as_str(), links[0].remembered), ("b", false), "the live link wins");
        let proven: Vec<_> =
            live.proven_links().map(|(ns, csv, uid, l)| (ns, csv, uid, l.catalog_name.as_str())).collect();
        assert_eq!(proven, [("ops", "op.v1", "u1", "b")]);
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
            &Vec::<std::sync::Arc<ClusterServiceVersion>>::new(),
            &Vec::<std::sync::Arc<OperatorGroup>>::new(),
            &no_links(),
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

    /// A Subscription in `sub_ns` that installed its CSV from `catalog_ns/a`.
    fn installed_from(catalog_ns: &str, sub_ns: &str, scope: &CatalogNamespaces) -> Index {
        let catalogs: Vec<CatalogSource> = vec![from(
            json!({"metadata": {"namespace": catalog_ns, "name": "a", "uid": "cat"}, "spec": {"secrets": ["s"]}}),
        )];
        let subs: Vec<Subscription> = vec![from(json!({"metadata": {"namespace": sub_ns, "name": "op"},
            "spec": {"source": "a", "sourceNamespace": catalog_ns}, "status": {"installedCSV": "op.v1"}}))];
        let csvs: Vec<ClusterServiceVersion> =
            vec![from(json!({"metadata": {"namespace": sub_ns, "name": "op.v1", "uid": "u"}}))];
        let none = Vec::<std::sync::Arc<OperatorGroup>>::new();
        Index::build(scope, &wrap(catalogs), &wrap(subs), &wrap(csvs), &none, &no_links())
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
