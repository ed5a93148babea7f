//! `cleanupOnUninstall` against the real control plane. `helm uninstall` deletes the release's
//! objects (the webhook configuration, both Deployments, their RBAC) before it runs post-delete
//! hooks; then the hook's ServiceAccount, ClusterRole and binding, as the chart renders them, are
//! all the hook Job's command has, and enough to take back every copy and every entry the project
//! made. A test binary of its own: cleanup takes back every copy there is.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use support::helm;
use support::olm::*;
use support::webhook::{self, NAMESPACE, RELEASE, WebhookProcess};
use support::{ControlPlane, eventually};

/// Runs the binary with `args`, authenticated as `service_account`; its exit code and output.
fn run_as(service_account: &str, args: &[String]) -> (i32, String) {
    let dir = webhook::process_dir("cleanup-hook");
    let kubeconfig = dir.join("kubeconfig");
    ControlPlane::shared().write_impersonating_kubeconfig(NAMESPACE, service_account, &kubeconfig);
    let output = Command::new(env!("CARGO_BIN_EXE_olm-pullsecret-injector"))
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn the_post_delete_hook_takes_back_every_copy_and_entry_with_its_own_identity() {
    let replica = WebhookProcess::shared().await;
    let client = ControlPlane::shared().admin().await;
    let (catalog, op, tenants) = private_operator(&client, &["hook", "hook"]).await;
    operand_pods_with_copies(&client, &catalog, &tenants).await;
    // A ServiceAccount named by the CSV gets the copy beside its own entry.
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "widget-runner" },
        "imagePullSecrets": [{ "name": "tenant-own" }] }))
    .unwrap();
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &op.namespace);
    let created = sas.create(&PostParams::default(), &sa).await.unwrap();
    assert_eq!(created.image_pull_secrets.unwrap().len(), 2, "tenant-own and the copy");

    // `helm uninstall`: the release's objects go first, the webhook's and reconciler's rights
    // with them.
    webhook::unregister(&client).await;
    replica.signal(libc::SIGTERM);
    eventually("the replica to stop", Duration::from_secs(20), || async { replica.exit_status() }).await;
    let bindings = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(client.clone());
    for name in [RELEASE.to_string(), format!("{RELEASE}-reconciler")] {
        bindings.delete(&name, &DeleteParams::default()).await.unwrap();
    }

    // Then its post-delete hooks, as the chart renders them.
    let objects = webhook::render(json!({ "cleanupOnUninstall": true }));
    let hooks: Vec<&Value> =
        objects.iter().filter(|o| o["metadata"]["annotations"]["helm.sh/hook"] == "post-delete").collect();
    let job = hooks.iter().find(|o| o["kind"] == "Job").expect("the hook Job");
    for object in hooks.iter().filter(|o| o["kind"] != "Job") {
        helm::apply(&client, object, false).await.unwrap();
    }
    let pod = &job["spec"]["template"]["spec"];
    let hook_identity = pod["serviceAccountName"].as_str().unwrap();
    let args: Vec<String> =
        pod["containers"][0]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().into()).collect();

    // What it will do, once its binding is in force (the API server's RBAC cache follows it).
    let mut dry_run = args.clone();
    dry_run.push("--dry-run".into());
    let planned = eventually("the hook's rights to be in force", Duration::from_secs(10), || async {
        let (code, out) = run_as(hook_identity, &dry_run);
        (code == 0).then_some(out)
    })
    .await;
    for tenant in &tenants {
        let copy = format!(
            "would remove secret {tenant}/{} (copy of {}/{})",
            catalog.secret, catalog.namespace, catalog.secret
        );
        assert!(planned.lines().any(|l| l == copy), "{copy}:\n{planned}");
    }

    let (code, out) = run_as(hook_identity, &args);
    assert_eq!(code, 0, "the hook Job's command succeeds with the hook's rights alone:\n{out}");
    let removed = out.lines().filter(|l| l.starts_with("removed ")).count();
    assert_eq!(removed, planned.lines().filter(|l| l.starts_with("would remove ")).count(), "{out}");
    for tenant in &tenants {
        let copies = Api::<Secret>::namespaced(client.clone(), tenant);
        assert!(copies.get_opt(&catalog.secret).await.unwrap().is_none(), "the copy in {tenant} is gone");
    }
    let sa = sas.get("widget-runner").await.unwrap();
    let names: Vec<String> = sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["tenant-own"], "the tenant's own entry stays");
    let ledger = Api::<olm_pullsecret_injector::inject::ledger::PullSecretCopy>::all(client.clone());
    assert!(ledger.list(&Default::default()).await.unwrap().items.is_empty(), "the ledger is empty");
}
