//! End to end with real OLM: olm-operator and catalog-operator (operator-lifecycle-manager
//! v0.38.0) install operators from file-based catalogs served by `opm serve`, Pods run on a node
//! simulated by kwok, and the webhook runs with the chart's RBAC. Every operator is installed
//! only through a Subscription, as a user does; the test plays only the operator's own part (it
//! creates an operand's Deployment for a custom resource).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use olm_pullsecret_injector::commands::dev::registry::{self, Package};
use serde_json::{Value, json};
use support::olm::{
    GLOBAL_CATALOGS, INSTALL, create_catalog_source, create_deployment, create_operator_group, create_pull_secret,
    csvs, install_plans, olm_resource, owner_ref, pods_of, pull_secret_names, serve_registry, subscribe, subscriptions,
    succeeded,
};
use support::webhook::{WebhookProcess, grant_operand_owner_read};
use support::{ControlPlane, create_namespace, create_namespace_if_missing, eventually, unique_name};

async fn setup() -> (kube::Client, &'static WebhookProcess) {
    let cp = ControlPlane::with_olm();
    let webhook = WebhookProcess::shared().await;
    (cp.admin().await, webhook)
}

/// A catalog served by its own `opm serve`, in OLM's global catalog namespace, with a pull
/// secret of its own listed in `spec.secrets`.
struct ServedCatalog {
    name: String,
    secret: String,
    /// The registry's `spec.address`.
    address: String,
}

/// Packages named `<prefix>-<i>` whose operands are `Thing` in group `<prefix>-<i>.example.com`,
/// each with the versions given (each replacing the one before).
fn packages(prefix: &str, count: usize, versions: &[&str]) -> Vec<Package> {
    (0..count)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let group = format!("{name}.example.com");
            let bundles = versions
                .iter()
                .enumerate()
                .map(|(n, v)| {
                    registry::operator_bundle(&name, v, n.checked_sub(1).map(|p| versions[p]), &group, "Thing")
                })
                .collect();
            Package { name, channel: "stable".into(), bundles }
        })
        .collect()
}

async fn serve_catalog(client: &kube::Client, packages: Vec<Package>) -> ServedCatalog {
    let name = unique_name("olm-catalog");
    let address = serve_registry(packages).await;
    create_namespace_if_missing(client, GLOBAL_CATALOGS).await;
    let secret = unique_name("registry-creds");
    create_pull_secret(client, GLOBAL_CATALOGS, &secret, "token-1").await;
    create_catalog_source(client, GLOBAL_CATALOGS, &name, &address, &[&secret]).await;
    ServedCatalog { name, secret, address }
}

/// The operator's Pods that exist now, once there is at least one.
async fn operator_pods(client: &kube::Client, ns: &str, package: &str) -> Vec<Pod> {
    pods_of(client, ns, package, 1).await
}

async fn service_account_pull_secrets(client: &kube::Client, ns: &str, name: &str) -> Vec<String> {
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), ns).get(name).await.unwrap();
    sa.image_pull_secrets.into_iter().flatten().map(|r| r.name).collect()
}

/// The user creates a custom resource of the operator; the operator (played here) creates its
/// operand's Deployment, owned by it, in the resource's namespace. Returns the operand's Pods.
async fn operand(client: &kube::Client, package: &str, ns: &str) -> Vec<Pod> {
    let group = format!("{package}.example.com");
    grant_operand_owner_read(client, &group, "things").await;
    let resource = kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk(&group, "v1", "Thing"),
        "things",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &resource);
    let name = unique_name("thing");
    let thing = json!({ "apiVersion": format!("{group}/v1"), "kind": "Thing", "metadata": { "name": name } });
    let created = api.create(&PostParams::default(), &serde_json::from_value(thing).unwrap()).await.unwrap();
    let owner = owner_ref(&format!("{group}/v1"), "Thing", &name, created.metadata.uid.as_deref().unwrap());
    let app = format!("{name}-app");
    create_deployment(client, ns, &app, Some(owner), 1, json!({})).await;
    pods_of(client, ns, &app, 1).await
}

/// Deletes the operator's Pods and returns their replacement, created by its ReplicaSet.
async fn replace_operator_pods(client: &kube::Client, ns: &str, package: &str) -> Pod {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("app={package}"));
    let old: Vec<String> = pods.list(&lp).await.unwrap().items.into_iter().filter_map(|p| p.metadata.uid).collect();
    pods.delete_collection(&DeleteParams::default(), &lp).await.unwrap();
    eventually("a replacement operator Pod", Duration::from_secs(60), || async {
        let list = pods.list(&lp).await.unwrap().items;
        list.into_iter().find(|p| p.metadata.uid.as_ref().is_some_and(|uid| !old.contains(uid)))
    })
    .await
}

async fn has_copy(client: &kube::Client, ns: &str, secret: &str) -> bool {
    Api::<Secret>::namespaced(client.clone(), ns).get_opt(secret).await.unwrap().is_some()
}

/// The decision chains the webhook logged for Pods in `ns`.
fn pod_decisions(webhook: &WebhookProcess, ns: &str) -> Vec<Value> {
    webhook.decisions(ns).into_iter().filter(|d| d["kind"] == "Pod").collect()
}

#[tokio::test]
async fn an_own_namespace_operator_installed_through_a_subscription_and_its_operand_get_the_secret() {
    let (client, webhook) = setup().await;
    let prefix = unique_name("own");
    let catalog = serve_catalog(&client, packages(&prefix, 1, &["1.0.0"])).await;
    let package = format!("{prefix}-0");
    let ns = unique_name("olm-own");
    create_namespace(&client, &ns).await;
    create_operator_group(&client, &ns, &[&ns]).await;

    let subscribed = Instant::now();
    subscribe(&client, &ns, &package, (GLOBAL_CATALOGS, &catalog.name), "Automatic", None).await;
    let pods = operator_pods(&client, &ns, &package).await;
    let admitted = subscribed.elapsed();
    assert_eq!(pull_secret_names(&pods[0]), [catalog.secret.as_str()]);
    succeeded(&client, &ns, &registry::csv_name(&package, "1.0.0")).await;
    eprintln!(
        "Subscription to injected operator Pod through real OLM: {admitted:.1?}; CSV Succeeded after {:.1?}",
        subscribed.elapsed()
    );
    assert!(has_copy(&client, &ns, &catalog.secret).await);
    let operator_sa = package.clone();
    eventually("the operator's ServiceAccount to list the copy", Duration::from_secs(30), || async {
        service_account_pull_secrets(&client, &ns, &operator_sa).await.contains(&catalog.secret).then_some(())
    })
    .await;

    let operand_pods = operand(&client, &package, &ns).await;
    assert_eq!(pull_secret_names(&operand_pods[0]), [catalog.secret.as_str()]);
    let chain = pod_decisions(webhook, &ns).last().map(|d| d["chain"].to_string()).unwrap_or_default();
    assert!(chain.contains(&format!("CatalogSource/{GLOBAL_CATALOGS}/{}", catalog.name)), "{chain}");
}

#[tokio::test]
async fn six_all_namespaces_operators_keep_their_secret_after_olm_collects_the_first_install_plan() {
    let (client, webhook) = setup().await;
    let prefix = unique_name("six");
    let catalog = serve_catalog(&client, packages(&prefix, 6, &["1.0.0"])).await;
    let ns = unique_name("olm-all");
    create_namespace(&client, &ns).await;
    create_operator_group(&client, &ns, &[""]).await;
    for i in 0..6 {
        let package = format!("{prefix}-{i}");
        subscribe(&client, &ns, &package, (GLOBAL_CATALOGS, &catalog.name), "Automatic", None).await;
        succeeded(&client, &ns, &registry::csv_name(&package, "1.0.0")).await;
    }
    // OLM keeps at most five InstallPlans per namespace: the first operator's is gone.
    let first = format!("{prefix}-0");
    let first_csv = registry::csv_name(&first, "1.0.0");
    let plans = install_plans(&client, &ns);
    eventually("OLM to delete the oldest InstallPlan", INSTALL, || async {
        let list = plans.list(&ListParams::default()).await.unwrap().items;
        let names_first =
            |p: &DynamicObject| p.data["spec"]["clusterServiceVersionNames"].to_string().contains(&first_csv);
        (list.len() <= 5 && !list.iter().any(names_first)).then_some(())
    })
    .await;

    // The first operator's replacement Pod, and its operand in a tenant namespace.
    let pod = replace_operator_pods(&client, &ns, &first).await;
    assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()]);
    let tenant = unique_name("olm-tenant");
    create_namespace(&client, &tenant).await;
    eventually("OLM to copy the CSV into the tenant namespace", INSTALL, || async {
        csvs(&client, &tenant).get_opt(&first_csv).await.unwrap()
    })
    .await;
    let operand_pods = operand(&client, &first, &tenant).await;
    assert_eq!(pull_secret_names(&operand_pods[0]), [catalog.secret.as_str()], "{:?}", pod_decisions(webhook, &tenant));
}

#[tokio::test]
async fn an_upgrade_approved_by_hand_keeps_the_secret_on_every_pod_and_the_service_account() {
    let (client, webhook) = setup().await;
    let prefix = unique_name("upgrade");
    let catalog = serve_catalog(&client, packages(&prefix, 1, &["1.0.0", "2.0.0"])).await;
    let package = format!("{prefix}-0");
    let (v1, v2) = (registry::csv_name(&package, "1.0.0"), registry::csv_name(&package, "2.0.0"));
    let ns = unique_name("olm-upgrade");
    create_namespace(&client, &ns).await;
    create_operator_group(&client, &ns, &[&ns]).await;
    subscribe(&client, &ns, &package, (GLOBAL_CATALOGS, &catalog.name), "Manual", Some("1.0.0")).await;

    // Nothing before approval: a plan waits, no CSV, no copy.
    let first_plan = plan_awaiting_approval(&client, &ns, &package, &v1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(csvs(&client, &ns).get_opt(&v1).await.unwrap().is_none());
    assert!(!has_copy(&client, &ns, &catalog.secret).await, "a copy before the plan was approved");

    approve(&client, &ns, &first_plan).await;
    succeeded(&client, &ns, &v1).await;
    let sa = package.clone();
    let v1_pod = operator_pods(&client, &ns, &package).await.remove(0);
    assert_eq!(pull_secret_names(&v1_pod), [catalog.secret.as_str()]);

    // OLM proposes v2; approved, v2 replaces v1 and takes its Deployment over.
    let next_plan = plan_awaiting_approval(&client, &ns, &package, &v2).await;
    // v1's Pods while v2 waits.
    let pod = replace_operator_pods(&client, &ns, &package).await;
    assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()]);
    approve(&client, &ns, &next_plan).await;
    let upgraded = succeeded(&client, &ns, &v2).await;
    eventually("v1 to be gone", INSTALL, || async {
        csvs(&client, &ns).get_opt(&v1).await.unwrap().is_none().then_some(())
    })
    .await;

    // The Deployment now belongs to v2 (same object) and rolled out v2's Pods.
    let deployment = Api::<Deployment>::namespaced(client.clone(), &ns).get(&sa).await.unwrap();
    let owners = deployment.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.iter().map(|o| o.uid.as_str()).collect::<Vec<_>>(), [upgraded.metadata.uid.as_deref().unwrap()]);
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let v2_pod = eventually("a Pod of v2", INSTALL, || async {
        let list = pods.list(&ListParams::default().labels(&format!("app={sa}"))).await.unwrap().items;
        list.into_iter().find(|p| {
            p.spec.as_ref().is_some_and(|s| s.containers[0].image.as_deref().unwrap_or("").ends_with(":2.0.0"))
        })
    })
    .await;
    assert_eq!(pull_secret_names(&v2_pod), [catalog.secret.as_str()]);
    let pod = replace_operator_pods(&client, &ns, &package).await;
    assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()]);
    // Every Pod the webhook saw in the namespace left with the secret (patched by the webhook,
    // or already given it by the ServiceAccount admission plugin, which runs first).
    let decisions = pod_decisions(webhook, &ns);
    assert!(decisions.len() >= 4, "{decisions:?}");
    assert!(
        decisions.iter().all(|d| d["secrets"].as_str().is_some_and(|s| s.contains(&catalog.secret))),
        "{decisions:?}"
    );
    // OLM rewrote the ServiceAccount for v2 without the copy; the webhook added it back as it
    // admitted the update.
    eventually("the ServiceAccount to list the copy after the upgrade", Duration::from_secs(60), || async {
        service_account_pull_secrets(&client, &ns, &sa).await.contains(&catalog.secret).then_some(())
    })
    .await;
    let restored = webhook.decisions(&ns).into_iter().any(|d| {
        d["kind"] == "ServiceAccount"
            && d["operation"] == "UPDATE"
            && d["name"] == sa.as_str()
            && d["decision"] == "patched"
    });
    assert!(restored, "no update of the ServiceAccount had the copy added back: {:?}", webhook.decisions(&ns));
}

/// The InstallPlan the Subscription points at once it awaits approval for `csv`, as a user
/// finds it (`status.installPlanRef`).
async fn plan_awaiting_approval(client: &kube::Client, ns: &str, subscription: &str, csv: &str) -> String {
    let plans = install_plans(client, ns);
    eventually(&format!("the InstallPlan of {csv} awaiting approval"), INSTALL, || async {
        let sub = subscriptions(client, ns).get(subscription).await.unwrap();
        let name = sub.data["status"]["installPlanRef"]["name"].as_str()?.to_string();
        let plan = plans.get_opt(&name).await.unwrap()?;
        let names_csv = plan.data["spec"]["clusterServiceVersionNames"].to_string().contains(csv);
        (names_csv && plan.data["status"]["phase"] == "RequiresApproval").then_some(name)
    })
    .await
}

async fn approve(client: &kube::Client, ns: &str, plan: &str) {
    let patch = json!({ "spec": { "approved": true } });
    install_plans(client, ns).patch(plan, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
}

/// A catalog of one package and its operator installed through a Subscription (automatic
/// approval) into a namespace of its own, until OLM reports it Succeeded.
async fn own_namespace_operator(client: &kube::Client, prefix: &str) -> (ServedCatalog, String, String) {
    let prefix = unique_name(prefix);
    let catalog = serve_catalog(client, packages(&prefix, 1, &["1.0.0"])).await;
    let package = format!("{prefix}-0");
    let ns = unique_name(&format!("olm-{prefix}"));
    create_namespace(client, &ns).await;
    create_operator_group(client, &ns, &[&ns]).await;
    subscribe(client, &ns, &package, (GLOBAL_CATALOGS, &catalog.name), "Automatic", None).await;
    succeeded(client, &ns, &registry::csv_name(&package, "1.0.0")).await;
    (catalog, package, ns)
}

#[tokio::test]
async fn a_deleted_subscription_leaves_the_running_operator_its_secret() {
    let (client, _webhook) = setup().await;
    let (catalog, package, ns) = own_namespace_operator(&client, "unsub").await;

    // OLM's documented uninstall starts here; the CSV keeps running. Its InstallPlans go with it.
    subscriptions(&client, &ns).delete(&package, &DeleteParams::default()).await.unwrap();
    let plans = install_plans(&client, &ns);
    eventually("the InstallPlans to be collected", INSTALL, || async {
        plans.list(&ListParams::default()).await.unwrap().items.is_empty().then_some(())
    })
    .await;
    let pod = replace_operator_pods(&client, &ns, &package).await;
    assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()]);
    let operand_pods = operand(&client, &package, &ns).await;
    assert_eq!(pull_secret_names(&operand_pods[0]), [catalog.secret.as_str()]);
}

#[tokio::test]
async fn a_subscription_repointed_to_a_renamed_catalog_follows_it() {
    let (client, webhook) = setup().await;
    let (catalog, package, ns) = own_namespace_operator(&client, "repoint").await;

    // oc-mirror publishes the same content under a new name; the admin repoints and removes the
    // old catalog. The same secret is listed.
    let renamed = unique_name("olm-catalog-mirror");
    create_catalog_source(&client, GLOBAL_CATALOGS, &renamed, &catalog.address, &[&catalog.secret]).await;
    let patch = json!({ "spec": { "source": renamed } });
    subscriptions(&client, &ns).patch(&package, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    Api::<DynamicObject>::namespaced_with(client.clone(), GLOBAL_CATALOGS, &olm_resource("v1alpha1", "CatalogSource"))
        .delete(&catalog.name, &DeleteParams::default())
        .await
        .unwrap();

    let expected = format!("CatalogSource/{GLOBAL_CATALOGS}/{renamed}");
    let started = Instant::now();
    loop {
        let pod = replace_operator_pods(&client, &ns, &package).await;
        let chain = pod_decisions(webhook, &ns).last().map(|d| d["chain"].to_string()).unwrap_or_default();
        if chain.contains(&expected) {
            assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()]);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the decision never named {expected}: {chain}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
