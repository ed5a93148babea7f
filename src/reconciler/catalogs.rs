//! CatalogSources the webhook ignores for a reason the administrator must hear about: a
//! namespace-selector annotation that does not parse (its secrets go nowhere). Reported once per
//! CatalogSource and selector text with a log line and a Warning Event on the CatalogSource.

use tracing::warn;

use super::{Memory, Pass, Reconciler};
use crate::state::events;

impl Reconciler {
    pub(super) fn report_invalid_selectors(&self, pass: &Pass<'_>, memory: &mut Memory) {
        let invalid = pass.index.invalid_selectors();
        for catalog in invalid {
            let key = (catalog.uid.clone(), catalog.selector.clone());
            if !memory.selectors_reported.insert(key) {
                continue;
            }
            let (namespace, name) = (&catalog.namespace, &catalog.name);
            warn!(%namespace, %name, selector = %catalog.selector, error = %catalog.error,
                "invalid pullsecret-injector.io/namespace-selector: the catalog's secrets go to no namespace");
            let note = format!(
                "pullsecret-injector.io/namespace-selector {:?} does not parse ({}): its secrets go to no namespace",
                catalog.selector, catalog.error
            );
            let reference = events::catalog_reference(namespace, name, &catalog.uid);
            self.ctx.events.warning(reference, events::INVALID_SELECTOR, note);
        }
        memory
            .selectors_reported
            .retain(|(uid, selector)| invalid.iter().any(|c| &c.uid == uid && &c.selector == selector));
    }
}
