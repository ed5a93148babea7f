//! The commands besides `serve`: [`dev`] (the local control plane with the webhook registered),
//! [`explain`] (why an object has or lacks its pull secrets), [`cleanup`] (take back every copy and
//! entry), [`certs`] (a development pair) and the kubectl [`plugin`]. They call the runtime and the
//! resolver; nothing below calls them.

pub mod certs;
pub mod cleanup;
pub mod dev;
pub mod explain;
pub mod plugin;

use crate::resolve::NamespaceRules;
use crate::state::index::CatalogNamespaces;

/// Which namespaces are left alone: flags of `serve` that `explain` takes too.
#[derive(clap::Args, Debug, Clone)]
pub struct NamespaceArgs {
    /// The webhook's own namespace (never mutated).
    #[arg(long, env = "POD_NAMESPACE", default_value = crate::runtime::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// The namespaces left alone besides the webhook's own.
#[derive(clap::Args, Debug, Clone)]
pub struct ScopeArgs {
    /// Further namespaces to leave alone (repeat or comma-separate).
    #[arg(long, env = "PSI_EXCLUDE_NAMESPACE", value_delimiter = ',')]
    pub exclude_namespace: Vec<String>,
    /// `openshift-*` namespaces to handle after all (repeat or comma-separate); `kube-*` and the
    /// webhook's own namespace are always left alone.
    #[arg(long, env = "PSI_INCLUDE_NAMESPACE", value_delimiter = ',', value_parser = parse_included)]
    pub include_namespace: Vec<String>,
}

fn parse_included(name: &str) -> Result<String, String> {
    match name.starts_with("openshift-") {
        true => Ok(name.to_string()),
        false => Err(format!("{name:?}: only openshift-* namespaces are excluded by default")),
    }
}

impl ScopeArgs {
    /// The rules, with the webhook's own namespace.
    pub fn rules(self, own_namespace: String) -> NamespaceRules {
        NamespaceRules {
            own_namespace,
            excluded_namespaces: self.exclude_namespace,
            included_namespaces: self.include_namespace,
        }
    }
}

impl From<NamespaceArgs> for NamespaceRules {
    fn from(args: NamespaceArgs) -> Self {
        args.scope.rules(args.namespace)
    }
}

/// Where catalogs count: flags of `serve` that `explain` takes too, so both resolve alike.
#[derive(clap::Args, Debug, Clone)]
pub struct CatalogArgs {
    /// OLM's global catalog namespace: its catalogs serve Subscriptions in every namespace
    /// (OpenShift: openshift-marketplace; upstream OLM: olm).
    #[arg(long, env = "PSI_GLOBAL_CATALOG_NAMESPACE", default_value = "openshift-marketplace")]
    pub global_catalog_namespace: String,
    /// Further namespaces with CatalogSources whose secrets are handed out (repeat or
    /// comma-separate); a catalog there serves only Subscriptions in its own namespace, as in OLM.
    #[arg(long, env = "PSI_CATALOG_NAMESPACE", value_delimiter = ',')]
    pub catalog_namespace: Vec<String>,
}

impl From<CatalogArgs> for CatalogNamespaces {
    fn from(args: CatalogArgs) -> Self {
        CatalogNamespaces { global: args.global_catalog_namespace, private: args.catalog_namespace }
    }
}
