//! The copies sweep, over the ledger of copies: rotation (a copy recorded at another version
//! than its source's is updated, or replaced when the source changed type), repair (a copy a
//! tenant deleted, altered or took over, as admission observed it, or as the hourly check of each
//! copy finds it) and clean-up (a copy whose source is no longer offered to its namespace is
//! removed after the grace period, unless a live Pod still names it).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, Patch};
use tracing::{debug, info};

use super::{Memory, Pass, Reconciler, failed, pods, write_params};
use crate::INJECTED_ANNOTATION;
use crate::error::Error;
use crate::inject::copies::{self, Ensured, Probe};
use crate::inject::ledger::{Observed, PullSecretCopy};
use crate::inject::patch;
use crate::state::events;
use crate::telemetry::metrics::{self, Action};

/// Every copy is checked (a probe that reads only our own copy) at least this often, so one
/// changed while the webhook was not told (it was down) is found.
const VERIFY_EVERY: Duration = Duration::from_secs(3600);
/// At most this many routine checks per pass: the load stays flat however many copies there are.
const VERIFY_PER_PASS: usize = 64;
/// A copy observed deleted that still exists after this was not deleted after all.
const DELETE_SETTLE: Duration = Duration::from_secs(30);

/// An instant up to `VERIFY_EVERY` in the past, the same for a key on every replica.
fn spread(key: &str) -> Instant {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    let back = Duration::from_secs(hasher.finish() % VERIFY_EVERY.as_secs());
    Instant::now().checked_sub(back).unwrap_or_else(Instant::now)
}

/// A copy recorded at another version than its source's.
struct Stale {
    entry: Arc<PullSecretCopy>,
    source: Arc<Secret>,
}

impl Reconciler {
    pub(super) async fn copies_sweep(&self, pass: &Pass<'_>, memory: &mut Memory) {
        let mut stale = Vec::new();
        let mut seen = HashSet::new();
        let mut routine_checks = 0;
        for entry in self.ledger.state() {
            if pass.lost_lead() {
                return;
            }
            let (ns, name) = (&entry.spec.namespace, &entry.spec.name);
            let Some((source_ns, source_name)) = entry.spec.source.split_once('/') else { continue };
            let key = format!("{ns}/{name}");
            seen.insert(key.clone());
            match self.ctx.resolver.not_offered(&pass.index, ns, source_ns, source_name) {
                None => {
                    memory.unwanted_since.remove(&key);
                    let source = self.ctx.caches().source_secret(source_ns, source_name);
                    let Ok(source) = crate::resolve::usable(source) else { continue };
                    let observed = Observed::of(&entry);
                    // First seen in this term: its routine check falls somewhere in the coming
                    // hour, so a new leader does not check every copy at once.
                    let last = *memory.verified_at.entry(key.clone()).or_insert_with(|| spread(&key));
                    let due = last.elapsed() >= VERIFY_EVERY && routine_checks < VERIFY_PER_PASS;
                    if observed.is_none() && entry.spec.content_hash != copies::content_hash(&source) {
                        stale.push(Stale { entry: entry.clone(), source });
                    } else if observed.is_some() || due {
                        routine_checks += usize::from(observed.is_none());
                        memory.verified_at.insert(key.clone(), Instant::now());
                        let checked = async {
                            let found = self.ctx.copies.probe(ns, name, &entry.spec.source).await?;
                            self.repair(&entry, &source, found, observed, &mut memory.deleted_since).await
                        };
                        if let Err(e) = checked.await {
                            failed("check a copy", ns, name, e);
                        }
                    }
                }
                Some(reason) => {
                    let since = *memory.unwanted_since.entry(key).or_insert_with(Instant::now);
                    if since.elapsed() < self.options.cleanup_grace {
                        continue;
                    }
                    if let Some(pod) = self.live_pod_naming(ns, name) {
                        debug!(namespace = %ns, copy = %name, %pod, "copy kept: a live Pod still names it");
                        continue;
                    }
                    if let Err(e) = self.remove_copy(pass, &entry, &reason).await {
                        failed("remove a copy", ns, name, e);
                    }
                }
            }
        }
        memory.unwanted_since.retain(|key, _| seen.contains(key));
        memory.verified_at.retain(|key, _| seen.contains(key));
        memory.deleted_since.retain(|key, _| seen.contains(key));

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
                    failed("update a copy", &stale.entry.spec.namespace, &stale.entry.spec.name, e);
                }
            })
            .await;
    }

    /// Acts on what a probe `found` of a copy that is still needed (the probe answers only for
    /// our own copy): made again if it is gone, written back if its data is not its source's,
    /// forgotten if the tenant took it over.
    async fn repair(
        &self,
        entry: &PullSecretCopy,
        source: &Arc<Secret>,
        found: Probe,
        observed: Option<Observed>,
        deleted_since: &mut HashMap<String, Instant>,
    ) -> Result<(), Error> {
        let (ns, name) = (entry.spec.namespace.as_str(), entry.spec.name.as_str());
        let key = format!("{ns}/{name}");
        let copies = &self.ctx.copies;
        match found {
            Probe::Missing => {
                copies.forget(ns, name, None);
                let made = copies.ensure(ns, source, false).await?;
                if made.name() != name {
                    copies.ledger().remove(ns, name).await?;
                }
                metrics::reconcile_action(Action::CopyRecreated);
                info!(namespace = %ns, copy = %made.name(), source = %entry.spec.source, "deleted copy made again");
                let reference = events::reference("Secret", ns, made.name(), None);
                self.ctx.events.normal(reference, events::COPIED, format!("copy of {} made again", entry.spec.source));
            }
            Probe::NotOurs => {
                copies.forget(ns, name, None);
                copies.ledger().remove(ns, name).await?;
                metrics::reconcile_action(Action::CopyReleased);
                info!(namespace = %ns, %name, "a secret that was our copy is the tenant's now: left alone");
            }
            Probe::Ours { data, .. } if observed == Some(Observed::Deleted) => {
                // The delete admission saw may still be under way, or was refused.
                let since = *deleted_since.entry(key.clone()).or_insert_with(Instant::now);
                if since.elapsed() >= DELETE_SETTLE {
                    deleted_since.remove(&key);
                    self.restore_if_changed(entry, source, data.as_ref()).await?;
                    copies.ledger().unmark(ns, name, Observed::Deleted).await?;
                }
            }
            Probe::Ours { data, .. } => {
                // A restore records the copy, which takes the observation off itself.
                let restored = self.restore_if_changed(entry, source, data.as_ref()).await?;
                if let (false, Some(seen)) = (restored, observed) {
                    copies.ledger().unmark(ns, name, seen).await?;
                }
            }
        }
        Ok(())
    }

    /// Writes the source's content back over a copy whose data differs; true if it did.
    async fn restore_if_changed(
        &self,
        entry: &PullSecretCopy,
        source: &Secret,
        data: Option<&std::collections::BTreeMap<String, k8s_openapi::ByteString>>,
    ) -> Result<bool, Error> {
        if data == source.data.as_ref() {
            return Ok(false);
        }
        let (ns, name) = (entry.spec.namespace.as_str(), entry.spec.name.as_str());
        self.ctx.copies.forget(ns, name, None);
        let hash = copies::content_hash(source);
        if !self.ctx.copies.update(ns, name, source, &hash, false).await? {
            return Ok(false);
        }
        metrics::reconcile_action(Action::CopyRestored);
        info!(namespace = %ns, copy = %name, source = %entry.spec.source, "altered copy written back from its source");
        let reference = events::reference("Secret", ns, name, None);
        self.ctx.events.normal(
            reference,
            events::SYNCED,
            format!("written back from {}: its data had been changed", entry.spec.source),
        );
        Ok(true)
    }

    async fn sync_copy(&self, Stale { entry, source }: &Stale) -> Result<(), Error> {
        let (ns, name) = (entry.spec.namespace.as_str(), entry.spec.name.as_str());
        let source_ref = &entry.spec.source;
        let hash = copies::content_hash(source);
        let copies = &self.ctx.copies;
        // Refused (`false`), or failed (gone, for one): the probe below says which.
        if copies.update(ns, name, source, &hash, false).await.unwrap_or(false) {
            metrics::reconcile_action(Action::CopySynced);
            info!(namespace = %ns, copy = %name, source = %source_ref, "copy updated from its source");
            let reference = events::reference("Secret", ns, name, None);
            self.ctx.events.normal(
                reference,
                events::SYNCED,
                format!("updated from {source_ref}: its content changed"),
            );
            return Ok(());
        }
        // The patch was refused. Our copy that refuses it has another type (the source changed
        // type, which is immutable): replace it under the same name. Anything else is repaired
        // as a copy found changed.
        let found = copies.probe(ns, name, source_ref).await?;
        if !matches!(found, Probe::Ours { .. }) {
            // Not observed by admission: nothing to settle.
            return self.repair(entry, source, found, None, &mut HashMap::new()).await;
        }
        copies.delete(ns, name, source_ref).await?;
        if let Ensured::Created(_) | Ensured::Updated(_) = copies.ensure(ns, source, false).await? {
            metrics::reconcile_action(Action::CopyReplaced);
            info!(namespace = %ns, copy = %name, source = %source_ref, "copy replaced: the source changed type");
        }
        Ok(())
    }

    /// Our copies in one namespace, as the ledger records them.
    pub(super) fn copies_in(&self, ns: &str) -> Vec<Arc<PullSecretCopy>> {
        self.ledger.state().into_iter().filter(|c| c.spec.namespace == ns).collect()
    }

    fn live_pod_naming(&self, ns: &str, secret: &str) -> Option<String> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(ns) && !pods::finished(p))
            .find(|p| pods::pull_secret_names(p).contains(&secret))
            .map(|p| p.name_any())
    }

    /// Takes the names we recorded off the namespace's service accounts, then deletes the copy
    /// and its ledger entry.
    async fn remove_copy(&self, pass: &Pass<'_>, entry: &PullSecretCopy, reason: &str) -> Result<(), Error> {
        let (ns, name, source) = (entry.spec.namespace.as_str(), entry.spec.name.as_str(), &entry.spec.source);
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
        if pass.lost_lead() {
            return Ok(());
        }
        self.ctx.copies.delete(ns, name, source).await?;
        metrics::reconcile_action(Action::CopyRemoved);
        info!(namespace = %ns, copy = %name, %source, %reason, "copy removed after the grace period");
        let reference = events::reference("Secret", ns, name, None);
        self.ctx.events.normal(reference, events::REMOVED, format!("deleted copy of {source}: {reason}"));
        Ok(())
    }
}
