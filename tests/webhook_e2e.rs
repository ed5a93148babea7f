//! End to end: the real API server calls the webhook over TLS through a real
//! MutatingWebhookConfiguration; Pods come from Deployments through the controller-manager; the
//! webhook runs as its own service account with the chart's RBAC.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::olm::*;
use support::webhook::WebhookProcess;
use support::{ControlPlane, create_namespace, unique_name};

async fn setup() -> (kube::Client, &'static WebhookProcess) {
    let webhook = WebhookProcess::shared().await;
    (ControlPlane::shared().admin().await, webhook)
}

fn assert_is_copy_of(copy: &Secret, source: &Secret) {
    assert_eq!(copy.type_, source.type_);
    assert_eq!(copy.data, source.data);
    let labels = copy.metadata.labels.clone().unwrap_or_default();
    assert_eq!(labels.get("app.kubernetes.io/managed-by").map(String::as_str), Some("olm-pullsecret-injector"));
    assert_eq!(labels.len(), 1, "no source labels are copied");
    let annotations = copy.metadata.annotations.clone().unwrap_or_default();
    let src = format!("{}/{}", source.metadata.namespace.as_ref().unwrap(), source.metadata.name.as_ref().unwrap());
    assert_eq!(annotations.get("pullsecret-injector.io/source"), Some(&src));
    assert_eq!(annotations.get("pullsecret-injector.io/source-uid"), source.metadata.uid.as_ref());
    assert!(annotations.contains_key("pullsecret-injector.io/content-hash"));
    assert!(copy.metadata.owner_references.is_none());
}

async fn secrets_in(client: &kube::Client, ns: &str) -> BTreeMap<String, Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.metadata.name.clone().unwrap(), s))
        .collect()
}

#[tokio::test]
async fn operator_pod_in_its_own_namespace_gets_the_catalog_secret() {
    let (client, _webhook) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let ns = unique_name("operator");
    create_namespace(&client, &ns).await;
    let op = install_operator(&client, &catalog, &ns, &[&ns]).await;

    let owner = owner_ref("operators.coreos.com/v1alpha1", "ClusterServiceVersion", &op.csv, &op.csv_uid);
    create_deployment(&client, &ns, "widget-operator", Some(owner), 1, json!({})).await;
    let pod = &pods_of(&client, &ns, "widget-operator", 1).await[0];
    assert_eq!(pull_secret_names(pod), ["registry-creds"]);

    let secrets = secrets_in(&client, &ns).await;
    assert_is_copy_of(&secrets["registry-creds"], &catalog.source);
}

#[tokio::test]
async fn operand_of_a_custom_resource_in_a_target_namespace_gets_the_secret() {
    let (client, webhook) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let (ns, tenant) = (unique_name("operator"), unique_name("tenant"));
    create_namespace(&client, &ns).await;
    create_namespace(&client, &tenant).await;
    install_operator(&client, &catalog, &ns, &[&ns, &tenant]).await;

    let widget = create_widget(&client, &tenant, "prod").await;
    let owner = owner_ref(&format!("{WIDGET_GROUP}/v1"), "Widget", "prod", widget.metadata.uid.as_deref().unwrap());
    create_deployment(&client, &tenant, "widget-prod", Some(owner), 1, json!({})).await;
    let pod = &pods_of(&client, &tenant, "widget-prod", 1).await[0];
    assert_eq!(pull_secret_names(pod), ["registry-creds"]);
    assert_is_copy_of(&secrets_in(&client, &tenant).await["registry-creds"], &catalog.source);

    let line = webhook
        .decisions(&tenant)
        .into_iter()
        .find(|d| d["kind"] == "Pod" && d["decision"] == "patched")
        .expect("a decision line for the operand pod");
    let chain = line["chain"].as_str().unwrap();
    assert!(chain.starts_with("Pod<-ReplicaSet/widget-prod-"), "{chain}");
    assert!(chain.contains("<-Deployment/widget-prod<-Widget/prod<-CSV/widget-operator.v1.0.0<-Subscription/widget-operator<-CatalogSource/"), "{chain}");
    println!("decision line: {line}");
}

#[tokio::test]
async fn unrelated_deployment_is_untouched_and_nothing_is_copied() {
    let (client, _webhook) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let ns = unique_name("operator");
    create_namespace(&client, &ns).await;
    install_operator(&client, &catalog, &ns, &[&ns]).await;

    create_deployment(&client, &ns, "unrelated", None, 1, json!({})).await;
    let pod = &pods_of(&client, &ns, "unrelated", 1).await[0];
    assert!(pull_secret_names(pod).is_empty());
    assert!(!secrets_in(&client, &ns).await.contains_key("registry-creds"));
}

#[tokio::test]
async fn dry_run_returns_the_patch_and_creates_no_secret() {
    let (client, _webhook) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let ns = unique_name("operator");
    create_namespace(&client, &ns).await;
    let op = install_operator(&client, &catalog, &ns, &[&ns]).await;

    let owner = owner_ref("operators.coreos.com/v1alpha1", "ClusterServiceVersion", &op.csv, &op.csv_uid);
    let pod: Pod = serde_json::from_value(json!({ "metadata": { "name": "dry", "ownerReferences": [owner] },
        "spec": { "containers": [{ "name": "c", "image": "registry.example/x:1" }] } }))
    .unwrap();
    let created = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams { dry_run: true, ..Default::default() }, &pod)
        .await
        .unwrap();
    assert_eq!(pull_secret_names(&created), ["registry-creds"]);
    assert!(secrets_in(&client, &ns).await.is_empty(), "dry run must not create the copy");
    assert!(Api::<Pod>::namespaced(client.clone(), &ns).get_opt("dry").await.unwrap().is_none());
}

#[tokio::test]
async fn service_accounts_owned_by_the_csv_or_named_by_its_install_strategy_get_the_secret() {
    let (client, _webhook) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let ns = unique_name("operator");
    create_namespace(&client, &ns).await;
    let op = install_operator(&client, &catalog, &ns, &[&ns]).await;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);

    let owner = owner_ref("operators.coreos.com/v1alpha1", "ClusterServiceVersion", &op.csv, &op.csv_uid);
    let owned: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "widget-operator", "ownerReferences": [owner] } })).unwrap();
    let named: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "widget-runner" },
        "imagePullSecrets": [{ "name": "tenant-own" }] }))
    .unwrap();
    let other: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "someone-else" } })).unwrap();
    for sa in [&owned, &named, &other] {
        sas.create(&PostParams::default(), sa).await.unwrap();
    }
    let names = |sa: &ServiceAccount| -> Vec<String> { sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect() };
    let owned = sas.get("widget-operator").await.unwrap();
    assert_eq!(names(&owned), ["registry-creds"]);
    assert_eq!(owned.metadata.annotations.unwrap()["pullsecret-injector.io/injected"], "registry-creds");
    let named = sas.get("widget-runner").await.unwrap();
    assert_eq!(names(&named), ["tenant-own", "registry-creds"]);
    assert!(names(&sas.get("someone-else").await.unwrap()).is_empty());
}
