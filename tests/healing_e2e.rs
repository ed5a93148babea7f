//! End to end: what happens while the webhook is not called. Pods admitted without their
//! secrets are reported (and, with --heal-pods, replaced); a service account whose list another
//! controller rewrote gets its entries back from the reconciler alone.
//! One test: it unregisters the webhook, which would disturb any other test in this binary.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::olm::*;
use support::webhook;
use support::{ControlPlane, eventually};

fn sa_pull_secrets(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect()
}

#[tokio::test]
async fn pods_admitted_without_the_webhook_are_reported_then_healed_and_service_accounts_restored() {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    webhook::grant_chart_rbac_with(&client, |_| {}).await;
    webhook::grant_heal_pods(&client).await;
    let reporter = webhook::start(cp, "reporter", &["--drain-delay", "0s"]);
    webhook::register_with(&client, &reporter, "Ignore").await;

    let (_, _, tenants) = private_operator(&client, &["heal"]).await;
    let tenant = &tenants[0];
    let owner = create_operand(&client, WIDGET, tenant, "prod").await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "app", "ownerReferences": [owner] } })).unwrap();
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), tenant);
    sas.create(&PostParams::default(), &sa).await.unwrap();
    assert_eq!(sa_pull_secrets(&sas.get("app").await.unwrap()), ["registry-creds"]);

    // The webhook is not called any more (uninstalled, or down with failurePolicy Ignore).
    webhook::unregister(&client).await;
    let probe = eventually("the API server to stop calling the webhook", Duration::from_secs(30), || async {
        let pod = bare_pod(json!({ "generateName": "probe-", "ownerReferences": [owner] }));
        let pods = Api::<Pod>::namespaced(client.clone(), tenant);
        let created = pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await.unwrap();
        pull_secret_names(&created).is_empty().then_some(())
    });
    probe.await;

    // Another controller rewrites the service account's list wholesale (an update, as
    // openshift-controller-manager does): only the reconciler can bring the entry back.
    let mut rewritten = sas.get("app").await.unwrap();
    rewritten.image_pull_secrets =
        Some(vec![k8s_openapi::api::core::v1::LocalObjectReference { name: "dockercfg-x".into() }]);
    sas.replace("app", &PostParams::default(), &rewritten).await.unwrap();
    eventually("the reconciler to restore the service account", Duration::from_secs(20), || async {
        let sa = sas.get("app").await.unwrap();
        (sa_pull_secrets(&sa) == ["dockercfg-x", "registry-creds"]).then_some(())
    })
    .await;

    // An operand Deployment whose Pod is admitted without the secret it needs.
    create_deployment(&client, tenant, "operand", Some(owner.clone()), 1, json!({})).await;
    let unhealed = pods_of(&client, tenant, "operand", 1).await.remove(0);
    assert!(pull_secret_names(&unhealed).is_empty());
    let uid = unhealed.metadata.uid.clone().unwrap();
    let name = unhealed.metadata.name.clone().unwrap();

    // Without --heal-pods the Pod is reported, not touched.
    let events = Api::<Event>::namespaced(client.clone(), tenant);
    eventually("a PodMissingPullSecret event on the pod", Duration::from_secs(20), || async {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        list.iter()
            .any(|e| {
                e.reason.as_deref() == Some("PodMissingPullSecret")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid.as_str())
            })
            .then_some(())
    })
    .await;
    let metrics = webhook::http_get(&format!("127.0.0.1:{}", reporter.admin_port), "/metrics").unwrap().1;
    assert!(
        metrics.contains("pullsecret_injector_reconcile_actions_total{action=\"pod_missing_pull_secret\"} 1"),
        "{metrics}"
    );
    let pods = Api::<Pod>::namespaced(client.clone(), tenant);
    assert_eq!(pods.get(&name).await.unwrap().metadata.uid.as_deref(), Some(uid.as_str()), "reported, not deleted");

    // The webhook comes back with --heal-pods: the Pod is replaced by one that has the secret.
    reporter.signal(libc::SIGTERM);
    let healer = webhook::start(cp, "healer", &["--drain-delay", "0s", "--heal-pods"]);
    webhook::register_with(&client, &healer, "Ignore").await;
    let healed = eventually("the Deployment's Pod to be replaced with the secret", Duration::from_secs(60), || async {
        let list = pods.list(&ListParams::default().labels("app=operand")).await.unwrap().items;
        list.into_iter().find(|p| p.metadata.uid.as_deref() != Some(uid.as_str()) && !pull_secret_names(p).is_empty())
    })
    .await;
    assert_eq!(pull_secret_names(&healed), ["registry-creds"]);
    assert!(pods.get_opt(&name).await.unwrap().is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
    assert!(healer.logs().contains("pod deleted so that its controller recreates it"));
}
