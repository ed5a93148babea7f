//! Each process writes Secrets with an identity whose ClusterRole lets it create and patch any
//! Secret: RBAC cannot name our copies. The chart's ValidatingAdmissionPolicies narrow that to
//! managed pull-secret copies; without them (switched off, or an API server whose policy plugin
//! is off) the identity could mint service-account tokens. So at start each process proves the
//! policy binds its own identity: a dry-run create of a Secret the policy refuses (unlabelled,
//! Opaque; nothing is written) must be refused by it. Until it is, readiness stays false and the
//! check repeats.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use crate::serving::lifecycle::Readiness;

/// The readiness part, as `/readyz` names it while the policy is not in force.
pub const PART: &str = "admission policy in force for this identity";

/// How often the check repeats while the policy is not in force (the API server loads a new
/// policy within seconds of its creation).
const RETRY: Duration = Duration::from_secs(3);

/// What a dry-run create of an unguarded Secret showed.
#[derive(Debug, PartialEq, Eq)]
pub enum Guard {
    /// A ValidatingAdmissionPolicy refused it (or RBAC did: either way it cannot be written).
    InForce,
    /// It would have been created.
    Missing,
}

/// Creates (dry run) an unlabelled Opaque Secret in `namespace` as this process's identity.
pub async fn probe(client: &kube::Client, namespace: &str) -> Result<Guard, kube::Error> {
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "olm-pullsecret-injector-policy-probe" },
        "type": "Opaque",
        "stringData": { "probe": "refused by the managed-secrets policy" }
    }))
    .expect("a Secret");
    let params = PostParams { dry_run: true, ..Default::default() };
    match Api::<Secret>::namespaced(client.clone(), namespace).create(&params, &secret).await {
        Ok(_) => Ok(Guard::Missing),
        Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => Ok(Guard::InForce),
        Err(e) => Err(e),
    }
}

/// Holds readiness part [`PART`] until [`probe`] finds the guard in force.
pub async fn hold_readiness_until_in_force(client: kube::Client, namespace: String, readiness: Readiness) {
    let pending = readiness.pending(PART);
    loop {
        match probe(&client, &namespace).await {
            Ok(Guard::InForce) => {
                info!("admission policy in force: an unguarded Secret is refused for this identity");
                pending.ready();
                return;
            }
            Ok(Guard::Missing) => warn!(
                %namespace,
                "NOT READY: this identity may create any Secret (a dry-run unlabelled Secret was admitted): \
                 the chart's ValidatingAdmissionPolicy does not bind it, or the API server's policy plugin is off"
            ),
            Err(e) => warn!(error = %e, "admission policy check failed; retrying"),
        }
        tokio::time::sleep(RETRY).await;
    }
}
