//! End to end: the reconciler inside `serve` keeps the copies true after admission. Rotation,
//! clean-up after a (short, for the test) grace period, and backfill of service accounts, against
//! the real control plane, with the webhook running as the chart's service account.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::olm::*;
use support::webhook::{self, WebhookProcess};
use support::{ControlPlane, create_namespace, eventually, unique_name};

const GRACE: &str = "3s";

static WEBHOOK: tokio::sync::OnceCell<WebhookProcess> = tokio::sync::OnceCell::const_new();

async fn setup() -> (kube::Client, &'static WebhookProcess) {
    let cp = ControlPlane::with_olm();
    let webhook = WEBHOOK
        .get_or_init(|| async {
            let admin = cp.admin().await;
            webhook::grant_chart_rbac_with(&admin, |_| {}).await;
            let args = ["--drain-delay", "0s", "--cleanup-grace", GRACE, "--failure-policy", "Fail"];
            let process = webhook::start(cp, "reconciler", &args);
            webhook::register_with(&admin, &process, "Fail").await;
            process
        })
        .await;
    (cp.admin().await, webhook)
}

async fn secret_opt(client: &kube::Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns).get_opt(name).await.unwrap()
}

async fn service_account(client: &kube::Client, ns: &str, name: &str) -> ServiceAccount {
    Api::<ServiceAccount>::namespaced(client.clone(), ns).get(name).await.unwrap()
}

fn sa_pull_secrets(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect()
}

fn injected(sa: &ServiceAccount) -> Option<String> {
    sa.metadata.annotations.as_ref()?.get("pullsecret-injector.io/injected").cloned()
}

/// A ServiceAccount owned by an operand custom resource, created through the webhook.
async fn operand_service_account(client: &kube::Client, ns: &str, name: &str, owner: &serde_json::Value) {
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": { "name": name, "ownerReferences": [owner] },
        "imagePullSecrets": [{ "name": "tenant-own-entry" }]
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), ns).create(&PostParams::default(), &sa).await.unwrap();
}

/// Events the webhook published about an object.
async fn events_for(client: &kube::Client, ns: &str, name: &str, reason: &str) -> Vec<Event> {
    let list = Api::<Event>::namespaced(client.clone(), ns).list(&ListParams::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

fn catalog_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "CatalogSource"))
}

#[tokio::test]
async fn a_rotated_source_reaches_every_copy() {
    let (client, _) = setup().await;
    let (catalog, _, tenants) = private_operator(&client, &["rot", "rot", "rot"]).await;
    operand_pods_with_copies(&client, &catalog, &tenants).await;

    let rotated = docker_config("registry.example", "token-2");
    let sources = Api::<Secret>::namespaced(client.clone(), &catalog.namespace);
    let started = Instant::now();
    let patch = json!({ "stringData": { ".dockerconfigjson": rotated } });
    let source = sources.patch(catalog.secret.as_str(), &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_ne!(source.data, catalog.source.data);

    for tenant in &tenants {
        eventually(&format!("the copy in {tenant} to be rotated"), Duration::from_secs(10), || async {
            let copy = secret_opt(&client, tenant, catalog.secret.as_str()).await?;
            (copy.data == source.data).then_some(())
        })
        .await;
    }
    println!("rotation reached {} copies in {:?}", tenants.len(), started.elapsed());

    let copy = secret_opt(&client, &tenants[0], catalog.secret.as_str()).await.unwrap();
    let hash = copy.metadata.annotations.unwrap()["pullsecret-injector.io/content-hash"].clone();
    assert_eq!(hash, olm_pullsecret_injector::inject::copies::content_hash(&source));
    for reason in ["PullSecretCopied", "PullSecretSynced"] {
        eventually(&format!("a {reason} event on the copy"), Duration::from_secs(10), || async {
            (!events_for(&client, &tenants[0], catalog.secret.as_str(), reason).await.is_empty()).then_some(())
        })
        .await;
    }
}

/// A tenant with copies of a catalog's two secrets, made for a service account owned by an
/// operand; the tenant also has a secret and an SA entry of its own.
struct Tenant {
    catalog: Catalog,
    /// The catalog's second secret.
    second: String,
    operator: Operator,
    ns: String,
    owner: serde_json::Value,
}

async fn tenant_with_two_copies(client: &kube::Client) -> Tenant {
    let second = unique_name("second-creds");
    create_pull_secret(client, GLOBAL_CATALOGS, &second, "second-1").await;
    let catalog = private_catalog(client, &[&second]).await;
    let operator_ns = unique_name("operator");
    let ns = unique_name("tenant");
    create_namespace(client, &operator_ns).await;
    create_namespace(client, &ns).await;
    let operator = install_operator(client, &catalog, &operator_ns, &[&operator_ns, &ns]).await;
    create_secret(client, &ns, "tenant-own", "Opaque", json!({ "k": "v" })).await;
    let owner = create_operand(client, WIDGET, &ns, "prod").await;
    operand_service_account(client, &ns, "app", &owner).await;
    let sa = service_account(client, &ns, "app").await;
    assert_eq!(sa_pull_secrets(&sa), ["tenant-own-entry", catalog.secret.as_str(), second.as_str()]);
    assert_eq!(injected(&sa), Some(format!("{},{second}", catalog.secret)));
    Tenant { catalog, second, operator, ns, owner }
}

/// Waits until the copy is gone, and checks that what is not ours stayed.
async fn wait_removed(client: &kube::Client, ns: &str, copy: &str) {
    eventually(&format!("the copy {ns}/{copy} to be removed"), Duration::from_secs(40), || async {
        secret_opt(client, ns, copy).await.is_none().then_some(())
    })
    .await;
    assert!(secret_opt(client, ns, "tenant-own").await.is_some(), "an unrelated secret is never touched");
    let sa = service_account(client, ns, "app").await;
    assert!(!sa_pull_secrets(&sa).contains(&copy.to_string()), "the SA entry goes with the copy");
    assert_eq!(sa_pull_secrets(&sa)[0], "tenant-own-entry", "an entry we did not add stays");
}

#[tokio::test]
async fn a_secret_removed_from_the_catalog_is_cleaned_up_and_other_entries_stay() {
    let (client, _) = setup().await;
    let t = tenant_with_two_copies(&client).await;

    let patch = json!({ "spec": { "secrets": [t.catalog.secret.as_str()] } });
    catalog_api(&client, &t.catalog.namespace)
        .patch(&t.catalog.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_removed(&client, &t.ns, t.second.as_str()).await;

    let sa = service_account(&client, &t.ns, "app").await;
    assert_eq!(sa_pull_secrets(&sa), ["tenant-own-entry", t.catalog.secret.as_str()]);
    assert_eq!(injected(&sa).as_deref(), Some(t.catalog.secret.as_str()));
    assert!(secret_opt(&client, &t.ns, t.catalog.secret.as_str()).await.is_some(), "a copy still offered stays");
    // Events are published in the background, after the change they report.
    eventually("a PullSecretRemoved event on the service account", Duration::from_secs(10), || async {
        (!events_for(&client, &t.ns, "app", "PullSecretRemoved").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_deleted_catalog_source_takes_its_copies_away() {
    let (client, _) = setup().await;
    let t = tenant_with_two_copies(&client).await;

    catalog_api(&client, &t.catalog.namespace).delete(&t.catalog.name, &DeleteParams::default()).await.unwrap();
    wait_removed(&client, &t.ns, t.catalog.secret.as_str()).await;
    wait_removed(&client, &t.ns, t.second.as_str()).await;
    let sa = service_account(&client, &t.ns, "app").await;
    assert_eq!(sa_pull_secrets(&sa), ["tenant-own-entry"]);
    assert_eq!(injected(&sa), None);
}

/// OLM's uninstall: the Subscription, then the CSV. The copies stay while a live Pod names them.
#[tokio::test]
async fn an_uninstalled_operator_takes_copies_away_once_no_live_pod_names_them() {
    let (client, webhook) = setup().await;
    let t = tenant_with_two_copies(&client).await;
    let pod = bare_pod(json!({ "name": "still-running", "ownerReferences": [t.owner] }));
    let pods = Api::<Pod>::namespaced(client.clone(), &t.ns);
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(pull_secret_names(&created), [t.catalog.secret.as_str(), t.second.as_str()]);

    uninstall(&client, &t.operator).await;

    // Past the grace period the reconciler sees the live Pod and keeps the copies.
    eventually("the reconciler to keep a copy a live Pod names", Duration::from_secs(40), || async {
        (!webhook.logged("copy kept: a live Pod still names it", &t.ns).is_empty()).then_some(())
    })
    .await;
    assert!(secret_opt(&client, &t.ns, t.catalog.secret.as_str()).await.is_some());
    assert!(secret_opt(&client, &t.ns, t.second.as_str()).await.is_some());

    pods.delete("still-running", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    wait_removed(&client, &t.ns, t.catalog.secret.as_str()).await;
    wait_removed(&client, &t.ns, t.second.as_str()).await;
}

/// OLM's uninstall, as documented: delete the Subscription, then the CSV.
async fn uninstall(client: &kube::Client, operator: &Operator) {
    let olm = |version, kind| {
        Api::<DynamicObject>::namespaced_with(client.clone(), &operator.namespace, &olm_resource(version, kind))
    };
    olm("v1alpha1", "Subscription").delete("widget-operator", &DeleteParams::default()).await.unwrap();
    olm("v1alpha1", "ClusterServiceVersion").delete(&operator.csv, &DeleteParams::default()).await.unwrap();
}

/// The Subscription deleted while the CSV runs (to stop upgrades, or the first step of an
/// uninstall that stops there): the link the reconciler wrote down while the Subscription named
/// the CSV holds, new Pods get their secrets and the copies stay; once the CSV is gone, its link
/// goes and the copies follow after the grace period.
#[tokio::test]
async fn a_deleted_subscriptions_link_holds_until_its_csv_is_gone() {
    use olm_pullsecret_injector::state::links::{PullSecretLink, name_of};
    let (client, _) = setup().await;
    let t = tenant_with_two_copies(&client).await;
    let links = Api::<PullSecretLink>::all(client.clone());
    let name = name_of(&t.operator.namespace, &t.operator.csv);
    let link = eventually("the reconciler to write down the CSV's link", Duration::from_secs(30), || async {
        links.get_opt(&name).await.unwrap()
    })
    .await;
    assert_eq!(link.spec.csv_uid, t.operator.csv_uid);
    assert_eq!(
        (link.spec.catalog_namespace.as_str(), link.spec.catalog_name.as_str()),
        (t.catalog.namespace.as_str(), t.catalog.name.as_str())
    );

    let subscriptions: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &t.operator.namespace, &olm_resource("v1alpha1", "Subscription"));
    subscriptions.delete("widget-operator", &DeleteParams::default()).await.unwrap();
    // Past the grace period, a new Pod still gets both secrets and the copies are there.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pods = Api::<Pod>::namespaced(client.clone(), &t.ns);
    let pod = bare_pod(json!({ "generateName": "after-", "ownerReferences": [t.owner] }));
    let created = pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(pull_secret_names(&created), [t.catalog.secret.as_str(), t.second.as_str()]);
    assert!(secret_opt(&client, &t.ns, t.catalog.secret.as_str()).await.is_some());
    assert!(links.get_opt(&name).await.unwrap().is_some(), "the link stays while the CSV runs");

    pods.delete(&created.metadata.name.unwrap(), &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
        .await
        .unwrap();
    Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &t.operator.namespace,
        &olm_resource("v1alpha1", "ClusterServiceVersion"),
    )
    .delete(&t.operator.csv, &DeleteParams::default())
    .await
    .unwrap();
    eventually("the gone CSV's link to be deleted", Duration::from_secs(30), || async {
        links.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
    wait_removed(&client, &t.ns, t.catalog.secret.as_str()).await;
}

/// A ServiceAccount of an operand, created before its operator was installed: the webhook had no
/// reason to touch it then, and only the reconciler can add the secret. The ServiceAccount the
/// install strategy names, created early too, is OLM's to adopt: its InstallPlan step rewrites the
/// list without the tenant's entry (OLM's own doing, not undone: the entry is not ours), and the
/// webhook adds the copy back on that update.
#[tokio::test]
async fn a_service_account_created_before_its_operator_is_backfilled() {
    let (client, _) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let (ns, tenants) = operator_and_tenant_namespaces(&client, &["early"]).await;
    let tenant = &tenants[0];
    ensure_crd(&client, WIDGET).await;
    let owner = create_operand(&client, WIDGET, tenant, "prod").await;
    operand_service_account(&client, tenant, "app", &owner).await;
    let runner: ServiceAccount = serde_json::from_value(json!({
        "metadata": { "name": "widget-runner" }, "imagePullSecrets": [{ "name": "tenant-own-entry" }]
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &ns).create(&PostParams::default(), &runner).await.unwrap();
    assert_eq!(sa_pull_secrets(&service_account(&client, tenant, "app").await), ["tenant-own-entry"]);

    let op = install_operator(&client, &catalog, &ns, &[&ns, tenant]).await;
    let sa = eventually("the reconciler to backfill the service account", Duration::from_secs(20), || async {
        let sa = service_account(&client, tenant, "app").await;
        (sa_pull_secrets(&sa) == ["tenant-own-entry", catalog.secret.as_str()]).then_some(sa)
    })
    .await;
    assert_eq!(injected(&sa).as_deref(), Some(catalog.secret.as_str()));
    assert!(secret_opt(&client, tenant, catalog.secret.as_str()).await.is_some());
    eventually("a PullSecretSynced event on the service account", Duration::from_secs(10), || async {
        (!events_for(&client, tenant, "app", "PullSecretSynced").await.is_empty()).then_some(())
    })
    .await;

    settled(&client, &op).await;
    let runner = eventually("OLM's adopted ServiceAccount to list the copy", Duration::from_secs(20), || async {
        let sa = service_account(&client, &ns, "widget-runner").await;
        (sa_pull_secrets(&sa) == [catalog.secret.as_str()]).then_some(sa)
    })
    .await;
    let adopted = runner.metadata.owner_references.iter().flatten().any(|o| o.uid == op.csv_uid);
    assert!(adopted, "OLM's step adopts the ServiceAccount: {runner:?}");
    assert_eq!(injected(&runner).as_deref(), Some(catalog.secret.as_str()));
}

/// A namespace selector in the text grammar of Kubernetes (here `!=`) decides where the catalog's
/// secret goes; one that does not parse sends it nowhere and is reported on the CatalogSource.
#[tokio::test]
async fn namespace_selectors_follow_the_kubernetes_grammar_and_a_broken_one_is_reported() {
    let (client, _webhook) = setup().await;
    let (catalog, _op, tenants) = private_operator(&client, &["sel-dev", "sel-prod"]).await;
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    for (tenant, env) in tenants.iter().zip(["dev", "prod"]) {
        let labels = json!({ "metadata": { "labels": { "env": env } } });
        namespaces.patch(tenant, &PatchParams::default(), &Patch::Merge(&labels)).await.unwrap();
    }
    let catalogs = catalog_api(&client, &catalog.namespace);
    let annotate = |selector: &'static str| json!({ "metadata": { "annotations": { "pullsecret-injector.io/namespace-selector": selector } } });
    catalogs.patch(&catalog.name, &PatchParams::default(), &Patch::Merge(&annotate("env!=prod"))).await.unwrap();

    let mut owners = Vec::new();
    for tenant in &tenants {
        owners.push(create_operand(&client, WIDGET, tenant, "prod").await);
    }
    // What a Pod of each tenant's operand would get (dry run: nothing is created).
    let would_get = |i: usize| {
        let (client, tenant, owner) = (client.clone(), tenants[i].clone(), owners[i].clone());
        async move {
            let pod = bare_pod(json!({ "generateName": "probe-", "ownerReferences": [owner] }));
            let dry_run = PostParams { dry_run: true, ..Default::default() };
            let created = Api::<Pod>::namespaced(client, &tenant).create(&dry_run, &pod).await.unwrap();
            pull_secret_names(&created)
        }
    };
    eventually("env!=prod to select the dev tenant only", Duration::from_secs(30), || async {
        (would_get(0).await == [catalog.secret.as_str()] && would_get(1).await.is_empty()).then_some(())
    })
    .await;

    catalogs.patch(&catalog.name, &PatchParams::default(), &Patch::Merge(&annotate("env notin prod"))).await.unwrap();
    eventually("a broken selector to select nothing", Duration::from_secs(30), || async {
        would_get(0).await.is_empty().then_some(())
    })
    .await;
    let event = eventually("an InvalidNamespaceSelector event on the catalog", Duration::from_secs(30), || async {
        events_for(&client, &catalog.namespace, &catalog.name, "InvalidNamespaceSelector").await.pop()
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.note.as_deref().unwrap_or("").contains("env notin prod"), "{event:?}");
}

/// A CatalogSource with secrets outside the configured catalog namespaces serves nobody, not even
/// an operator installed beside it, and is reported: an Event on it and a metric.
#[tokio::test]
async fn a_catalog_outside_the_catalog_namespaces_is_reported_and_serves_nobody() {
    let (client, webhook) = setup().await;
    let ns = unique_name("stray");
    create_namespace(&client, &ns).await;
    let catalog = catalog_in(&client, &ns, &[]).await;
    let op = install_operator_unseen(&client, &catalog, &ns, &[&ns], WIDGET).await;
    private_operator(&client, &[]).await;
    let pod = bare_pod(json!({ "name": "operator", "ownerReferences": [op.csv_owner()] }));
    let created = Api::<Pod>::namespaced(client.clone(), &ns).create(&PostParams::default(), &pod).await.unwrap();
    assert!(pull_secret_names(&created).is_empty());

    let event = eventually("a CatalogNamespaceNotConfigured event on the catalog", Duration::from_secs(30), || async {
        events_for(&client, &ns, &catalog.name, "CatalogNamespaceNotConfigured").await.pop()
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    let admin = format!("127.0.0.1:{}", webhook.admin_port);
    let (_, metrics) = webhook::http_get(&admin, "/metrics").unwrap();
    let reported = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"pullsecret_injector_ignored_catalogs{reason="namespace_not_configured"} "#))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(reported.is_some_and(|n| n >= 1), "{metrics}");
    assert!(secret_opt(&client, &ns, &catalog.secret).await.is_some(), "the source itself is untouched");
}

/// A tenant deletes a copy that is still needed, then alters its data, then takes it over as its
/// own Secret: admission marks each in the ledger (the copies registration), and the reconciler
/// makes the copy again, writes the source's data back, and leaves the tenant's Secret alone
/// while the next Pod gets a copy under the hashed name.
#[tokio::test]
async fn a_copy_a_tenant_deletes_or_alters_is_made_true_again_and_one_it_takes_over_is_left_alone() {
    let (client, _) = setup().await;
    let (catalog, tenant) = tenant_with_a_copy(&client, "tamper").await;
    let tenant = tenant.as_str();
    let secrets = Api::<Secret>::namespaced(client.clone(), tenant);
    let name = catalog.secret.as_str();

    let before = secrets.get(name).await.unwrap();
    let started = Instant::now();
    secrets.delete(name, &DeleteParams::default()).await.unwrap();
    let back = eventually("the deleted copy to come back", Duration::from_secs(30), || async {
        secrets.get_opt(name).await.unwrap().filter(|s| s.metadata.uid != before.metadata.uid)
    })
    .await;
    println!("a deleted copy came back after {:?}", started.elapsed());
    assert_eq!(back.data, catalog.source.data);

    let started = Instant::now();
    let guess = json!({ "stringData": { ".dockerconfigjson": docker_config("registry.example", "a-guess") } });
    secrets.patch(name, &PatchParams::default(), &Patch::Merge(&guess)).await.unwrap();
    eventually("the altered copy to be written back", Duration::from_secs(30), || async {
        (secrets.get(name).await.ok()?.data == catalog.source.data).then_some(())
    })
    .await;
    println!("an altered copy was written back after {:?}", started.elapsed());

    // Taken over: the tenant removes our label and puts its own credential in.
    let own = json!({ "metadata": { "labels": { "app.kubernetes.io/managed-by": null } },
        "stringData": { ".dockerconfigjson": docker_config("registry.example", "the-tenants-own") } });
    let taken = secrets.patch(name, &PatchParams::default(), &Patch::Merge(&own)).await.unwrap();
    the_tenants_secret_stays_and_the_next_pod_gets_the_hashed_name(&client, tenant, &catalog, &taken).await;
}

/// A tenant with our copy of a fresh catalog's secret, made for an operand's Pod.
async fn tenant_with_a_copy(client: &kube::Client, prefix: &str) -> (Catalog, String) {
    let (catalog, _, mut tenants) = private_operator(client, &[prefix]).await;
    operand_pods_with_copies(client, &catalog, &tenants).await;
    (catalog, tenants.remove(0))
}

/// After a tenant put a Secret of its own (`own`) under our copy's name: the ledger lets go of
/// the copy, the next Pod gets a copy under the hashed name, and `own` is never touched.
async fn the_tenants_secret_stays_and_the_next_pod_gets_the_hashed_name(
    client: &kube::Client,
    tenant: &str,
    catalog: &Catalog,
    own: &Secret,
) {
    let name = catalog.secret.as_str();
    let ledger = Api::<olm_pullsecret_injector::inject::ledger::PullSecretCopy>::all(client.clone());
    let entry = olm_pullsecret_injector::inject::ledger::entry_name(tenant, name);
    eventually("the ledger to let go of the copy", Duration::from_secs(30), || async {
        ledger.get_opt(&entry).await.unwrap().is_none().then_some(())
    })
    .await;
    let owner = create_operand(client, WIDGET, tenant, "next").await;
    let pod = bare_pod(json!({ "name": "next", "ownerReferences": [owner] }));
    let created = Api::<Pod>::namespaced(client.clone(), tenant).create(&PostParams::default(), &pod).await.unwrap();
    let names = pull_secret_names(&created);
    assert!(names.len() == 1 && names[0].starts_with(&format!("{name}-")), "{names:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = Api::<Secret>::namespaced(client.clone(), tenant).get(name).await.unwrap();
    assert_eq!(still.metadata.uid, own.metadata.uid, "the tenant's Secret was replaced");
    assert_eq!(still.metadata.resource_version, own.metadata.resource_version, "the tenant's Secret was touched");
    assert_eq!(still.data, own.data);
}

/// A tenant deletes our copy and puts a Secret of its own under that name: the webhook is told of
/// the delete and the reconciler sees the name taken, so the tenant's Secret is left alone and the
/// next Pod gets a copy under the hashed name.
#[tokio::test]
async fn a_copy_a_tenant_replaces_with_its_own_secret_is_left_alone() {
    let (client, _) = setup().await;
    let (catalog, tenant) = tenant_with_a_copy(&client, "replace").await;
    let tenant = tenant.as_str();
    let secrets = Api::<Secret>::namespaced(client.clone(), tenant);
    let name = catalog.secret.as_str();
    // The reconciler makes a deleted copy again within a fraction of a second: the tenant's
    // create right after its delete usually wins; if not, it tries again.
    let own = eventually("the tenant's own Secret under the copy's name", Duration::from_secs(30), || async {
        let _ = secrets.delete(name, &DeleteParams::default()).await;
        let own: Secret =
            serde_json::from_value(json!({ "metadata": { "name": name }, "type": "kubernetes.io/dockerconfigjson",
            "stringData": { ".dockerconfigjson": docker_config("registry.example", "the-tenants-own") } }))
            .unwrap();
        secrets.create(&PostParams::default(), &own).await.ok()
    })
    .await;
    the_tenants_secret_stays_and_the_next_pod_gets_the_hashed_name(&client, tenant, &catalog, &own).await;
}
