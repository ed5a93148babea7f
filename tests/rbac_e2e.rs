//! The e2e suite runs the webhook with the RBAC the chart renders; this proves that a permission
//! taken out of the chart makes a scenario fail (and that giving it back makes it pass), so a
//! rule missing from files/rbac.yaml cannot hide behind wider test rights.
//! A test binary of its own: its webhook process runs with less than the chart grants. The API
//! server's own answer (SubjectAccessReview) on what the identity may do with Secrets.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::olm::*;
use support::webhook::{self, RELEASE};
use support::{ControlPlane, eventually};

/// Both tests change the rights of the one service account: one at a time.
static RBAC: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Removes `verb` from the rule on core `secrets` in the chart's ClusterRole.
fn without_secret_verb(objects: &mut [Value], verb: &str) {
    let role = objects
        .iter_mut()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == RELEASE)
        .expect("the chart's ClusterRole");
    let mut removed = false;
    for rule in role["rules"].as_array_mut().unwrap() {
        if rule["apiGroups"] == json!([""]) && rule["resources"].as_array().unwrap().iter().any(|r| r == "secrets") {
            let verbs = rule["verbs"].as_array_mut().unwrap();
            let before = verbs.len();
            verbs.retain(|v| v != verb);
            removed |= verbs.len() < before;
        }
    }
    assert!(removed, "the chart grants {verb} on secrets");
}

#[tokio::test]
async fn without_create_on_secrets_a_pod_that_needs_a_copy_is_denied_and_with_it_admitted() {
    let _one_at_a_time = RBAC.lock().await;
    let cp = ControlPlane::with_olm();
    let client = cp.admin().await;
    webhook::grant_chart_rbac_with(&client, |objects| without_secret_verb(objects, "create")).await;
    let process = tokio::task::spawn_blocking(move || {
        webhook::start(cp, "webhook-without-create", &["--drain-delay", "0s", "--failure-policy", "Fail"])
    })
    .await
    .unwrap();
    webhook::register_with(&client, &process, "Fail").await;

    let (catalog, op, _) = private_operator(&client, &[]).await;
    let ns = op.namespace.clone();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let pod = bare_pod(json!({ "name": "operator", "ownerReferences": [op.csv_owner()] }));
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 503, "{status:?}");
            assert!(status.message.contains("retry"), "{}", status.message);
        }
        other => panic!("without `create secrets` the pod must be denied, got {other:?}"),
    }
    let copies = Api::<Secret>::namespaced(client.clone(), &ns);
    assert!(copies.get_opt(catalog.secret.as_str()).await.unwrap().is_none(), "no copy without the permission");
    // Its decision line says why (lines are written in batches: wait for it).
    let denied = eventually("the webhook's decision line", Duration::from_secs(10), || async {
        process.decisions(&ns).into_iter().find(|d| d["decision"] == "denied" && d["dry_run"] == false)
    })
    .await;
    let line = denied.to_string();
    assert!(line.contains("forbidden") || line.contains("403"), "{line}");

    // The chart as it is: the same scenario passes.
    webhook::grant_chart_rbac_with(&client, |_| {}).await;
    let admitted = eventually("the pod to be admitted with the chart's RBAC", Duration::from_secs(30), || async {
        pods.create(&PostParams::default(), &pod).await.ok()
    })
    .await;
    assert_eq!(pull_secret_names(&admitted), [catalog.secret.as_str()]);
    assert!(copies.get_opt(catalog.secret.as_str()).await.unwrap().is_some());
}

/// What the API server itself says each identity of the chart may do: neither reads a Secret
/// outside the catalog namespaces (there, list and watch only); the network-facing webhook
/// cannot delete anything, list Pods, patch ServiceAccounts or take the Lease.
#[tokio::test]
async fn the_api_server_says_what_each_identity_may_do() {
    let _one_at_a_time = RBAC.lock().await;
    let cp = ControlPlane::with_olm();
    let client = cp.admin().await;
    webhook::grant_chart_rbac_with(&client, |_| {}).await;
    let tenant = support::unique_name("tenant");
    support::create_namespace(&client, &tenant).await;
    let (webhook_sa, reconciler_sa) = (webhook::SERVICE_ACCOUNT, webhook::RECONCILER_SERVICE_ACCOUNT);
    let mut report = Vec::new();
    for account in [webhook_sa, reconciler_sa] {
        let reconciler = account == reconciler_sa;
        for namespace in [tenant.as_str(), "kube-system", "", GLOBAL_CATALOGS] {
            for verb in ["get", "list", "watch", "create", "patch", "delete"] {
                let yes = webhook::allowed(&client, account, verb, namespace, "", "secrets").await;
                let expected = match (namespace, verb) {
                    (_, "create" | "patch") => true, // copies; the policy narrows these
                    (_, "delete") => reconciler,
                    (GLOBAL_CATALOGS, "list" | "watch") => true, // the source pull secrets
                    _ => false,
                };
                assert_eq!(yes, expected, "{account}: {verb} secrets in {namespace:?}");
                if yes {
                    report.push(format!(
                        "{account}: {verb} secrets in {}",
                        if namespace.is_empty() { "*" } else { namespace }
                    ));
                }
            }
        }
        let only_reconciler = [
            ("list", "", "", "pods"),
            ("watch", "", "", "pods"),
            ("patch", "kube-system", "", "serviceaccounts"),
            ("list", "", "", "serviceaccounts"),
            ("update", webhook::NAMESPACE, "coordination.k8s.io", "leases"),
        ];
        for (verb, namespace, group, resource) in only_reconciler {
            let yes = webhook::allowed(&client, account, verb, namespace, group, resource).await;
            assert_eq!(yes, reconciler, "{account}: {verb} {resource} in {namespace:?}");
            if yes {
                report.push(format!(
                    "{account}: {verb} {resource} in {}",
                    if namespace.is_empty() { "*" } else { namespace }
                ));
            }
        }
        for (verb, group, resource) in [("delete", "", "pods"), ("create", "", "pods/eviction")] {
            assert!(
                !webhook::allowed(&client, account, verb, "", group, resource).await,
                "{account}: {verb} {resource}"
            );
        }
    }
    println!("allowed:\n{}", report.join("\n"));
}
