//! The service-accounts sweep: one that resolves to a catalog but lacks its secrets (created
//! before the webhook, or rewritten by another controller) gets them with an add-only patch,
//! guarded by a `test` of the resourceVersion it was read at.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;
use tracing::info;

use super::{Checked, Memory, Pass, Reconciler, failed, forget_gone, write_params};
use crate::INJECTED_ANNOTATION;
use crate::error::Error;
use crate::inject::patch::{self, Target, pointer, test};
use crate::resolve::{Kind, Subject};
use crate::state::events;
use crate::telemetry::metrics::{self, Action};

impl Reconciler {
    pub(super) async fn service_accounts_sweep(&self, pass: &Pass<'_>, memory: &mut Memory) {
        for sa in self.service_accounts.state() {
            if pass.lost_lead() {
                return;
            }
            let (Some(ns), Some(uid), Some(version)) = (sa.namespace(), sa.uid(), sa.resource_version()) else {
                continue;
            };
            if self.ctx.resolver.skip(&ns).is_some() {
                continue;
            }
            let checked = Checked { resource_version: version, generation: pass.generation };
            if memory.service_accounts_done.get(&uid) == Some(&checked) {
                continue;
            }
            match self.backfill(pass, &sa, &ns).await {
                Ok(()) => {
                    memory.service_accounts_done.insert(uid, checked);
                }
                Err(e) => failed("backfill a service account", &ns, &sa.name_any(), e),
            }
        }
        let live: HashSet<String> = self.service_accounts.state().iter().filter_map(|sa| sa.uid()).collect();
        forget_gone(&mut memory.service_accounts_done, &live);
    }

    async fn backfill(&self, pass: &Pass<'_>, sa: &ServiceAccount, ns: &str) -> Result<(), Error> {
        let name = sa.name_any();
        let subject = Subject::of(Kind::ServiceAccount, ns, &name, sa.owner_references());
        let resolution = self.ctx.resolver.resolve(&subject).await?;
        if pass.lost_lead() {
            return Ok(());
        }
        let wanted = self.ctx.copies.ensure_all(ns, &resolution.needs, false).await?;
        let existing: Option<Vec<&str>> =
            sa.image_pull_secrets.as_ref().map(|list| list.iter().map(|r| r.name.as_str()).collect());
        let annotations = sa.metadata.annotations.as_ref();
        let Some(addition) = patch::build(
            Target::ServiceAccount,
            existing.as_deref(),
            &wanted,
            annotations.is_some(),
            annotations.and_then(|a| a.get(INJECTED_ANNOTATION)).map(String::as_str),
        ) else {
            return Ok(());
        };
        // Only against the version read: a concurrent writer makes the patch fail, and the next
        // pass looks again.
        let mut operations = addition.operations;
        let version = sa.resource_version().unwrap_or_default();
        operations.0.insert(0, test(pointer(["metadata", "resourceVersion"]), json!(version)));
        if pass.lost_lead() {
            return Ok(());
        }
        let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), ns);
        api.patch(&name, &write_params(), &Patch::<()>::Json(operations)).await.map_err(Error::Reconcile)?;
        metrics::reconcile_action(Action::ServiceAccountBackfilled);
        let added = addition.added.join(", ");
        info!(namespace = %ns, service_account = %name, %added, "service account backfilled");
        let reference = events::reference("ServiceAccount", ns, &name, sa.uid().as_deref());
        self.ctx.events.normal(
            reference,
            events::SYNCED,
            format!("added pull secrets {added} from its operator's catalog"),
        );
        Ok(())
    }
}
