//! The kubectl plugin (`kubectl-olm_pullsecret`) against the real control plane, as an
//! administrator runs it: `explain` exits 1 for a Pod missing its secret and 0 once it has it;
//! `cleanup --dry-run` lists exactly what `cleanup` then takes back, from the ledger and the
//! ServiceAccount annotation. A test binary of its own: cleanup takes back every copy there is.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::olm::*;
use support::webhook::{self, CATALOG_ARGS, WebhookProcess};
use support::{ControlPlane, eventually};

/// Runs the plugin with the control plane's kubeconfig; its exit code and output.
fn plugin(args: &[&str]) -> (i32, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-olm_pullsecret"))
        .arg("--kubeconfig")
        .arg(ControlPlane::with_olm().kubeconfig())
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

fn explain(ns: &str, target: &str) -> (i32, String) {
    let mut args = vec!["-n", ns, "explain", target];
    args.extend(CATALOG_ARGS);
    plugin(&args)
}

#[tokio::test]
async fn explain_exits_by_what_is_missing_and_cleanup_takes_back_what_its_dry_run_lists() {
    let cp = ControlPlane::with_olm();
    let webhook = WebhookProcess::shared().await;
    let client = cp.admin().await;
    let (catalog, op, _) = private_operator(&client, &[]).await;
    let ns = op.namespace.as_str();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);

    // A Pod admitted before it had an owner, then given the operator's CSV as one (owner
    // references may change; the webhook is not asked again): it lacks the secret.
    pods.create(&PostParams::default(), &bare_pod(json!({ "name": "late" }))).await.unwrap();
    let owned = json!({ "metadata": { "ownerReferences": [op.csv_owner()] } });
    pods.patch("late", &PatchParams::default(), &Patch::Merge(&owned)).await.unwrap();
    let (code, out) = explain(ns, "pod/late");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing"), "{out}");
    // The fix: the Pod made again, through the webhook.
    pods.delete("late", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    eventually("the old Pod to be gone", Duration::from_secs(20), || async {
        pods.get_opt("late").await.unwrap().is_none().then_some(())
    })
    .await;
    let again = bare_pod(json!({ "name": "late", "ownerReferences": [op.csv_owner()] }));
    pods.create(&PostParams::default(), &again).await.unwrap();
    let (code, out) = explain(ns, "pod/late");
    assert_eq!(code, 0, "{out}");
    let (code, out) = explain(ns, "pod/never-created");
    assert_eq!(code, 2, "an error: {out}");

    // A ServiceAccount named by the CSV (OLM created it) gets the copy and our annotation,
    // beside its own entry once the tenant links one (an update that sets the list).
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    settled(&client, &op).await;
    let own = json!({ "imagePullSecrets": [{ "name": "tenant-own" }] });
    let updated = sas.patch("widget-runner", &PatchParams::default(), &Patch::Merge(&own)).await.unwrap();
    assert_eq!(service_account_pull_secrets(&updated), ["tenant-own", catalog.secret.as_str()]);

    // Uninstalled: the webhook is gone, what it handed out stays until cleanup.
    webhook::unregister(&client).await;
    webhook.signal(libc::SIGTERM);
    eventually("the webhook to stop", Duration::from_secs(20), || async { webhook.exit_status() }).await;

    let (code, planned) = plugin(&["cleanup", "--dry-run"]);
    assert_eq!(code, 0, "{planned}");
    let planned: Vec<&str> = planned.lines().filter_map(|l| l.strip_prefix("would remove ")).collect();
    let copy = format!("secret {ns}/{} (copy of {}/{})", catalog.secret, catalog.namespace, catalog.secret);
    let entries = format!("serviceaccount {ns}/widget-runner: imagePullSecrets -= {}", catalog.secret);
    assert!(planned.contains(&copy.as_str()) && planned.contains(&entries.as_str()), "{planned:?}");
    let secrets = Api::<Secret>::namespaced(client.clone(), ns);
    assert!(secrets.get_opt(&catalog.secret).await.unwrap().is_some(), "a dry run changes nothing");

    let (code, done) = plugin(&["cleanup"]);
    assert_eq!(code, 0, "{done}");
    let done: Vec<&str> = done.lines().filter_map(|l| l.strip_prefix("removed ")).collect();
    assert_eq!(done, planned, "cleanup takes back exactly what its dry run listed");
    assert!(secrets.get_opt(&catalog.secret).await.unwrap().is_none());
    let sa = sas.get("widget-runner").await.unwrap();
    let names: Vec<String> = sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["tenant-own"], "the tenant's own entry stays");
    assert!(!sa.metadata.annotations.unwrap_or_default().contains_key("pullsecret-injector.io/injected"));
    let ledger = Api::<olm_pullsecret_injector::inject::ledger::PullSecretCopy>::all(client.clone());
    assert!(ledger.list(&Default::default()).await.unwrap().items.is_empty());
    let (code, out) = plugin(&["cleanup", "--dry-run"]);
    assert_eq!((code, out.trim()), (0, ""), "nothing left");
}
