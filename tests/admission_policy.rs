//! The chart's ValidatingAdmissionPolicies: RBAC lets the project's service accounts
//! create, patch and (the reconciler) delete any Secret, and the reconciler patch any
//! ServiceAccount; the policies narrow that to managed pull-secret copies and to the
//! `imagePullSecrets` and our annotation of ServiceAccounts outside the platform namespaces.
//! Applied here exactly as helm renders them, and exercised as those service accounts.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::helm::{self, Helm};
use support::{ControlPlane, create_namespace, create_namespace_if_missing, eventually, unique_name};

const NS: &str = "olm-pullsecret-injector";
const SA: &str = "olm-pullsecret-injector";
const RECONCILER: &str = "olm-pullsecret-injector-reconciler";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

fn secret(name: &str, type_: &str, labelled: bool, extra: Value) -> Secret {
    let mut value = json!({ "metadata": { "name": name }, "type": type_ });
    if labelled {
        value["metadata"]["labels"] = json!({ MANAGED_BY: "olm-pullsecret-injector" });
    }
    match type_ {
        "kubernetes.io/dockerconfigjson" => value["stringData"] = json!({ ".dockerconfigjson": "{\"auths\":{}}" }),
        "kubernetes.io/dockercfg" => value["stringData"] = json!({ ".dockercfg": "{}" }),
        _ => value["stringData"] = json!({ "k": "v" }),
    }
    merge(&mut value, extra);
    serde_json::from_value(value).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The refusal of the chart's policy `policy` (not of RBAC or validation); its message.
fn refused_by<T: std::fmt::Debug>(result: Result<T, kube::Error>, policy: &str, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{what}: {status:?}");
            let name = format!("ValidatingAdmissionPolicy 'olm-pullsecret-injector-{policy}'");
            assert!(status.message.contains(&name), "{what}: not the policy's refusal: {}", status.message);
            status.message
        }
        other => panic!("{what} must be refused by the policy, got {other:?}"),
    }
}

/// The refusal of the managed-secrets policy.
fn assert_refused_by_policy<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str, verb: &str) {
    let message = refused_by(result, "managed-secrets", what);
    assert!(message.contains(&format!("may only {verb}")), "{what}: {message}");
    assert!(message.contains("app.kubernetes.io/managed-by=olm-pullsecret-injector"), "{message}");
}

/// Applies the chart's service account, RBAC, policy and binding; returns an admin client, a
/// client acting as the webhook's service account, and a fresh tenant namespace.
async fn setup() -> (kube::Client, kube::Client, String) {
    static READY: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cp = ControlPlane::shared();
    let admin = cp.admin().await;
    READY
        .get_or_init(|| async {
            create_namespace_if_missing(&admin, NS).await;
            let objects = Helm::shared().template(SA, NS, &json!({ "globalCatalogNamespace": NS }));
            let policy = helm::find(&objects, "ValidatingAdmissionPolicy", "olm-pullsecret-injector-managed-secrets");
            assert_eq!(policy["spec"]["validations"].as_array().unwrap().len(), 2);
            for object in objects.iter().filter(|o| {
                let kind = o["kind"].as_str().unwrap();
                kind == "ServiceAccount" || kind.contains("Role") || kind.starts_with("ValidatingAdmissionPolicy")
            }) {
                helm::apply(&admin, object, false).await.unwrap();
            }
            // The API server loads a new policy asynchronously: wait until a dry run is refused.
            let probe_ns = unique_name("probe");
            create_namespace(&admin, &probe_ns).await;
            let as_sa = cp.impersonating(NS, SA).await;
            let secrets = Api::<Secret>::namespaced(as_sa, &probe_ns);
            let dry_run = PostParams { dry_run: true, ..Default::default() };
            eventually("the policy to be enforced", Duration::from_secs(30), || async {
                let probe = secret("probe", "Opaque", false, json!({}));
                match secrets.create(&dry_run, &probe).await {
                    Err(kube::Error::Api(s)) if s.message.contains("ValidatingAdmissionPolicy") => Some(()),
                    Ok(_) => None,
                    Err(e) => panic!("unexpected answer while waiting for the policy: {e}"),
                }
            })
            .await;
        })
        .await;
    let tenant = unique_name("tenant");
    create_namespace(&admin, &tenant).await;
    (admin, cp.impersonating(NS, SA).await, tenant)
}

#[tokio::test]
async fn the_webhook_account_may_not_create_secrets_other_than_labelled_pull_secrets() {
    let (_admin, as_sa, tenant) = setup().await;
    let secrets = Api::<Secret>::namespaced(as_sa, &tenant);
    let pp = PostParams::default();

    let opaque = secret("opaque", "Opaque", false, json!({}));
    assert_refused_by_policy(secrets.create(&pp, &opaque).await, "an Opaque secret", "create");
    // Even with our label: only the two pull-secret types.
    let labelled_opaque = secret("labelled-opaque", "Opaque", true, json!({}));
    assert_refused_by_policy(secrets.create(&pp, &labelled_opaque).await, "a labelled Opaque secret", "create");
    // A token for the namespace's default service account (RBAC alone would allow minting it).
    let token = secret(
        "token",
        "kubernetes.io/service-account-token",
        true,
        json!({ "metadata": { "annotations": { "kubernetes.io/service-account.name": "default" } } }),
    );
    assert_refused_by_policy(secrets.create(&pp, &token).await, "a service-account token", "create");
    let unlabelled = secret("unlabelled", "kubernetes.io/dockerconfigjson", false, json!({}));
    assert_refused_by_policy(secrets.create(&pp, &unlabelled).await, "an unlabelled pull secret", "create");
    let wrong_label = secret(
        "wrong-label",
        "kubernetes.io/dockerconfigjson",
        false,
        json!({ "metadata": { "labels": { MANAGED_BY: "someone-else" } } }),
    );
    assert_refused_by_policy(secrets.create(&pp, &wrong_label).await, "a pull secret managed by another", "create");

    // Managed copies of both types are allowed.
    for (name, type_) in [("copy", "kubernetes.io/dockerconfigjson"), ("legacy-copy", "kubernetes.io/dockercfg")] {
        let copy = secret(
            name,
            type_,
            true,
            json!({ "metadata": { "annotations": {
            "pullsecret-injector.io/source": "catalogs/registry-creds" } } }),
        );
        secrets.create(&pp, &copy).await.unwrap_or_else(|e| panic!("a managed {type_} copy must be allowed: {e}"));
    }
    // And updated, as the webhook updates them: a JSON patch that keeps the label.
    let patch = json!([{ "op": "test", "path": "/metadata/labels/app.kubernetes.io~1managed-by", "value": "olm-pullsecret-injector" },
        { "op": "replace", "path": "/data/.dockerconfigjson", "value": "eyJhdXRocyI6eyJhIjp7fX19" }]);
    secrets
        .patch("copy", &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(patch).unwrap()))
        .await
        .expect("updating a managed copy");
    // Dropping the label from a copy (turning it into something unmanaged) is refused.
    let unlabel = json!({ "metadata": { "labels": { MANAGED_BY: null } } });
    assert_refused_by_policy(
        secrets.patch("copy", &PatchParams::default(), &Patch::Merge(&unlabel)).await,
        "removing the label from a copy",
        "update",
    );
}

#[tokio::test]
async fn the_webhook_account_may_update_and_delete_only_its_copies() {
    let (admin, as_sa, tenant) = setup().await;
    let pp = PostParams::default();
    let by_admin = Api::<Secret>::namespaced(admin.clone(), &tenant);
    let by_sa = Api::<Secret>::namespaced(as_sa, &tenant);
    // Deletes are the reconciler's (the webhook's identity may not delete at all).
    let by_reconciler = Api::<Secret>::namespaced(ControlPlane::shared().impersonating(NS, RECONCILER).await, &tenant);

    // The tenant's own secrets, made by someone else.
    by_admin.create(&pp, &secret("tenant-pull", "kubernetes.io/dockerconfigjson", false, json!({}))).await.unwrap();
    by_admin.create(&pp, &secret("tenant-opaque", "Opaque", false, json!({}))).await.unwrap();
    let copy = by_sa.create(&pp, &secret("copy", "kubernetes.io/dockerconfigjson", true, json!({}))).await.unwrap();
    assert!(copy.metadata.uid.is_some());

    // Taking over a tenant's pull secret by labelling it is an update of something not ours.
    let label = json!({ "metadata": { "labels": { MANAGED_BY: "olm-pullsecret-injector" } } });
    assert_refused_by_policy(
        by_sa.patch("tenant-pull", &PatchParams::default(), &Patch::Merge(&label)).await,
        "labelling a tenant's secret",
        "update",
    );
    for name in ["tenant-pull", "tenant-opaque"] {
        assert_refused_by_policy(by_reconciler.delete(name, &DeleteParams::default()).await, name, "delete");
        assert!(by_admin.get_opt(name).await.unwrap().is_some(), "{name} is still there");
    }
    by_reconciler.delete("copy", &DeleteParams::default()).await.expect("deleting a managed copy is allowed");
    eventually("the copy to be gone", Duration::from_secs(10), || async {
        by_admin.get_opt("copy").await.unwrap().is_none().then_some(())
    })
    .await;

    // The policy binds only the webhook's service account: the administrator is not limited.
    by_admin.delete("tenant-opaque", &DeleteParams::default()).await.unwrap();
}

/// The refusal of the ServiceAccount policy.
fn assert_refused_by_sa_policy<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    refused_by(result, "service-accounts", what);
}

#[tokio::test]
async fn the_reconciler_may_change_only_pull_secrets_and_its_annotation_of_a_service_account() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let (admin, _, tenant) = setup().await;
    let as_reconciler = ControlPlane::shared().impersonating(NS, RECONCILER).await;
    let by_admin = Api::<ServiceAccount>::namespaced(admin.clone(), &tenant);
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "app",
        "labels": { "team": "a" }, "annotations": { "owner": "team-a" } },
        "imagePullSecrets": [{ "name": "own" }] }))
    .unwrap();
    by_admin.create(&PostParams::default(), &sa).await.unwrap();
    let sas = Api::<ServiceAccount>::namespaced(as_reconciler.clone(), &tenant);
    let pp = PatchParams::default();
    // The API server loads a new policy asynchronously: wait until a dry run is refused by it.
    let dry_run = PatchParams { dry_run: true, ..Default::default() };
    let label = json!({ "metadata": { "labels": { "team": "b" } } });
    eventually("the ServiceAccount policy to be enforced", Duration::from_secs(30), || async {
        match sas.patch("app", &dry_run, &Patch::Merge(&label)).await {
            Err(kube::Error::Api(s)) if s.message.contains("ValidatingAdmissionPolicy") => Some(()),
            _ => None,
        }
    })
    .await;

    // What the reconciler does: add and remove entries, with its annotation.
    let add = json!({ "metadata": { "annotations": { "pullsecret-injector.io/injected": "creds" } },
        "imagePullSecrets": [{ "name": "own" }, { "name": "creds" }] });
    sas.patch("app", &pp, &Patch::Merge(&add)).await.expect("adding an entry and the annotation");
    let remove = json!({ "metadata": { "annotations": { "pullsecret-injector.io/injected": null } },
        "imagePullSecrets": [{ "name": "own" }] });
    sas.patch("app", &pp, &Patch::Merge(&remove)).await.expect("removing them");

    // Anything else of a ServiceAccount is refused.
    let edits = [
        ("a label", json!({ "metadata": { "labels": { "team": "b" } } })),
        ("another annotation", json!({ "metadata": { "annotations": { "owner": "us" } } })),
        ("a new annotation", json!({ "metadata": { "annotations": { "extra": "x" } } })),
        ("token secrets", json!({ "secrets": [{ "name": "a-token" }] })),
        ("token automounting", json!({ "automountServiceAccountToken": false })),
    ];
    for (what, edit) in edits {
        assert_refused_by_sa_policy(sas.patch("app", &pp, &Patch::Merge(&edit)).await, what);
    }
    // Creating or deleting one: RBAC grants neither (the policy would refuse both too).
    let new: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "minted" } })).unwrap();
    let created = sas.create(&PostParams::default(), &new).await;
    assert!(matches!(&created, Err(kube::Error::Api(s)) if s.code == 403), "{created:?}");
    let deleted = sas.delete("app", &DeleteParams::default()).await;
    assert!(matches!(&deleted, Err(kube::Error::Api(s)) if s.code == 403), "{deleted:?}");
    // Not even its own field in a platform namespace.
    let system = Api::<ServiceAccount>::namespaced(as_reconciler, "kube-system");
    let entry = json!({ "imagePullSecrets": [{ "name": "creds" }] });
    assert_refused_by_sa_policy(
        system.patch("default", &pp, &Patch::Merge(&entry)).await,
        "an entry on kube-system's default ServiceAccount",
    );
    let after = by_admin.get("app").await.unwrap();
    assert_eq!(after.metadata.labels.unwrap()["team"], "a");
    assert_eq!(after.metadata.annotations.unwrap().get("owner").map(String::as_str), Some("team-a"));
}

/// Each process proves at start that the policy binds its own identity (`policy_check`): a
/// dry-run unguarded Secret is refused for the webhook's and the reconciler's accounts, and
/// admitted for an account the policy does not name, which the same RBAC lets create Secrets.
/// A process with the check on becomes ready only once it is in force.
#[tokio::test]
async fn each_identity_finds_the_policy_in_force_and_an_unbound_one_does_not() {
    use olm_pullsecret_injector::runtime::policy_check::{Guard, probe};
    let (admin, webhook, tenant) = setup().await;
    let cp = ControlPlane::shared();
    assert_eq!(probe(&webhook, NS).await.unwrap(), Guard::InForce);
    assert_eq!(probe(&cp.impersonating(NS, RECONCILER).await, NS).await.unwrap(), Guard::InForce);

    // Another account with the right to create Secrets in the tenant namespace, unbound.
    let role = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": { "name": "secret-writer", "namespace": tenant },
        "rules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] }] });
    let binding = json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "secret-writer", "namespace": tenant },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "secret-writer" },
        "subjects": [{ "kind": "ServiceAccount", "namespace": tenant, "name": "unguarded" }] });
    helm::apply(&admin, &role, false).await.unwrap();
    helm::apply(&admin, &binding, false).await.unwrap();
    let unguarded = cp.impersonating(&tenant, "unguarded").await;
    let found = eventually("the RoleBinding to take effect", Duration::from_secs(10), || async {
        probe(&unguarded, &tenant).await.ok().filter(|g| *g == Guard::Missing)
    })
    .await;
    assert_eq!(found, Guard::Missing);

    // A replica (the check is on by default, as in the chart) becomes ready with the policy in
    // force; every replica of the e2e tests does the same.
    support::webhook::grant_chart_rbac_with(&admin, |_| {}).await;
    let replica = support::webhook::start(cp, "policy-checked", &[]);
    let (status, body) = support::webhook::http_get(&format!("127.0.0.1:{}", replica.admin_port), "/readyz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ready"));
}
