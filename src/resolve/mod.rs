//! The one answer to "what does this object need?", asked by the webhook, the reconciler and
//! `explain` alike: which namespace rule leaves it alone, the trusted [`chain`] from the object to
//! its catalogs (over verified [`owners`]), and for every secret of those catalogs whether the
//! namespace uses the original, needs a managed copy, or cannot have it.

pub mod chain;
pub mod owners;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use crate::INJECT_ANNOTATION;
use crate::error::Error;
use crate::state::caches::Caches;
use crate::state::index::Index;
use chain::{Chains, Found};
use owners::{OwnerRef, Owners};

/// The source secret if it may be handed out, else why not. Only pull secrets are watched, so a
/// Secret of another type is as absent as a missing one.
pub fn usable(secret: Option<Arc<Secret>>) -> Result<Arc<Secret>, &'static str> {
    secret.ok_or("is missing or not a pull secret (type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg)")
}

/// Namespaces left alone whatever their operators, besides the platform prefixes.
#[derive(Clone, Debug, Default)]
pub struct NamespaceRules {
    /// The webhook's own namespace: never mutated.
    pub own_namespace: String,
    pub excluded_namespaces: Vec<String>,
    /// `openshift-*` namespaces handled after all (as `openshift-operators` always is).
    pub included_namespaces: Vec<String>,
}

/// Why an object or a namespace is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    KubeNamespace,
    OpenshiftNamespace,
    OwnNamespace,
    ExcludedNamespace,
    OptedOut,
    /// The fast path: no operator from a catalog with secrets reaches the namespace.
    NotReached,
}

impl Skip {
    pub fn reason(self) -> &'static str {
        match self {
            Skip::KubeNamespace => "kube-* namespace",
            Skip::OpenshiftNamespace => "openshift-* namespace",
            Skip::OwnNamespace => "the webhook's own namespace",
            Skip::ExcludedNamespace => "namespace excluded by --exclude-namespace",
            Skip::OptedOut => "namespace annotated pullsecret-injector.io/inject=false",
            Skip::NotReached => "no operator from a catalog with secrets reaches this namespace",
        }
    }
}

/// The kinds the webhook mutates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    ServiceAccount,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ServiceAccount => "ServiceAccount",
        }
    }
}

/// The object asked about.
pub struct Subject<'a> {
    pub kind: Kind,
    pub namespace: &'a str,
    /// Empty for a Pod that only has a generateName.
    pub name: &'a str,
    pub owner_references: Vec<OwnerRef>,
}

impl<'a> Subject<'a> {
    /// An object read from the API server (or a watch), with its ownerReferences as written.
    pub fn of(
        kind: Kind,
        namespace: &'a str,
        name: &'a str,
        owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    ) -> Self {
        Subject { kind, namespace, name, owner_references: owners.iter().cloned().map(OwnerRef::from).collect() }
    }
}

/// How the namespace gets one of its catalogs' secrets.
#[derive(Debug, Clone)]
pub enum Provision {
    /// The namespace is the catalog's own: the original secret is listed, nothing is copied.
    Original,
    /// A managed copy of this source.
    Copy(Arc<Secret>),
    /// Missing, or not a pull secret: never listed.
    Unusable(&'static str),
}

/// One secret of the object's catalogs.
#[derive(Debug, Clone)]
pub struct Need {
    pub source_namespace: String,
    pub source_name: String,
    pub provision: Provision,
}

impl Need {
    /// `<namespace>/<name>` of the source: the value of the source annotation on its copies.
    pub fn source_ref(&self) -> String {
        format!("{}/{}", self.source_namespace, self.source_name)
    }
}

/// What an object needs.
#[derive(Debug, Default)]
pub struct Resolution {
    pub chains: Chains,
    /// Every secret of every catalog found, deduplicated, in order.
    pub needs: Vec<Need>,
}

impl Resolution {
    pub fn found(&self) -> &[Found] {
        &self.chains.found
    }

    /// `<namespace>/<name>` of each catalog found.
    pub fn catalogs(&self) -> Vec<String> {
        self.chains.found.iter().map(|f| format!("{}/{}", f.catalog_namespace, f.catalog_name)).collect()
    }

    /// Each path that reached a catalog, as logged.
    pub fn chain_texts(&self) -> Vec<String> {
        self.chains.found.iter().map(|f| f.chain.clone()).collect()
    }
}

pub struct Resolver {
    rules: NamespaceRules,
    caches: Arc<Caches>,
    owners: Owners,
}

impl Resolver {
    pub fn new(rules: NamespaceRules, caches: Arc<Caches>, owners: Owners) -> Self {
        Resolver { rules, caches, owners }
    }

    pub fn caches(&self) -> &Arc<Caches> {
        &self.caches
    }

    /// The namespace rules: system, our own, excluded by flag, or annotated
    /// `pullsecret-injector.io/inject: "false"`. A copy in such a namespace is not offered.
    pub fn leaves_alone(&self, ns: &str) -> Option<Skip> {
        if ns.starts_with("kube-") {
            Some(Skip::KubeNamespace)
        } else if ns.starts_with("openshift-")
            && ns != "openshift-operators"
            && !self.rules.included_namespaces.iter().any(|i| i == ns)
        {
            Some(Skip::OpenshiftNamespace)
        } else if ns == self.rules.own_namespace {
            Some(Skip::OwnNamespace)
        } else if self.rules.excluded_namespaces.iter().any(|e| e == ns) {
            Some(Skip::ExcludedNamespace)
        } else if self.caches.namespace(ns).is_some_and(|n| {
            n.metadata.annotations.as_ref().and_then(|a| a.get(INJECT_ANNOTATION)).is_some_and(|v| v == "false")
        }) {
            Some(Skip::OptedOut)
        } else {
            None
        }
    }

    /// The namespace rules, then the fast path: answered from memory, as most admissions are.
    pub fn skip(&self, ns: &str) -> Option<Skip> {
        self.leaves_alone(ns).or_else(|| (!self.caches.index().reaches(ns)).then_some(Skip::NotReached))
    }

    /// The trusted chains from the object to its catalogs, and what each catalog secret needs.
    /// Calls the API server only for owners not seen before.
    pub async fn resolve(&self, subject: &Subject<'_>) -> Result<Resolution, Error> {
        let index = self.caches.index_snapshot();
        let labels = self.namespace_labels(subject.namespace);
        let chains = chain::follow(&index, &self.owners, subject, &labels).await?;
        let mut needs = Vec::new();
        for (source_namespace, source_name) in chains.secrets(&index) {
            let source = self.caches.source_secret(source_namespace, source_name);
            let provision = match usable(source) {
                Err(why) => Provision::Unusable(why),
                Ok(_) if source_namespace == subject.namespace => Provision::Original,
                Ok(source) => Provision::Copy(source),
            };
            needs.push(Need { source_namespace: source_namespace.into(), source_name: source_name.into(), provision });
        }
        Ok(Resolution { chains, needs })
    }

    /// Why `ns` must no longer hold a copy of `source_ns/source_name`, or `None` while it may.
    pub fn not_offered(&self, index: &Index, ns: &str, source_ns: &str, source_name: &str) -> Option<String> {
        if let Some(skip) = self.leaves_alone(ns) {
            return Some(skip.reason().to_string());
        }
        if index.offers(ns, &self.namespace_labels(ns), source_ns, source_name) {
            return None;
        }
        Some(if index.lists_secret(source_ns, source_name) {
            "no operator installed from a catalog listing it reaches this namespace any more".into()
        } else {
            "no CatalogSource with injection on lists it in spec.secrets any more".into()
        })
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.caches.namespace(ns).and_then(|n| n.metadata.labels.clone()).unwrap_or_default()
    }
}
