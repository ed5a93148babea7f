//! `cleanupOnUninstall` against the real control plane. `helm uninstall` deletes the release's
//! objects (the webhook configuration, both Deployments, their RBAC) before it runs post-delete
//! hooks; then the hook's ServiceAccount, ClusterRole and binding, as the chart renders them, are
//! all the hook Job's command has, and enough to take back every copy and every entry the project
//! made. A test binary of its own: cleanup takes back every copy there is.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::helm;
use support::olm::*;
use support::webhook::{self, NAMESPACE, RELEASE, WebhookProcess};
use support::{ControlPlane, eventually};

/// Runs the binary with `args`, authenticated as `service_account`; its exit code and output.
fn run_as(service_account: &str, args: &[String]) -> (i32, String) {
    let dir = webhook::process_dir("cleanup-hook");
    let kubeconfig = dir.join("kubeconfig");
    ControlPlane::with_olm().write_impersonating_kubeconfig(NAMESPACE, service_account, &kubeconfig);
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
    let cp = ControlPlane::with_olm();
    let replica = WebhookProcess::shared().await;
    let client = cp.admin().await;
    let (catalog, op, tenants) = private_operator(&client, &["hook", "hook"]).await;
    operand_pods_with_copies(&client, &catalog, &tenants).await;
    // A ServiceAccount named by the CSV (OLM created it) gets the copy beside its own entry,
    // once the tenant links one (an update that sets the list).
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &op.namespace);
    settled(&client, &op).await;
    let own = json!({ "imagePullSecrets": [{ "name": "tenant-own" }] });
    let updated = sas.patch("widget-runner", &PatchParams::default(), &Patch::Merge(&own)).await.unwrap();
    assert_eq!(updated.image_pull_secrets.unwrap().len(), 2, "tenant-own and the copy");
    // A ServiceAccount in a platform namespace that carries our annotation (put there by hand):
    // the hook's policy refuses to change it, and cleanup must go on past it.
    let stray_name = support::unique_name("stray");
    let stray: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": stray_name,
        "annotations": { "pullsecret-injector.io/injected": "stray-entry" } },
        "imagePullSecrets": [{ "name": "stray-entry" }] }))
    .unwrap();
    let platform = Api::<ServiceAccount>::namespaced(client.clone(), "kube-system");
    platform.create(&PostParams::default(), &stray).await.unwrap();

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

    the_hook_identity_reads_and_changes_nothing_else(&client, hook_identity, &tenants[0]).await;

    // It takes back everything but the platform ServiceAccount, names that one, and fails.
    let (code, out) = run_as(hook_identity, &args);
    assert_eq!(code, 1, "one object could not be taken back:\n{out}");
    let refused = format!("could not remove serviceaccount kube-system/{stray_name}: imagePullSecrets -= stray-entry");
    assert!(out.lines().any(|l| l.starts_with(&refused)), "{refused}:\n{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("could not remove ")).count(), 1, "{out}");
    let removed = out.lines().filter(|l| l.starts_with("removed ")).count();
    assert_eq!(removed + 1, planned.lines().filter(|l| l.starts_with("would remove ")).count(), "{out}");
    assert!(out.contains("1 of "), "the summary counts what was left:\n{out}");
    let stray = platform.get(&stray_name).await.unwrap();
    assert_eq!(stray.image_pull_secrets.unwrap().len(), 1, "the platform ServiceAccount is left as it was");
    platform.delete(&stray_name, &DeleteParams::default()).await.unwrap();
    for tenant in &tenants {
        let copies = Api::<Secret>::namespaced(client.clone(), tenant);
        assert!(copies.get_opt(&catalog.secret).await.unwrap().is_none(), "the copy in {tenant} is gone");
    }
    let tenants_own = Api::<Secret>::namespaced(client.clone(), &tenants[0]);
    assert!(tenants_own.get_opt("tenant-registry").await.unwrap().is_some(), "the tenant's own Secret stays");
    let sa = sas.get("widget-runner").await.unwrap();
    let names: Vec<String> = sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect();
    assert_eq!(names, ["tenant-own"], "the tenant's own entry stays");
    let ledger = Api::<olm_pullsecret_injector::inject::ledger::PullSecretCopy>::all(client.clone());
    assert!(ledger.list(&Default::default()).await.unwrap().items.is_empty(), "the ledger is empty");
}

/// The hook's ClusterRole may patch and delete any Secret and patch any ServiceAccount (RBAC
/// cannot name our copies), and the release's admission policies are gone by the time it runs:
/// the hook's own policies keep it to our copies. Attacked as whoever took over the Job's pod
/// would: read a tenant's Secret through a patch's answer, delete it, change a platform
/// ServiceAccount. The API server must refuse each, and the Secret must stay as it was.
async fn the_hook_identity_reads_and_changes_nothing_else(client: &kube::Client, identity: &str, tenant: &str) {
    let tenants_own: Secret = serde_json::from_value(json!({
        "metadata": { "name": "tenant-registry" },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": { ".dockerconfigjson": r#"{"auths":{"registry.tenant.example":{"auth":"dGVuYW50OnNlY3JldA=="}}}"# }
    }))
    .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), tenant);
    let before = secrets.create(&PostParams::default(), &tenants_own).await.unwrap();

    let hook = ControlPlane::with_olm().impersonating(NAMESPACE, identity).await;
    let as_hook = Api::<Secret>::namespaced(hook.clone(), tenant);
    let refused_by_policy = |result: Result<Secret, kube::Error>, policy: &str| match result {
        Err(kube::Error::Api(e)) => e.code == 403 && e.message.contains(policy),
        _ => false,
    };
    let secrets_policy = format!("{identity}-managed-secrets");
    let annotate = Patch::Merge(json!({ "metadata": { "annotations": { "probe": "x" } } }));
    // The policy is in force once the API server's policy cache has it (a second or so after
    // Helm created it, before the Job's pod would start); until then a dry-run answers.
    eventually("the hook's Secret policy to be in force", Duration::from_secs(10), || async {
        let dry_run = PatchParams { dry_run: true, ..Default::default() };
        refused_by_policy(as_hook.patch("tenant-registry", &dry_run, &annotate).await, &secrets_policy).then_some(())
    })
    .await;
    assert!(
        refused_by_policy(as_hook.patch("tenant-registry", &PatchParams::default(), &annotate).await, &secrets_policy),
        "a patch of a tenant's own Secret (whose answer would carry its data) is refused"
    );
    match as_hook.delete("tenant-registry", &DeleteParams::default()).await {
        Err(kube::Error::Api(e)) => assert!(e.code == 403 && e.message.contains(&secrets_policy), "{e:?}"),
        other => panic!("deleting a tenant's own Secret is refused, got {other:?}"),
    }
    let after = secrets.get("tenant-registry").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "the tenant's Secret is untouched");

    let platform = Api::<ServiceAccount>::namespaced(hook.clone(), "kube-system");
    match platform.patch("default", &PatchParams::default(), &annotate).await {
        Err(kube::Error::Api(e)) => {
            assert!(e.code == 403 && e.message.contains(&format!("{identity}-service-accounts")), "{e:?}")
        }
        other => panic!("changing a platform ServiceAccount is refused, got {other:?}"),
    }

    // And what RBAC itself says: no Secret may be read, anywhere.
    for namespace in [tenant, "kube-system", ""] {
        for verb in ["get", "list", "watch"] {
            let yes = webhook::allowed(client, identity, verb, namespace, "", "secrets").await;
            assert!(!yes, "{identity}: {verb} secrets in {namespace:?}");
        }
    }
}
