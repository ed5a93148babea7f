//! What the webhook and the reconciler share: the resolver (over the watch caches and the owner
//! cache), the copies, the Events recorder and the API client. One value instead of long
//! argument lists.

use std::sync::Arc;

use crate::inject::copies::Copies;
use crate::resolve::Resolver;
use crate::resolve::owners::Owners;
use crate::state::caches::Caches;
use crate::state::events::Events;

pub struct Context {
    pub client: kube::Client,
    pub resolver: Resolver,
    pub copies: Copies,
    pub(crate) events: Events,
}

impl Context {
    /// `identity` names this replica in the Events it publishes.
    pub fn new(
        client: kube::Client,
        caches: Arc<Caches>,
        owners: Owners,
        rules: crate::resolve::NamespaceRules,
        identity: &str,
    ) -> Arc<Context> {
        let events = Events::new(client.clone(), identity);
        Arc::new(Context {
            resolver: Resolver::new(rules, caches, owners),
            copies: Copies::new(client.clone(), events.clone()),
            events,
            client,
        })
    }

    pub fn caches(&self) -> &Arc<Caches> {
        self.resolver.caches()
    }
}
