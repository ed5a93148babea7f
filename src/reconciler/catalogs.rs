//! CatalogSources with secrets that the webhook ignores for a reason the administrator must hear
//! about: a namespace-selector annotation that does not parse (its secrets go nowhere), or a
//! namespace that is not one of the configured catalog namespaces (its secrets are not ours to
//! read). Reported once per CatalogSource and reason with a log line and a Warning Event on it.

use tracing::warn;

use super::{Memory, Pass, Reconciler};
use crate::state::events;
use crate::state::index::Ignored;

impl Reconciler {
    pub(super) fn report_ignored_catalogs(&self, pass: &Pass<'_>, memory: &mut Memory) {
        let ignored = pass.index.ignored();
        for catalog in ignored {
            if !memory.ignored_reported.insert((catalog.uid.clone(), catalog.why.clone())) {
                continue;
            }
            let (namespace, name) = (&catalog.namespace, &catalog.name);
            let (reason, note) = match &catalog.why {
                Ignored::InvalidSelector { selector, error } => {
                    warn!(%namespace, %name, %selector, %error,
                        "invalid pullsecret-injector.io/namespace-selector: the catalog's secrets go to no namespace");
                    let note = format!(
                        "pullsecret-injector.io/namespace-selector {selector:?} does not parse ({error}): its secrets go to no namespace"
                    );
                    (events::INVALID_SELECTOR, note)
                }
                Ignored::NamespaceNotConfigured => {
                    warn!(%namespace, %name,
                        "CatalogSource with secrets outside the configured catalog namespaces: its secrets are not handed out");
                    let note = format!(
                        "namespace {namespace} is not a configured catalog namespace (chart values globalCatalogNamespace, catalogNamespaces): its secrets are not handed out"
                    );
                    (events::NAMESPACE_NOT_CONFIGURED, note)
                }
            };
            let reference = events::catalog_reference(namespace, name, &catalog.uid);
            self.ctx.events.warning(reference, reason, note);
        }
        memory.ignored_reported.retain(|(uid, why)| ignored.iter().any(|c| &c.uid == uid && &c.why == why));
    }
}
