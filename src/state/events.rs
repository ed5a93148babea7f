//! Kubernetes Events on the objects the webhook and the reconciler change, so `kubectl describe`
//! tells an administrator what happened to a Pod, ServiceAccount or copy. Publishing never blocks
//! or fails the action it reports: errors are logged and dropped. Notes name objects, never data.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

pub const COPIED: &str = "PullSecretCopied";
pub const SYNCED: &str = "PullSecretSynced";
pub const REMOVED: &str = "PullSecretRemoved";
pub const POD_MISSING: &str = "PodMissingPullSecret";
pub const INVALID_SELECTOR: &str = "InvalidNamespaceSelector";
pub const NAMESPACE_NOT_CONFIGURED: &str = "CatalogNamespaceNotConfigured";
pub const HEALING_GAVE_UP: &str = "PodHealingGaveUp";

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: kube::Client, instance: &str) -> Self {
        let reporter = Reporter { controller: crate::FIELD_MANAGER.into(), instance: Some(instance.into()) };
        Events { recorder: Recorder::new(client, reporter) }
    }

    /// Publishes in the background.
    pub fn normal(&self, regarding: ObjectReference, reason: &'static str, note: String) {
        self.spawn(regarding, EventType::Normal, reason, note);
    }

    pub fn warning(&self, regarding: ObjectReference, reason: &'static str, note: String) {
        self.spawn(regarding, EventType::Warning, reason, note);
    }

    fn spawn(&self, regarding: ObjectReference, type_: EventType, reason: &'static str, note: String) {
        let recorder = self.recorder.clone();
        tokio::spawn(async move {
            let event =
                Event { type_, reason: reason.into(), note: Some(note), action: reason.into(), secondary: None };
            if let Err(e) = recorder.publish(&event, &regarding).await {
                warn!(reason, error = %e, "could not publish an event");
            }
        });
    }
}

/// A reference to a namespaced core/v1 object.
pub fn reference(kind: &str, namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference { api_version: Some("v1".into()), ..reference_to(kind, namespace, name, uid) }
}

/// A reference to a CatalogSource.
pub fn catalog_reference(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    let api_version = format!("{}/v1alpha1", crate::state::olm::GROUP);
    ObjectReference { api_version: Some(api_version), ..reference_to("CatalogSource", namespace, name, Some(uid)) }
}

fn reference_to(kind: &str, namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        kind: Some(kind.into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: uid.map(str::to_string),
        ..Default::default()
    }
}
