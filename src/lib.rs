//! olm-pullsecret-injector: a mutating admission webhook that gives the Pods and ServiceAccounts
//! of OLM-installed operators (and their operands) the pull secrets of the CatalogSource they came
//! from.
//!
//! Data flow: HTTP in ([`handler`]) → review ([`review`]) → resolve the owner chain ([`chain`],
//! over [`owners`] and the [`index`] built by [`caches`]) → ensure copies ([`copies`]) → build
//! the patch ([`patch`]) → review out. [`admission`] ties one decision together.
//!
//! Beside it, the [`reconciler`] (on the replica holding the [`lease`]) keeps copies true,
//! cleans up, backfills service accounts and reports pods admitted without their secrets; it
//! shares the caches, owner lookups and copies with admission, and reports through [`events`].

pub mod admin;
pub mod admission;
pub mod caches;
pub mod certs;
pub mod chain;
pub mod cli;
pub mod copies;
pub mod dev;
pub mod error;
pub mod events;
pub mod explain;
pub mod handler;
pub mod index;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod olm;
pub mod owners;
pub mod patch;
pub mod reconciler;
pub mod review;
pub mod server;
pub mod tls;

pub use handler::router;

/// Label on every managed copy.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "olm-pullsecret-injector";
/// `<namespace>/<name>` of the source secret, on a copy.
pub const SOURCE_ANNOTATION: &str = "pullsecret-injector.io/source";
pub const SOURCE_UID_ANNOTATION: &str = "pullsecret-injector.io/source-uid";
pub const CONTENT_HASH_ANNOTATION: &str = "pullsecret-injector.io/content-hash";
/// Names this webhook added to a ServiceAccount's `imagePullSecrets`, comma-separated.
pub const INJECTED_ANNOTATION: &str = "pullsecret-injector.io/injected";
/// `"false"` on a Namespace or CatalogSource turns injection off for it.
pub const INJECT_ANNOTATION: &str = "pullsecret-injector.io/inject";
/// A label selector on namespaces, on a CatalogSource: where its secrets may go.
pub const NAMESPACE_SELECTOR_ANNOTATION: &str = "pullsecret-injector.io/namespace-selector";
/// Server-side field manager of every write.
pub const FIELD_MANAGER: &str = "olm-pullsecret-injector";
