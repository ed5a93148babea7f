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
    let cp = ControlPlane::with_olm();
    let client = cp.admin().await;
    webhook::grant_chart_rbac_with(&client, |_| {}).await;
    webhook::grant_heal_pods(&client).await;
    let reporter = webhook::start(cp, "reporter", &["--drain-delay", "0s"]);
    webhook::register_with(&client, &reporter, "Ignore").await;

    let (catalog, op, tenants) = private_operator(&client, &["heal"]).await;
    // OLM has made the operator's Pod and ServiceAccounts while the webhook was called.
    settled(&client, &op).await;
    let tenant = &tenants[0];
    let owner = create_operand(&client, WIDGET, tenant, "prod").await;
    let sa: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "app", "ownerReferences": [owner] } })).unwrap();
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), tenant);
    sas.create(&PostParams::default(), &sa).await.unwrap();
    assert_eq!(sa_pull_secrets(&sas.get("app").await.unwrap()), [catalog.secret.as_str()]);

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
        (sa_pull_secrets(&sa) == ["dockercfg-x", catalog.secret.as_str()]).then_some(())
    })
    .await;

    // An operand Deployment whose Pod is admitted without the secret it needs.
    create_deployment(&client, tenant, "operand", Some(owner.clone()), 1, json!({})).await;
    let unhealed = pods_of(&client, tenant, "operand", 1).await.remove(0);
    assert!(pull_secret_names(&unhealed).is_empty());
    let uid = unhealed.metadata.uid.clone().unwrap();
    let name = unhealed.metadata.name.clone().unwrap();
    let replica_set = unhealed.metadata.owner_references.clone().unwrap().remove(0);

    // Without --heal-pods the Pod is reported, not touched.
    let events = Api::<Event>::namespaced(client.clone(), tenant);
    eventually("a PodMissingPullSecret event on the pod's ReplicaSet", Duration::from_secs(20), || async {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        list.iter()
            .any(|e| {
                // Told per owner: one Event on the ReplicaSet, however many of its Pods.
                e.reason.as_deref() == Some("PodMissingPullSecret")
                    && e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(replica_set.uid.as_str())
                    && e.note.as_deref().is_some_and(|n| n.contains(&name))
            })
            .then_some(())
    })
    .await;
    // Counted once for this Pod (OLM may still replace its operator's Pod meanwhile: counted too).
    let reported = reporter.logged("pod was admitted without the pull secrets it needs", tenant);
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0]["pod"], name.as_str(), "{reported:?}");
    let metrics = webhook::http_get(&format!("127.0.0.1:{}", reporter.reconciler_admin_port), "/metrics").unwrap().1;
    let counted = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("pullsecret_injector_reconcile_actions_total{action=\"pod_missing_pull_secret\"} ")
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert!(counted.is_some_and(|n| n >= 1), "{metrics}");
    let pods = Api::<Pod>::namespaced(client.clone(), tenant);
    assert_eq!(pods.get(&name).await.unwrap().metadata.uid.as_deref(), Some(uid.as_str()), "reported, not deleted");

    // The webhook comes back with --heal-pods, but a PodDisruptionBudget allows no disruption:
    // the eviction is refused and the Pod stays.
    let budgets = Api::<k8s_openapi::api::policy::v1::PodDisruptionBudget>::namespaced(client.clone(), tenant);
    let budget = serde_json::from_value(serde_json::json!({ "metadata": { "name": "operand" },
        "spec": { "maxUnavailable": 0, "selector": { "matchLabels": { "app": "operand" } } } }))
    .unwrap();
    budgets.create(&Default::default(), &budget).await.unwrap();
    // A Pending Pod may always be evicted: report it running and ready (kwok's node does so too,
    // a moment later) so that the budget protects it.
    let running = serde_json::json!({ "status": { "phase": "Running",
        "conditions": [{ "type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z" }] } });
    pods.patch_status(&name, &Default::default(), &kube::api::Patch::Merge(&running)).await.unwrap();
    eventually("the budget to count the Pod", Duration::from_secs(30), || async {
        let status = budgets.get("operand").await.unwrap().status?;
        (status.current_healthy == Some(1) && status.disruptions_allowed == Some(0)).then_some(())
    })
    .await;
    reporter.signal(libc::SIGTERM);
    let healer = webhook::start(cp, "healer", &["--drain-delay", "0s", "--heal-pods"]);
    webhook::register_with(&client, &healer, "Ignore").await;
    eventually("the eviction to be refused by the budget", Duration::from_secs(40), || async {
        let logs = healer.logs();
        (logs.contains("eviction refused by a PodDisruptionBudget") || logs.contains("eviction not granted within"))
            .then_some(())
    })
    .await;
    assert_eq!(pods.get(&name).await.unwrap().metadata.uid.as_deref(), Some(uid.as_str()), "the budget is respected");

    // Without the budget the Pod is evicted and replaced by one that has the secret.
    budgets.delete("operand", &Default::default()).await.unwrap();
    let healed = eventually("the Deployment's Pod to be replaced with the secret", Duration::from_secs(60), || async {
        let list = pods.list(&ListParams::default().labels("app=operand")).await.unwrap().items;
        list.into_iter().find(|p| p.metadata.uid.as_deref() != Some(uid.as_str()) && !pull_secret_names(p).is_empty())
    })
    .await;
    assert_eq!(pull_secret_names(&healed), [catalog.secret.as_str()]);
    assert!(pods.get_opt(&name).await.unwrap().is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
    // The eviction is the canary that tells whether the webhook is called, unless the webhook
    // served a Pod created after this one: with real OLM the operator's own Pods may be recreated
    // at any time, and the reconciler then names the newer Pod's creation as its proof.
    // (Logged once the eviction returned: possibly after the replacement was admitted.)
    let evicted = eventually("the eviction to be logged", Duration::from_secs(10), || async {
        let evictions = healer.logged("pod evicted so that its controller recreates it with its pull secrets", tenant);
        evictions.into_iter().find(|line| line["pod"] == name.as_str())
    })
    .await;
    let logs = healer.logs();
    match evicted["served_since"].as_str().unwrap_or_default() {
        "" => assert!(logs.contains("this eviction tells"), "{logs}"),
        proof => {
            let proof: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time =
                serde_json::from_value(json!(proof)).unwrap();
            assert!(&proof > unhealed.metadata.creation_timestamp.as_ref().unwrap(), "{evicted}");
        }
    }
}
