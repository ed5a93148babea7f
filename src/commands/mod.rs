//! The commands besides `serve`: [`dev`] (the local control plane with the webhook registered),
//! [`explain`] (why an object has or lacks its pull secrets) and [`certs`] (a development pair).
//! They call the runtime and the resolver; nothing below calls them.

pub mod certs;
pub mod dev;
pub mod explain;

use crate::state::index::CatalogNamespaces;

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
