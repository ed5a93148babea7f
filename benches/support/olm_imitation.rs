//! The benches play OLM (they run no OLM, and install up to a thousand operators): they create
//! what OLM would (CatalogSources, Subscriptions and OperatorGroups with their status,
//! InstallPlans, CSVs) in OLM's order and with its fields, so that every object the webhook
//! trusts is written the way OLM writes it. The end-to-end tests run real OLM
//! (`tests/support/olm.rs`). Included by `#[path]` from the benches only.
#![allow(dead_code)] // every bench uses a different part

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::olm::{
    Catalog, GLOBAL_CATALOGS, Kind, Operator, WIDGET, create_csv, ensure_crd, new_catalog, olm_resource,
    operator_and_tenant_namespaces,
};
use crate::support::unique_name;

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// An image-based CatalogSource (no registry serves it: no OLM runs).
pub async fn create_catalog(client: &kube::Client, ns: &str, name: &str, secrets: &[&str]) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "CatalogSource"));
    let catalog = dynamic(json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "CatalogSource",
        "metadata": { "name": name },
        "spec": { "sourceType": "grpc", "image": "registry.example/index:1", "secrets": secrets }
    }));
    api.create(&PostParams::default(), &catalog).await.unwrap();
}

/// A catalog of its own in the global catalog namespace, listing its pull secret and `secrets`.
pub async fn private_catalog(client: &kube::Client, secrets: &[&str]) -> Catalog {
    let (catalog, listed) = new_catalog(client, GLOBAL_CATALOGS, secrets).await;
    let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    create_catalog(client, GLOBAL_CATALOGS, &catalog.name, &listed).await;
    catalog
}

/// An OperatorGroup as the user writes it, with the status OLM fills in: its target namespaces
/// (`[""]`: all).
pub async fn create_operator_group(client: &kube::Client, ns: &str, targets: &[&str]) {
    crate::support::olm::create_operator_group(client, ns, targets).await;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &olm_resource("v1", "OperatorGroup"));
    let status = json!({ "status": { "namespaces": targets, "lastUpdated": "2026-01-01T00:00:00Z" } });
    api.patch_status("og", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// What OLM does for a Subscription to `csv` in `catalog_ns/catalog`, in OLM's order and with
/// its fields (operator-lifecycle-manager v0.38.0; the end-to-end tests run the real one): the
/// user's Subscription; catalog-operator's InstallPlan (owned by the Subscription, generation 1)
/// and `status.currentCSV` with the plan's reference; the plan executed (the CSV created); then
/// `status.installedCSV`. Returns the CSV's UID.
pub async fn subscribe_and_install(
    client: &kube::Client,
    ns: &str,
    (catalog_ns, catalog): (&str, &str),
    csv: &str,
    create_csv: impl std::future::Future<Output = String>,
) -> String {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "Subscription"));
    let sub = dynamic(json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
        "metadata": { "name": "widget-operator" },
        "spec": { "name": "widget-operator", "channel": "stable", "source": catalog, "sourceNamespace": catalog_ns }
    }));
    let sub = api.create(&PostParams::default(), &sub).await.unwrap();
    let (plan, plan_uid) = create_install_plan(client, ns, (catalog_ns, catalog), csv, &sub).await;
    let plan_ref =
        json!({ "apiVersion": "operators.coreos.com/v1alpha1", "kind": "InstallPlan", "name": plan, "namespace": ns });
    let status = json!({ "status": { "currentCSV": csv, "state": "UpgradePending", "installPlanRef": plan_ref,
        "installplan": { "apiVersion": "operators.coreos.com/v1alpha1", "kind": "InstallPlan", "name": plan, "uuid": plan_uid },
        "lastUpdated": "2026-01-01T00:00:00Z" } });
    api.patch_status("widget-operator", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    let uid = create_csv.await;
    let status = json!({ "status": { "installedCSV": csv, "state": "AtLatestKnown" } });
    api.patch_status("widget-operator", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    uid
}

/// The InstallPlan catalog-operator writes for `csv` from `catalog_ns/catalog`: owned by the
/// namespace's Subscription, generation 1, with the status OLM writes once executed. Returns its
/// name and UID.
async fn create_install_plan(
    client: &kube::Client,
    ns: &str,
    (catalog_ns, catalog): (&str, &str),
    csv: &str,
    subscription: &DynamicObject,
) -> (String, String) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "InstallPlan"));
    let name = unique_name("install");
    let owner = json!({ "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
        "name": subscription.metadata.name, "uid": subscription.metadata.uid, "blockOwnerDeletion": false, "controller": false });
    let plan = dynamic(json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "InstallPlan",
        "metadata": { "name": name, "ownerReferences": [owner] },
        "spec": { "approval": "Automatic", "approved": true, "clusterServiceVersionNames": [csv], "generation": 1 }
    }));
    let uid = api.create(&PostParams::default(), &plan).await.unwrap().metadata.uid.unwrap();
    let status = json!({ "status": { "phase": "Complete", "catalogSources": [catalog], "plan": [{
        "resolving": csv, "status": "Created",
        "resource": { "group": "operators.coreos.com", "version": "v1alpha1", "kind": "ClusterServiceVersion",
            "name": csv, "sourceName": catalog, "sourceNamespace": catalog_ns, "manifest": "{}" } }] } });
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    (name, uid)
}

/// An operator of `kind` from `catalog` in `ns`, reaching `targets`, as OLM leaves it (the CSV
/// named like the end-to-end tests' `widget-operator.v1.0.0`).
pub async fn install_operator_unseen(
    client: &kube::Client,
    catalog: &Catalog,
    ns: &str,
    targets: &[&str],
    kind: Kind,
) -> Operator {
    ensure_crd(client, kind).await;
    create_operator_group(client, ns, targets).await;
    let csv = "widget-operator.v1.0.0".to_string();
    let csv_uid = subscribe_and_install(
        client,
        ns,
        (&catalog.namespace, &catalog.name),
        &csv,
        create_csv(client, ns, &csv, kind, &["widget-operator", "widget-runner"]),
    )
    .await;
    Operator { namespace: ns.to_string(), catalog_namespace: catalog.namespace.clone(), csv, csv_uid }
}

/// A private catalog and an operator installed from it into a fresh namespace, reaching that
/// namespace and one fresh namespace per entry of `tenants` (used as name prefixes).
pub async fn private_operator_unseen(client: &kube::Client, tenants: &[&str]) -> (Catalog, Operator, Vec<String>) {
    let catalog = private_catalog(client, &[]).await;
    let (ns, tenants) = operator_and_tenant_namespaces(client, tenants).await;
    let mut targets = vec![ns.as_str()];
    targets.extend(tenants.iter().map(String::as_str));
    let operator = install_operator_unseen(client, &catalog, &ns, &targets, WIDGET).await;
    (catalog, operator, tenants)
}
