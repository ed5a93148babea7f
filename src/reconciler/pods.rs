//! The pods sweep: a Pod admitted without the secrets it needs (the webhook was not called) is
//! reported once with a Warning Event; with `--heal-pods` a controller-owned one is deleted so
//! that its controller recreates it through the webhook.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

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
    }

    /// The sources whose secret the Pod should list and does not.
    async fn missing(&self, pod: &Pod, ns: &str) -> Result<Vec<String>, Error> {
        let name = pod.name_any();
        let subject = Subject::of(Kind::Pod, ns, &name, pod.owner_references());
        let resolution = self.ctx.resolver.resolve(&subject).await?;
        let listed = pull_secret_names(pod);
        let needs_copies = resolution.needs.iter().any(|n| matches!(n.provision, Provision::Copy(_)));
        let copies_here = if needs_copies { self.copies_in(ns) } else { Vec::new() };
        Ok(resolution
            .needs
            .iter()
            .filter(|need| match &need.provision {
                Provision::Unusable(_) => false,
                Provision::Original => !listed.contains(&need.source_name.as_str()),
                Provision::Copy(_) => !copies_of(&copies_here, &need.source_ref()).any(|n| listed.contains(&n)),
            })
            .map(|need| need.source_ref())
            .collect())
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
        let missing = self.missing(pod, ns).await?;
        if missing.is_empty() {
            return Ok(Checked::Done);
        }
        let name = pod.name_any();
        let missing = missing.join(", ");
        let controller = pod.owner_references().iter().find(|r| r.controller == Some(true));
        if memory.pods_reported.insert(uid.to_string()) {
            metrics::reconcile_action(Action::PodMissingPullSecret);
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
            self.ctx.events.warning(events::reference("Pod", ns, &name, Some(uid)), events::POD_MISSING, note);
        }
        let Some(controller) = controller.filter(|c| self.options.heal_pods && heals(&c.kind)) else {
            return Ok(Checked::Done);
        };
        if pass.lost_lead()
            || self.started.elapsed() < HEAL_WARMUP
            || memory.healed_controllers.get(&controller.uid).is_some_and(|at| at.elapsed() < HEAL_BACKOFF)
        {
            return Ok(Checked::Again);
        }
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        };
        match Api::<Pod>::namespaced(self.ctx.client.clone(), ns).delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(e) => return Err(Error::Reconcile(e)),
        }
        memory.healed_controllers.insert(controller.uid.clone(), Instant::now());
        metrics::reconcile_action(Action::PodHealed);
        info!(namespace = %ns, pod = %name, controller = %format!("{}/{}", controller.kind, controller.name), %missing, "pod deleted so that its controller recreates it with its pull secrets");
        Ok(Checked::Done)
    }
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
    fn only_template_controllers_are_healed() {
        assert!(heals("ReplicaSet") && heals("StatefulSet") && heals("DaemonSet") && heals("Job"));
        assert!(!heals("Node") && !heals("Deployment") && !heals("EtcdCluster"));
    }
}
