//! The reconciler keeps the copies true after admission, on the one replica that holds the lease
//! ([`crate::lease`]). Each pass works from watch caches and acts only where something is off:
//!
//! - copies: a changed source reaches every copy (content hash); a copy whose source is no longer
//!   offered to its namespace is deleted after the grace period, unless a live Pod still names it,
//!   and the names we recorded on service accounts are removed with it;
//! - service accounts that resolve to a catalog but lack its secrets are backfilled (add-only);
//! - pods that were admitted without the secrets they need are reported, and with `--heal-pods`
//!   the controller-owned ones are deleted so their controller recreates them through the webhook.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus, Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::admission::Settings;
use crate::caches::Caches;
use crate::chain::{self, Subject};
use crate::copies::{self, Copies, Ensured};
use crate::error::Error;
use crate::events::{self, Events};
use crate::index::Index;
use crate::owners::{OwnerRef, Owners};
use crate::patch::{self, Target};
use crate::{CONTENT_HASH_ANNOTATION, INJECTED_ANNOTATION, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_ANNOTATION};

#[derive(Clone, Debug)]
pub struct Options {
    /// How long a copy stays after its source stopped being offered to its namespace: covers
    /// in-flight admissions and Pods rejected after mutation.
    pub cleanup_grace: Duration,
    pub heal_pods: bool,
}

/// Pods of one controller are deleted at most this often, so a webhook that is still not
/// called cannot turn healing into a restart loop.
const HEAL_BACKOFF: Duration = Duration::from_secs(60);
/// Pods are healed only once this replica has served this long: the Service endpoints and the
/// webhook configuration must reach the API server first, or the replacement Pod would be
/// admitted without its secrets too.
const HEAL_WARMUP: Duration = Duration::from_secs(10);
/// A pass runs at least this often (grace periods expire without any event).
const RESYNC: Duration = Duration::from_secs(10);

pub struct Reconciler {
    settings: Settings,
    options: Options,
    client: kube::Client,
    caches: Arc<Caches>,
    owners: Arc<Owners>,
    copies: Arc<Copies>,
    events: Events,
    pods: Store<Pod>,
    service_accounts: Store<ServiceAccount>,
    /// Our copies, metadata only, found by their managed-by label.
    managed: Store<PartialObjectMeta<Secret>>,
    changed: Arc<Notify>,
    started: Instant,
}

/// What one leader term remembers between passes.
#[derive(Default)]
struct Memory {
    unwanted_since: HashMap<String, Instant>,
    /// ServiceAccount uid → (resourceVersion, caches generation) it was last found complete at.
    service_accounts_done: HashMap<String, (String, u64)>,
    /// Pod uid → caches generation it was last checked at.
    pods_checked: HashMap<String, u64>,
    pods_reported: HashSet<String>,
    healed_controllers: HashMap<String, Instant>,
}

impl Reconciler {
    /// Starts the watches the reconciler needs (on every replica, so a takeover is immediate).
    pub fn start(
        settings: Settings,
        options: Options,
        client: kube::Client,
        caches: Arc<Caches>,
        owners: Arc<Owners>,
        copies: Arc<Copies>,
        events: Events,
    ) -> Arc<Reconciler> {
        let changed = Arc::new(Notify::new());
        let notify = |changed: &Arc<Notify>| {
            let changed = changed.clone();
            move || changed.notify_one()
        };
        let (pods, pods_w) = reflector::store();
        let stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).modify(trim_pod);
        tokio::spawn(crate::caches::reflect(stream, pods_w, "pods", notify(&changed)));
        let (service_accounts, sas_w) = reflector::store();
        let stream = watcher(Api::<ServiceAccount>::all(client.clone()), watcher::Config::default())
            .modify(|sa: &mut ServiceAccount| sa.secrets = None);
        tokio::spawn(crate::caches::reflect(stream, sas_w, "serviceaccounts", notify(&changed)));
        let (managed, managed_w) = reflector::store();
        let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}");
        let copies_api = Api::<PartialObjectMeta<Secret>>::all(client.clone());
        let stream = watcher(copies_api, watcher::Config::default().labels(&selector));
        tokio::spawn(crate::caches::reflect(stream, managed_w, "managed copies", notify(&changed)));
        Arc::new(Reconciler {
            settings,
            options,
            client,
            caches,
            owners,
            copies,
            events,
            pods,
            service_accounts,
            managed,
            changed,
            started: Instant::now(),
        })
    }

    /// Reconciles while `leading` says so; passes run on changes and at least every 10 s.
    pub async fn run(self: Arc<Self>, mut leading: watch::Receiver<bool>) {
        let _ = self.pods.wait_until_ready().await;
        let _ = self.service_accounts.wait_until_ready().await;
        let _ = self.managed.wait_until_ready().await;
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            crate::metrics::set_leader(true);
            // A new term: what the previous leader did is only known from the caches.
            let mut memory = Memory::default();
            while *leading.borrow() {
                let generation = self.caches.generation();
                self.pass(&mut memory, &leading).await;
                tokio::select! {
                    _ = self.changed.notified() => {
                        // Coalesce a burst of watch events into one pass.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ = self.wait_generation_change(generation) => {}
                    _ = tokio::time::sleep(RESYNC) => {}
                    _ = leading.changed() => {}
                }
            }
            crate::metrics::set_leader(false);
        }
    }

    async fn wait_generation_change(&self, seen: u64) {
        while self.caches.generation() == seen {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One pass; it stops early when leadership is lost, so two replicas never act at once.
    async fn pass(&self, memory: &mut Memory, leading: &watch::Receiver<bool>) {
        let index = self.caches.index_snapshot();
        let generation = self.caches.generation();
        self.reconcile_copies(&index, memory, leading).await;
        self.backfill_service_accounts(&index, generation, memory, leading).await;
        self.check_pods(&index, generation, memory, leading).await;
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.caches.namespace(ns).and_then(|n| n.metadata.labels.clone()).unwrap_or_default()
    }

    /// Why `ns` must not hold copies of `source`, or `None` when it may.
    fn not_offered(&self, index: &Index, ns: &str, source_ns: &str, source_name: &str) -> Option<String> {
        if let Some(reason) = self.settings.leaves_alone(ns, self.caches.namespace(ns).as_deref()) {
            return Some(reason.to_string());
        }
        if index.offers(ns, &self.namespace_labels(ns), source_ns, source_name) {
            return None;
        }
        Some(if index.lists_secret(source_ns, source_name) {
            "no operator installed from a catalog listing it reaches this namespace any more".into()
        } else {
            "no CatalogSource with injection on lists it in spec.secrets any more".into()
        })
    }

    async fn reconcile_copies(&self, index: &Index, memory: &mut Memory, leading: &watch::Receiver<bool>) {
        let mut stale: Vec<(Arc<PartialObjectMeta<Secret>>, Arc<Secret>)> = Vec::new();
        let mut seen = HashSet::new();
        for copy in self.managed.state() {
            if !*leading.borrow() {
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
            match self.not_offered(index, &ns, source_ns, source_name) {
                None => {
                    memory.unwanted_since.remove(&key);
                    let Some(source) = self.caches.source_secret(source_ns, source_name).await else { continue };
                    if copies::unusable(Some(&source)).is_some() {
                        continue;
                    }
                    if copy.annotations().get(CONTENT_HASH_ANNOTATION) != Some(&copies::content_hash(&source)) {
                        stale.push((copy.clone(), source));
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
                    if let Err(e) = self.remove_copy(&copy, &ns, &name, &reason).await {
                        crate::metrics::reconcile_error();
                        warn!(namespace = %ns, copy = %name, error = %e, "could not remove a copy");
                    }
                }
            }
        }
        memory.unwanted_since.retain(|key, _| seen.contains(key));

        if !*leading.borrow() {
            return;
        }
        // Rotation: every stale copy at once, a few requests in flight.
        futures::stream::iter(stale)
            .for_each_concurrent(16, |(copy, source)| async move {
                if let Err(e) = self.sync_copy(&copy, &source).await {
                    crate::metrics::reconcile_error();
                    warn!(namespace = copy.namespace().unwrap_or_default(), copy = %copy.name_any(), error = %e, "could not update a copy");
                }
            })
            .await;
    }

    async fn sync_copy(&self, copy: &PartialObjectMeta<Secret>, source: &Secret) -> Result<(), Error> {
        let (ns, name) = (copy.namespace().unwrap_or_default(), copy.name_any());
        let source_ref = format!("{}/{}", source.namespace().unwrap_or_default(), source.name_any());
        let hash = copies::content_hash(source);
        if self.copies.update(&ns, &name, source, &hash, false).await? {
            crate::metrics::reconcile_action("copy_synced");
            info!(namespace = %ns, copy = %name, source = %source_ref, "copy updated from its source");
            let reference = events::reference("Secret", &ns, &name, copy.uid().as_deref());
            self.events.normal(reference, events::SYNCED, format!("updated from {source_ref}: its content changed"));
            return Ok(());
        }
        // Our copy (label and source annotation are in the cache) that refuses the patch: the
        // source changed type, which is immutable. Replace it under the same name.
        let (Some(uid), Some(version)) = (copy.uid(), copy.resource_version()) else { return Ok(()) };
        self.copies.delete(&ns, &name, &uid, &version).await?;
        if let Ensured::Created(_) | Ensured::Updated(_) = self.copies.ensure(&ns, source, false).await? {
            crate::metrics::reconcile_action("copy_replaced");
            info!(namespace = %ns, copy = %name, source = %source_ref, "copy replaced: the source changed type");
        }
        Ok(())
    }

    /// Our copies in one namespace (a pass reads the store once per Pod that needs secrets).
    fn copies_in(&self, ns: &str) -> Vec<Arc<PartialObjectMeta<Secret>>> {
        self.managed.state().into_iter().filter(|c| c.namespace().as_deref() == Some(ns)).collect()
    }

    fn live_pod_naming(&self, ns: &str, secret: &str) -> Option<String> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(ns) && !finished(p))
            .find(|p| pull_secret_names(p).contains(&secret))
            .map(|p| p.name_any())
    }

    /// Takes the names we recorded off the namespace's service accounts, then deletes the copy.
    async fn remove_copy(
        &self,
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
            let patch: json_patch::Patch = serde_json::from_slice(&removal).expect("removal patch is valid");
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
            api.patch(&sa.name_any(), &write_params(), &Patch::<()>::Json(patch)).await.map_err(Error::Reconcile)?;
            crate::metrics::reconcile_action("service_account_entries_removed");
            let reference = events::reference("ServiceAccount", ns, &sa.name_any(), sa.uid().as_deref());
            self.events.normal(
                reference,
                events::REMOVED,
                format!("removed pull secret {name} (copy of {source}): {reason}"),
            );
        }
        let (Some(uid), Some(version)) = (copy.uid(), copy.resource_version()) else { return Ok(()) };
        self.copies.delete(ns, name, &uid, &version).await?;
        crate::metrics::reconcile_action("copy_removed");
        info!(namespace = %ns, copy = %name, %source, %reason, "copy removed after the grace period");
        let reference = events::reference("Secret", ns, name, Some(&uid));
        self.events.normal(reference, events::REMOVED, format!("deleted copy of {source}: {reason}"));
        Ok(())
    }

    /// The catalogs' pull secrets an object needs, as (source namespace, name), by the same
    /// trusted chain as admission.
    async fn needed(
        &self,
        index: &Index,
        kind: &str,
        ns: &str,
        name: &str,
        owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    ) -> Result<Vec<Arc<Secret>>, Error> {
        let labels = self.namespace_labels(ns);
        let subject = Subject {
            kind,
            namespace: ns,
            name,
            owner_references: owners.iter().cloned().map(OwnerRef::from).collect(),
            namespace_labels: &labels,
        };
        let resolution = chain::resolve(index, &self.owners, &subject).await?;
        let mut sources = Vec::new();
        for (source_ns, source_name) in resolution.secrets(index) {
            if let Some(source) = self.caches.source_secret(source_ns, source_name).await
                && copies::unusable(Some(&source)).is_none()
            {
                sources.push(source);
            }
        }
        Ok(sources)
    }

    async fn backfill_service_accounts(
        &self,
        index: &Index,
        generation: u64,
        memory: &mut Memory,
        leading: &watch::Receiver<bool>,
    ) {
        for sa in self.service_accounts.state() {
            if !*leading.borrow() {
                return;
            }
            let (Some(ns), Some(uid), Some(version)) = (sa.namespace(), sa.uid(), sa.resource_version()) else {
                continue;
            };
            if !index.reaches(&ns) || self.settings.leaves_alone(&ns, self.caches.namespace(&ns).as_deref()).is_some() {
                continue;
            }
            if memory.service_accounts_done.get(&uid) == Some(&(version.clone(), generation)) {
                continue;
            }
            match self.backfill(index, &sa, &ns).await {
                Ok(()) => {
                    memory.service_accounts_done.insert(uid, (version, generation));
                }
                Err(e) => {
                    crate::metrics::reconcile_error();
                    warn!(namespace = %ns, service_account = %sa.name_any(), error = %e, "could not backfill a service account");
                }
            }
        }
        let live: HashSet<String> = self.service_accounts.state().iter().filter_map(|sa| sa.uid()).collect();
        memory.service_accounts_done.retain(|uid, _| live.contains(uid));
    }

    async fn backfill(&self, index: &Index, sa: &ServiceAccount, ns: &str) -> Result<(), Error> {
        let name = sa.name_any();
        let sources = self.needed(index, "ServiceAccount", ns, &name, sa.owner_references()).await?;
        let mut wanted = Vec::new();
        for source in &sources {
            if source.namespace().as_deref() == Some(ns) {
                wanted.push(source.name_any());
            } else {
                wanted.push(self.copies.ensure(ns, source, false).await?.name().to_string());
            }
        }
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
        let mut ops: Vec<serde_json::Value> = serde_json::from_slice(&addition.patch).expect("addition patch is JSON");
        let version = sa.resource_version().unwrap_or_default();
        ops.insert(0, serde_json::json!({ "op": "test", "path": "/metadata/resourceVersion", "value": version }));
        let patch: json_patch::Patch = serde_json::from_value(ops.into()).expect("addition patch is valid");
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        api.patch(&name, &write_params(), &Patch::<()>::Json(patch)).await.map_err(Error::Reconcile)?;
        crate::metrics::reconcile_action("service_account_backfilled");
        let added = addition.added.join(", ");
        info!(namespace = %ns, service_account = %name, %added, "service account backfilled");
        let reference = events::reference("ServiceAccount", ns, &name, sa.uid().as_deref());
        self.events.normal(
            reference,
            events::SYNCED,
            format!("added pull secrets {added} from its operator's catalog"),
        );
        Ok(())
    }

    async fn check_pods(&self, index: &Index, generation: u64, memory: &mut Memory, leading: &watch::Receiver<bool>) {
        for pod in self.pods.state() {
            if !*leading.borrow() {
                return;
            }
            let (Some(ns), Some(uid)) = (pod.namespace(), pod.uid()) else { continue };
            if finished(&pod)
                || pod.meta().deletion_timestamp.is_some()
                || !index.reaches(&ns)
                || self.settings.leaves_alone(&ns, self.caches.namespace(&ns).as_deref()).is_some()
                || memory.pods_checked.get(&uid) == Some(&generation)
            {
                continue;
            }
            match self.check_pod(index, &pod, &ns, &uid, memory).await {
                Ok(true) => {
                    memory.pods_checked.insert(uid, generation);
                }
                Ok(false) => {}
                Err(e) => {
                    crate::metrics::reconcile_error();
                    warn!(namespace = %ns, pod = %pod.name_any(), error = %e, "could not check a pod");
                }
            }
        }
        let live: HashSet<String> = self.pods.state().iter().filter_map(|p| p.uid()).collect();
        memory.pods_checked.retain(|uid, _| live.contains(uid));
        memory.pods_reported.retain(|uid| live.contains(uid));
    }

    /// Reports (once) and heals a Pod that lacks secrets; `false` when it must be looked at again
    /// (healing is warming up or backing off).
    async fn check_pod(
        &self,
        index: &Index,
        pod: &Pod,
        ns: &str,
        uid: &str,
        memory: &mut Memory,
    ) -> Result<bool, Error> {
        let name = pod.name_any();
        let sources = self.needed(index, "Pod", ns, &name, pod.owner_references()).await?;
        let listed = pull_secret_names(pod);
        let copies_here: Vec<Arc<PartialObjectMeta<Secret>>> =
            if sources.is_empty() { Vec::new() } else { self.copies_in(ns) };
        let missing: Vec<String> = sources
            .iter()
            .filter(|source| {
                let (source_ns, source_name) = (source.namespace().unwrap_or_default(), source.name_any());
                if source_ns == ns {
                    return !listed.contains(&source_name.as_str());
                }
                let source_ref = format!("{source_ns}/{source_name}");
                !copies_here.iter().any(|copy| {
                    copy.annotations().get(SOURCE_ANNOTATION) == Some(&source_ref)
                        && listed.contains(&copy.name_any().as_str())
                })
            })
            .map(|source| format!("{}/{}", source.namespace().unwrap_or_default(), source.name_any()))
            .collect();
        if missing.is_empty() {
            return Ok(true);
        }
        let missing = missing.join(", ");
        let controller = pod.owner_references().iter().find(|r| r.controller == Some(true));
        if memory.pods_reported.insert(uid.to_string()) {
            crate::metrics::reconcile_action("pod_missing_pull_secret");
            warn!(namespace = %ns, pod = %name, %missing, "pod was admitted without the pull secrets it needs");
            let note = format!(
                "admitted without the pull secrets of its operator's catalog ({missing}), probably while the webhook \
                 was not called; {}",
                if self.options.heal_pods && controller.is_some_and(|c| heals(&c.kind)) {
                    "deleting it so that its controller recreates it"
                } else {
                    "recreate it to get them"
                }
            );
            self.events.warning(events::reference("Pod", ns, &name, Some(uid)), events::POD_MISSING, note);
        }
        let Some(controller) = controller.filter(|c| self.options.heal_pods && heals(&c.kind)) else {
            return Ok(true);
        };
        if self.started.elapsed() < HEAL_WARMUP
            || memory.healed_controllers.get(&controller.uid).is_some_and(|at| at.elapsed() < HEAL_BACKOFF)
        {
            return Ok(false);
        }
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        };
        match Api::<Pod>::namespaced(self.client.clone(), ns).delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(e) => return Err(Error::Reconcile(e)),
        }
        memory.healed_controllers.insert(controller.uid.clone(), Instant::now());
        crate::metrics::reconcile_action("pod_healed");
        info!(namespace = %ns, pod = %name, controller = %format!("{}/{}", controller.kind, controller.name), %missing, "pod deleted so that its controller recreates it with its pull secrets");
        Ok(true)
    }
}

/// Controllers that recreate a deleted Pod from their template.
fn heals(kind: &str) -> bool {
    matches!(kind, "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job")
}

fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn pull_secret_names(pod: &Pod) -> Vec<&str> {
    pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()).map(|r| r.name.as_str()).collect()
}

/// Keeps of a Pod only what the reconciler reads: identity, owners, pull secrets and phase.
fn trim_pod(pod: &mut Pod) {
    pod.metadata.labels = None;
    pod.metadata.annotations = None;
    let image_pull_secrets = pod.spec.as_mut().and_then(|s| s.image_pull_secrets.take());
    pod.spec = Some(PodSpec { image_pull_secrets, containers: Vec::new(), ..Default::default() });
    let phase = pod.status.as_mut().and_then(|s| s.phase.take());
    pod.status = Some(PodStatus { phase, ..Default::default() });
}

fn write_params() -> PatchParams {
    PatchParams { field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_pod_keeps_what_is_read() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u", "labels": {"a": "b"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "ru", "controller": true}]},
            "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "X", "value": "y"}]}],
                "imagePullSecrets": [{"name": "s"}], "serviceAccountName": "sa"},
            "status": {"phase": "Running", "podIP": "10.0.0.1"}
        }))
        .unwrap();
        trim_pod(&mut pod);
        assert_eq!(pull_secret_names(&pod), ["s"]);
        assert_eq!(pod.owner_references()[0].name, "r");
        assert!(pod.spec.as_ref().unwrap().containers.is_empty());
        assert!(pod.metadata.labels.is_none());
        assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
        assert!(pod.status.as_ref().unwrap().pod_ip.is_none());
        assert!(!finished(&pod));
    }

    #[test]
    fn only_template_controllers_are_healed() {
        assert!(heals("ReplicaSet") && heals("StatefulSet") && heals("DaemonSet") && heals("Job"));
        assert!(!heals("Node") && !heals("Deployment") && !heals("EtcdCluster"));
    }
}
