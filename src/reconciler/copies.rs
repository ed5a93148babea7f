//! The copies sweep: rotation (a copy whose content hash differs from its source is updated, or
//! replaced when the source changed type) and clean-up (a copy whose source is no longer offered
//! to its namespace is removed after the grace period, unless a live Pod still names it).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, Patch};
use kube::core::PartialObjectMeta;
use tracing::{debug, info};

use super::{Memory, Pass, Reconciler, failed, pods, write_params};
use crate::error::Error;
use crate::inject::copies::{self, Ensured};
use crate::inject::patch;
use crate::state::events;
use crate::telemetry::metrics::{self, Action};
use crate::{CONTENT_HASH_ANNOTATION, INJECTED_ANNOTATION, SOURCE_ANNOTATION};

/// A copy whose content differs from its source's.
struct Stale {
    copy: Arc<PartialObjectMeta<Secret>>,
    source: Arc<Secret>,
}

impl Reconciler {
    pub(super) async fn copies_sweep(&self, pass: &Pass<'_>, memory: &mut Memory) {
        let mut stale = Vec::new();
        let mut seen = HashSet::new();
        for copy in self.managed.state() {
            if pass.lost_lead() {
                return;
            }
            let (Some(ns), name) = (copy.namespace(), copy.name_any()) else { continue };
            let Some((source_ns, source_name)) =
                copy.annotations().get(SOURCE_ANNOTATION).and_then(|s| s.split_once('/'))
            else {
                continue;
            };
            let key = format!("{ns}/{name}");
            seen.insert(key.clone());
            match self.ctx.resolver.not_offered(&pass.index, &ns, source_ns, source_name) {
                None => {
                    memory.unwanted_since.remove(&key);
                    let source = self.ctx.caches().source_secret(source_ns, source_name);
                    let Ok(source) = crate::resolve::usable(source) else { continue };
                    if copy.annotations().get(CONTENT_HASH_ANNOTATION) != Some(&copies::content_hash(&source)) {
                        stale.push(Stale { copy: copy.clone(), source });
                    }
                }
                Some(reason) => {
                    let since = *memory.unwanted_since.entry(key).or_insert_with(Instant::now);
                    if since.elapsed() < self.options.cleanup_grace {
                        continue;
                    }
                    if let Some(pod) = self.live_pod_naming(&ns, &name) {
                        debug!(namespace = %ns, copy = %name, %pod, "copy kept: a live Pod still names it");
                        continue;
                    }
                    if let Err(e) = self.remove_copy(pass, &copy, &ns, &name, &reason).await {
                        failed("remove a copy", &ns, &name, e);
                    }
                }
            }
        }
        memory.unwanted_since.retain(|key, _| seen.contains(key));

        if pass.lost_lead() {
            return;
        }
        // Rotation: every stale copy at once, a few requests in flight.
        futures::stream::iter(stale)
            .for_each_concurrent(16, |stale| async move {
                if pass.lost_lead() {
                    return;
                }
                if let Err(e) = self.sync_copy(&stale).await {
                    failed("update a copy", &stale.copy.namespace().unwrap_or_default(), &stale.copy.name_any(), e);
                }
            })
            .await;
    }

    async fn sync_copy(&self, Stale { copy, source }: &Stale) -> Result<(), Error> {
        let (ns, name) = (copy.namespace().unwrap_or_default(), copy.name_any());
        let source_ref = format!("{}/{}", source.namespace().unwrap_or_default(), source.name_any());
        let hash = copies::content_hash(source);
        let copies = &self.ctx.copies;
        if copies.update(&ns, &name, source, &hash, false).await? {
            metrics::reconcile_action(Action::CopySynced);
            info!(namespace = %ns, copy = %name, source = %source_ref, "copy updated from its source");
            let reference = events::reference("Secret", &ns, &name, copy.uid().as_deref());
            self.ctx.events.normal(
                reference,
                events::SYNCED,
                format!("updated from {source_ref}: its content changed"),
            );
            return Ok(());
        }
        // Our copy (label and source annotation are in the cache) that refuses the patch: the
        // source changed type, which is immutable. Replace it under the same name.
        let (Some(uid), Some(version)) = (copy.uid(), copy.resource_version()) else { return Ok(()) };
        copies.delete(&ns, &name, &uid, &version).await?;
        if let Ensured::Created(_) | Ensured::Updated(_) = copies.ensure(&ns, source, false).await? {
            metrics::reconcile_action(Action::CopyReplaced);
            info!(namespace = %ns, copy = %name, source = %source_ref, "copy replaced: the source changed type");
        }
        Ok(())
    }

    /// Our copies in one namespace.
    pub(super) fn copies_in(&self, ns: &str) -> Vec<Arc<PartialObjectMeta<Secret>>> {
        self.managed.state().into_iter().filter(|c| c.namespace().as_deref() == Some(ns)).collect()
    }

    fn live_pod_naming(&self, ns: &str, secret: &str) -> Option<String> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(ns) && !pods::finished(p))
            .find(|p| pods::pull_secret_names(p).contains(&secret))
            .map(|p| p.name_any())
    }

    /// Takes the names we recorded off the namespace's service accounts, then deletes the copy.
    async fn remove_copy(
        &self,
        pass: &Pass<'_>,
        copy: &PartialObjectMeta<Secret>,
        ns: &str,
        name: &str,
        reason: &str,
    ) -> Result<(), Error> {
        let source = copy.annotations().get(SOURCE_ANNOTATION).cloned().unwrap_or_default();
        for sa in self.service_accounts.state().iter().filter(|sa| sa.namespace().as_deref() == Some(ns)) {
            let Some(injected) = sa.annotations().get(INJECTED_ANNOTATION) else { continue };
            let existing: Vec<&str> = sa.image_pull_secrets.iter().flatten().map(|r| r.name.as_str()).collect();
            let Some(removal) = patch::removal(&existing, injected, &[name]) else { continue };
            if pass.lost_lead() {
                return Ok(());
            }
            let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), ns);
            api.patch(&sa.name_any(), &write_params(), &Patch::<()>::Json(removal)).await.map_err(Error::Reconcile)?;
            metrics::reconcile_action(Action::ServiceAccountEntriesRemoved);
            let reference = events::reference("ServiceAccount", ns, &sa.name_any(), sa.uid().as_deref());
            self.ctx.events.normal(
                reference,
                events::REMOVED,
                format!("removed pull secret {name} (copy of {source}): {reason}"),
            );
        }
        let (Some(uid), Some(version)) = (copy.uid(), copy.resource_version()) else { return Ok(()) };
        if pass.lost_lead() {
            return Ok(());
        }
        self.ctx.copies.delete(ns, name, &uid, &version).await?;
        metrics::reconcile_action(Action::CopyRemoved);
        info!(namespace = %ns, copy = %name, %source, %reason, "copy removed after the grace period");
        let reference = events::reference("Secret", ns, name, Some(&uid));
        self.ctx.events.normal(reference, events::REMOVED, format!("deleted copy of {source}: {reason}"));
        Ok(())
    }
}
