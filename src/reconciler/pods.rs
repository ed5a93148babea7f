//! The pods sweep: a Pod admitted without the secrets it needs (the webhook was not called) is
//! reported once with a Warning Event; with `--heal-pods` a controller-owned one is evicted (the
//! Eviction API respects PodDisruptionBudgets) so that its controller recreates it through the
//! webhook, at most a few times per controller, and only once the webhook is known to be called
//! again: a Pod admitted with its secrets after the one to evict, or else the replacement of a
//! single eviction (the canary) that must come back with its secrets before any other.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::{Memory, Pass, Reconciler, failed, forget_gone};
use crate::error::Error;
use crate::inject::copies::copies_of;
use crate::resolve::{Kind, Provision, Subject};
use crate::state::events;
use crate::telemetry::metrics::{self, Action};

/// Pods of one controller are deleted at most this often, so a webhook that is still not
/// called cannot turn healing into a restart loop.
const HEAL_BACKOFF: Duration = Duration::from_secs(60);
/// Pods are healed only once this replica has served this long: the Service endpoints and the
/// webhook configuration must reach the API server first, or the replacement Pod would be
/// admitted without its secrets too.
const HEAL_WARMUP: Duration = Duration::from_secs(10);
/// Pods of one controller are evicted at most this many times in a leader's term: replacements
/// that still lack their secrets mean the webhook is not called, and evicting more would only
/// restart the workload in a loop.
const MAX_HEALS: u32 = 3;
/// How long one eviction request may take.
const EVICTION_TIMEOUT: Duration = Duration::from_secs(5);
/// While the webhook is not known to be called, one eviction (the canary) at most this often.
const CANARY_EVERY: Duration = Duration::from_secs(120);

/// Reports of Pods admitted without their secrets: one Event per owning controller (or bare Pod)
/// at most this often, however many of its Pods there are.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// And at most this many such Events a minute in all: an outage in a large cluster must not turn
/// into a flood of writes to the API server. The rest wait for the next minute.
const REPORTS_PER_MINUTE: u32 = 20;
/// Pods named in one report.
const NAMED_PER_REPORT: usize = 3;

/// Pods admitted without their secrets, by owner, waiting to be reported.
#[derive(Default)]
pub(super) struct Unreported {
    by_owner: HashMap<String, OwnerReport>,
    /// The minute the budget counts from, and the Events published in it.
    budget: Option<(Instant, u32)>,
}

struct OwnerReport {
    regarding: ObjectReference,
    what: String,
    /// Pods seen without their secrets; `reported` of them are in a published Event.
    pods: usize,
    reported: usize,
    names: Vec<String>,
    missing: String,
    healing: bool,
    last: Option<Instant>,
}

impl Unreported {
    fn add(&mut self, pod: &Pod, ns: &str, missing: &str, healing: bool) {
        let controller = pod.owner_references().iter().find(|r| r.controller == Some(true));
        let (key, regarding, what) = match controller {
            Some(c) => {
                let reference = ObjectReference {
                    api_version: Some(c.api_version.clone()),
                    ..events::reference(&c.kind, ns, &c.name, Some(&c.uid))
                };
                (c.uid.clone(), reference, format!("{} {}", c.kind, c.name))
            }
            None => {
                let uid = pod.uid().unwrap_or_default();
                (
                    uid.clone(),
                    events::reference("Pod", ns, &pod.name_any(), Some(&uid)),
                    format!("Pod {}", pod.name_any()),
                )
            }
        };
        let report = self.by_owner.entry(key).or_insert_with(|| OwnerReport {
            regarding,
            what,
            pods: 0,
            reported: 0,
            names: Vec::new(),
            missing: missing.to_string(),
            healing,
            last: None,
        });
        report.pods += 1;
        if report.names.len() < NAMED_PER_REPORT {
            report.names.push(pod.name_any());
        }
    }

    /// The reports due now, within the budget; each marked published.
    fn due(&mut self) -> Vec<(ObjectReference, String, String)> {
        let budget = self.budget.get_or_insert((Instant::now(), 0));
        if budget.0.elapsed() >= Duration::from_secs(60) {
            *budget = (Instant::now(), 0);
        }
        let mut due = Vec::new();
        for report in self.by_owner.values_mut() {
            if report.pods == report.reported || report.last.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
                continue;
            }
            if budget.1 >= REPORTS_PER_MINUTE {
                break;
            }
            budget.1 += 1;
            let named = report.names.join(", ");
            let note = format!(
                "{} Pod(s) of {} admitted without the pull secrets of their operator's catalog ({}), e.g. {named}, \
                 probably while the webhook was not called; {}",
                report.pods,
                report.what,
                report.missing,
                if report.healing {
                    "evicting them so that the controller recreates them"
                } else {
                    "recreate them to get them"
                }
            );
            report.reported = report.pods;
            report.last = Some(Instant::now());
            due.push((report.regarding.clone(), report.what.clone(), note));
        }
        // Owners told of long ago and with nothing new are forgotten.
        self.by_owner.retain(|_, r| r.pods > r.reported || r.last.is_none_or(|at| at.elapsed() < 10 * REPORT_EVERY));
        due
    }
}

/// What the Pods say of whether the webhook is called, gathered during a leader's term.
#[derive(Default)]
pub(super) struct Called {
    /// The newest creation of a Pod that needed pull secrets and was admitted with them: the
    /// webhook was called then.
    newest_served: Option<Time>,
    /// The last eviction made without that proof.
    canary: Option<Instant>,
}

/// Whether a Pod admitted at `created` may be evicted now.
#[derive(Debug, PartialEq, Eq)]
enum MayEvict {
    /// The webhook was called after this Pod was admitted: its replacement will be served.
    Yes,
    /// Not known: one eviction tells, by whether the replacement comes back served.
    AsCanary,
    /// A canary's replacement is awaited.
    Wait,
}

impl Called {
    fn served(&mut self, created: &Time) {
        if self.newest_served.as_ref().is_none_or(|newest| newest < created) {
            self.newest_served = Some(created.clone());
        }
    }

    fn may_evict(&self, created: Option<&Time>) -> MayEvict {
        if let (Some(newest), Some(created)) = (&self.newest_served, created)
            && newest > created
        {
            return MayEvict::Yes;
        }
        match self.canary {
            Some(at) if at.elapsed() < CANARY_EVERY => MayEvict::Wait,
            _ => MayEvict::AsCanary,
        }
    }
}

/// Whether a checked Pod is done with, or must be looked at again on the next pass.
enum Checked {
    Done,
    Again,
}

impl Reconciler {
    pub(super) async fn pods_sweep(&self, pass: &Pass<'_>, memory: &mut Memory) {
        for pod in self.pods.state() {
            if pass.lost_lead() {
                return;
            }
            let (Some(ns), Some(uid)) = (pod.namespace(), pod.uid()) else { continue };
            if finished(&pod)
                || pod.meta().deletion_timestamp.is_some()
                || self.ctx.resolver.skip(&ns).is_some()
                || memory.pods_checked.get(&uid) == Some(&pass.generation)
            {
                continue;
            }
            match self.check_pod(pass, &pod, &ns, &uid, memory).await {
                Ok(Checked::Done) => {
                    memory.pods_checked.insert(uid, pass.generation);
                }
                Ok(Checked::Again) => {}
                Err(e) => failed("check a pod", &ns, &pod.name_any(), e),
            }
        }
        let live: HashSet<String> = self.pods.state().iter().filter_map(|p| p.uid()).collect();
        forget_gone(&mut memory.pods_checked, &live);
        memory.pods_reported.retain(|uid| live.contains(uid));
        for (regarding, what, note) in memory.unreported.due() {
            info!(owner = %what, "{note}");
            self.ctx.events.warning(regarding, events::POD_MISSING, note);
        }
    }

    /// How many secrets the Pod should list, and the sources of those it does not.
    async fn missing(&self, pod: &Pod, ns: &str) -> Result<(usize, Vec<String>), Error> {
        let name = pod.name_any();
        let subject = Subject::of(Kind::Pod, ns, &name, pod.owner_references());
        let resolution = self.ctx.resolver.resolve(&subject).await?;
        let listed = pull_secret_names(pod);
        let needs_copies = resolution.needs.iter().any(|n| matches!(n.provision, Provision::Copy(_)));
        let copies_here = if needs_copies { self.copies_in(ns) } else { Vec::new() };
        let needed = resolution.needs.iter().filter(|n| !matches!(n.provision, Provision::Unusable(_))).count();
        let missing = resolution
            .needs
            .iter()
            .filter(|need| match &need.provision {
                Provision::Unusable(_) => false,
                Provision::Original => !listed.contains(&need.source_name.as_str()),
                Provision::Copy(_) => !copies_of(&copies_here, &need.source_ref()).any(|n| listed.contains(&n)),
            })
            .map(|need| need.source_ref())
            .collect();
        Ok((needed, missing))
    }

    /// Reports (once) and heals a Pod that lacks secrets.
    async fn check_pod(
        &self,
        pass: &Pass<'_>,
        pod: &Pod,
        ns: &str,
        uid: &str,
        memory: &mut Memory,
    ) -> Result<Checked, Error> {
        let (needed, missing) = self.missing(pod, ns).await?;
        if missing.is_empty() {
            if let Some(created) = pod.metadata.creation_timestamp.as_ref().filter(|_| needed > 0) {
                memory.called.served(created);
            }
            return Ok(Checked::Done);
        }
        let name = pod.name_any();
        let missing = missing.join(", ");
        let controller = pod.owner_references().iter().find(|r| r.controller == Some(true));
        if memory.pods_reported.insert(uid.to_string()) {
            // Counted one by one; told per owner (see `Unreported`), so a burst costs few writes.
            metrics::reconcile_action(Action::PodMissingPullSecret);
            debug!(namespace = %ns, pod = %name, %missing, "pod was admitted without the pull secrets it needs");
            let healing = self.options.heal_pods && controller.is_some_and(|c| heals(&c.kind));
            memory.unreported.add(pod, ns, &missing, healing);
        }
        let Some(controller) = controller.filter(|c| self.options.heal_pods && heals(&c.kind)) else {
            return Ok(Checked::Done);
        };
        let healing = memory.healed_controllers.get(&controller.uid);
        if healing.is_some_and(|h| h.evictions >= MAX_HEALS) {
            if memory.heals_given_up.insert(controller.uid.clone()) {
                warn!(namespace = %ns, controller = %format!("{}/{}", controller.kind, controller.name), "gave up healing: its replacement Pods lack their pull secrets too");
                let note = format!(
                    "evicted {MAX_HEALS} Pods of {} {} and their replacements still lack their pull secrets: is the \
                     webhook called? Not evicting more",
                    controller.kind, controller.name
                );
                self.ctx.events.warning(events::reference("Pod", ns, &name, Some(uid)), events::HEALING_GAVE_UP, note);
            }
            return Ok(Checked::Done);
        }
        if pass.lost_lead()
            || self.started.elapsed() < HEAL_WARMUP
            || healing.is_some_and(|h| h.last.elapsed() < HEAL_BACKOFF)
        {
            return Ok(Checked::Again);
        }
        let may = memory.called.may_evict(pod.metadata.creation_timestamp.as_ref());
        if may == MayEvict::Wait {
            return Ok(Checked::Again);
        }
        let eviction = kube::api::EvictParams {
            delete_options: Some(kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api = Api::<Pod>::namespaced(self.ctx.client.clone(), ns);
        // The client retries a 429 (a PodDisruptionBudget refusing the eviction) for a long time;
        // a pass does not wait for that.
        match tokio::time::timeout(EVICTION_TIMEOUT, api.evict(&name, &eviction)).await {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(status))) if status.code == 404 || status.code == 409 => return Ok(Checked::Done),
            // A PodDisruptionBudget allows no disruption now: respected, looked at again later.
            Ok(Err(kube::Error::Api(status))) if status.code == 429 => {
                info!(namespace = %ns, pod = %name, "eviction refused by a PodDisruptionBudget; trying again later");
                return Ok(Checked::Again);
            }
            Ok(Err(e)) => return Err(Error::Reconcile(e)),
            Err(_) => {
                info!(namespace = %ns, pod = %name, "eviction not granted within {EVICTION_TIMEOUT:?} (a PodDisruptionBudget refuses it, or the API server is busy); trying again later");
                return Ok(Checked::Again);
            }
        }
        let healing = memory
            .healed_controllers
            .entry(controller.uid.clone())
            .or_insert(Healing { last: Instant::now(), evictions: 0 });
        healing.last = Instant::now();
        healing.evictions += 1;
        if may == MayEvict::AsCanary {
            memory.called.canary = Some(Instant::now());
            info!(namespace = %ns, pod = %name, "the webhook is not known to be called: this eviction tells, no other until its replacement is served");
        }
        metrics::reconcile_action(Action::PodHealed);
        // Why this eviction was allowed: the creation of the newest Pod the webhook served, when
        // that came after this Pod's (none: the eviction was the canary above).
        let served_since =
            memory.called.newest_served.as_ref().filter(|_| may == MayEvict::Yes).map(|t| t.0.to_string());
        info!(namespace = %ns, pod = %name, controller = %format!("{}/{}", controller.kind, controller.name), %missing, served_since = served_since.as_deref().unwrap_or(""), "pod evicted so that its controller recreates it with its pull secrets");
        Ok(Checked::Done)
    }
}

/// Evictions of one controller's Pods in this leader's term.
pub(super) struct Healing {
    last: Instant,
    evictions: u32,
}

/// Controllers that recreate a deleted Pod from their template.
fn heals(kind: &str) -> bool {
    matches!(kind, "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job")
}

pub(super) fn finished(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

pub(super) fn pull_secret_names(pod: &Pod) -> Vec<&str> {
    pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()).map(|r| r.name.as_str()).collect()
}

/// Keeps of a Pod only what the reconciler reads: identity, owners, pull secrets and phase.
pub(super) fn trim(pod: &mut Pod) {
    pod.metadata.labels = None;
    pod.metadata.annotations = None;
    let image_pull_secrets = pod.spec.as_mut().and_then(|s| s.image_pull_secrets.take());
    pod.spec = Some(PodSpec { image_pull_secrets, containers: Vec::new(), ..Default::default() });
    let phase = pod.status.as_mut().and_then(|s| s.phase.take());
    pod.status = Some(PodStatus { phase, ..Default::default() });
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
        trim(&mut pod);
        assert_eq!(pull_secret_names(&pod), ["s"]);
        assert_eq!(pod.owner_references()[0].name, "r");
        assert!(pod.spec.as_ref().unwrap().containers.is_empty());
        assert!(pod.metadata.labels.is_none());
        assert_eq!(pod.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
        assert!(pod.status.as_ref().unwrap().pod_ip.is_none());
        assert!(!finished(&pod));
    }

    #[test]
    fn pods_are_evicted_only_once_the_webhook_is_known_to_be_called() {
        let at = |s: &str| Time(s.parse().unwrap());
        let mut called = Called::default();
        let old = at("2026-01-01T00:00:00Z");
        assert_eq!(called.may_evict(Some(&old)), MayEvict::AsCanary, "nothing known: one eviction tells");
        called.canary = Some(Instant::now());
        assert_eq!(called.may_evict(Some(&old)), MayEvict::Wait, "its replacement is awaited");
        called.served(&at("2025-12-31T00:00:00Z"));
        assert_eq!(called.may_evict(Some(&old)), MayEvict::Wait, "served before the Pod was admitted proves nothing");
        called.served(&at("2026-01-01T00:01:00Z"));
        assert_eq!(called.may_evict(Some(&old)), MayEvict::Yes, "a Pod served after it: the webhook is called");
        assert_eq!(called.may_evict(Some(&at("2026-01-01T00:02:00Z"))), MayEvict::Wait);
        called.canary = Instant::now().checked_sub(CANARY_EVERY);
        assert_eq!(called.may_evict(Some(&at("2026-01-01T00:02:00Z"))), MayEvict::AsCanary, "another canary later");
    }

    fn pod(name: &str, controller: Option<&str>) -> Pod {
        let owners: Vec<serde_json::Value> = controller
            .map(|rs| serde_json::json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("uid-{rs}"), "controller": true}))
            .into_iter()
            .collect();
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": "t", "uid": format!("uid-{name}"), "ownerReferences": owners}}))
            .unwrap()
    }

    #[test]
    fn a_burst_of_pods_without_their_secrets_costs_few_events() {
        let mut unreported = Unreported::default();
        for i in 0..1000 {
            unreported.add(&pod(&format!("web-{i}"), Some("web-1")), "t", "m/creds", true);
        }
        let due = unreported.due();
        assert_eq!(due.len(), 1, "one Event for the ReplicaSet of 1,000 Pods");
        assert_eq!(due[0].0.kind.as_deref(), Some("ReplicaSet"));
        assert!(due[0].2.starts_with("1000 Pod(s) of ReplicaSet web-1"), "{}", due[0].2);
        unreported.add(&pod("web-late", Some("web-1")), "t", "m/creds", true);
        assert!(unreported.due().is_empty(), "at most one a minute per owner");

        let mut bare = Unreported::default();
        for i in 0..1000 {
            bare.add(&pod(&format!("bare-{i}"), None), "t", "m/creds", false);
        }
        assert_eq!(bare.due().len() as u32, REPORTS_PER_MINUTE, "at most this many a minute in all");
        assert!(bare.due().is_empty(), "the rest wait for the next minute");
    }

    #[test]
    fn only_template_controllers_are_healed() {
        assert!(heals("ReplicaSet") && heals("StatefulSet") && heals("DaemonSet") && heals("Job"));
        assert!(!heals("Node") && !heals("Deployment") && !heals("EtcdCluster"));
    }
}
