//! olm-pullsecret-injector: a mutating admission webhook that gives the Pods and ServiceAccounts
//! of OLM-installed operators (and their operands) the pull secrets of the CatalogSource they came
//! from.
//!
//! The modules follow a review through the process:
//!
//! - [`webhook`]: HTTP in, the AdmissionReview wire format, the decision and its memo, review out;
//! - [`resolve`]: the one answer to "what does this object need?": namespace rules, the trusted
//!   owner chain, the catalogs and the secrets (asked by the webhook, the reconciler and `explain`);
//! - [`inject`]: the managed copies and the JSON patches that list them;
//! - [`reconciler`]: keeps copies true afterwards (one file per sweep), on the replica holding the lease;
//! - [`state`]: what both read from watches: OLM's objects, the index built from them, events;
//! - [`serving`]: HTTPS with TLS reload, the admin port, readiness and shutdown;
//! - [`telemetry`]: metrics and the decision log;
//! - [`runtime`]: wires all of the above from a plain [`runtime::Config`];
//! - [`commands`] and [`cli`]: `serve`, `dev`, `explain`, `certs`; they call the runtime.

/// `kube::Resource` for one of the project's own cluster-scoped kinds (group [`API_GROUP`],
/// version [`API_VERSION`]), a struct with a `metadata` field.
macro_rules! project_resource {
    ($ty:ident, $kind:literal, $plural:literal) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = k8s_openapi::ClusterResourceScope;
            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($kind)
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($crate::API_GROUP)
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($crate::API_VERSION)
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                std::borrow::Cow::Borrowed($plural)
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub mod api_client;
pub mod cli;
pub mod commands;
pub mod context;
pub mod error;
pub mod inject;
pub(crate) mod reconciler;
pub mod resolve;
pub mod runtime;
pub mod serving;
pub mod state;
pub mod telemetry;
pub mod webhook;

pub use context::Context;
pub use webhook::http::router;

/// The image's static musl binary allocates through mimalloc: musl's own allocator serialises
/// threads on one lock, and with it the warm path answered a fifth of the reviews per second of
/// the glibc build. Here rather than in each binary, so that benches built for musl measure
/// what the image runs.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
/// The API group and version of the project's own kinds (the ledger, the links).
pub const API_GROUP: &str = "pullsecret-injector.io";
pub const API_VERSION: &str = "v1alpha1";
