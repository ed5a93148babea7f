//! `dev`: the main job on an embedded default. It starts the local control plane with real OLM,
//! runs the webhook against it through the runtime, registers it with the chart's
//! MutatingWebhookConfiguration, serves a sample private catalog, subscribes to its operator
//! (OLM installs it), creates an operand, and prints the decision the webhook made for the
//! operand's Pod.

pub mod controlplane;
pub mod registry;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::runtime::{self, Config};
use crate::telemetry::metrics::Outcome;

/// The chart's CustomResourceDefinitions: the ledger of copies and the links of CSVs to catalogs.
pub const PROJECT_CRDS: [&str; 2] = [
    include_str!("../../../charts/olm-pullsecret-injector/files/ledger-crd.json"),
    include_str!("../../../charts/olm-pullsecret-injector/files/link-crd.json"),
];

/// Namespaces the chart's configuration never sends to the webhook, besides its own.
const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The MutatingWebhookConfiguration the chart renders (pods, serviceaccounts, copies), with
/// each `clientConfig` pointed at `url` and trusting `ca_pem` instead of the chart's Service. A
/// test checks it against the chart field by field.
pub fn webhook_configuration(name: &str, url: &str, ca_pem: &str, failure_policy: &str, own_namespace: &str) -> Value {
    use base64::Engine;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let excluded: Vec<&str> = std::iter::once(own_namespace).chain(SYSTEM_NAMESPACES).collect();
    let hook = |hook_name: &str, operations: Value, resource: &str| {
        json!({
            "name": hook_name,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "NoneOnDryRun",
            "timeoutSeconds": 5,
            "failurePolicy": failure_policy,
            "reinvocationPolicy": "IfNeeded",
            "matchPolicy": "Equivalent",
            "clientConfig": { "url": url, "caBundle": ca_bundle },
            "namespaceSelector": { "matchExpressions": [
                { "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded }
            ] },
            "matchConditions": [{
                "name": "not-a-platform-namespace",
                "expression": "!request.namespace.startsWith(\"kube-\") && (!request.namespace.startsWith(\"openshift-\") || request.namespace == \"openshift-operators\")"
            }],
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": operations, "resources": [resource], "scope": "Namespaced" }]
        })
    };
    // Told of UPDATE and DELETE of our copies, never asked (see the chart's webhook.yaml).
    let mut copies = hook("copies.pullsecret-injector.io", json!(["UPDATE", "DELETE"]), "secrets");
    copies["failurePolicy"] = json!("Ignore");
    copies["reinvocationPolicy"] = json!("Never");
    copies["objectSelector"] = json!({ "matchLabels": { crate::MANAGED_BY_LABEL: crate::MANAGED_BY_VALUE } });
    copies.as_object_mut().expect("an object").remove("matchConditions");
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": name },
        "webhooks": [
            hook("pods.pullsecret-injector.io", json!(["CREATE"]), "pods"),
            hook("serviceaccounts.pullsecret-injector.io", json!(["CREATE", "UPDATE"]), "serviceaccounts"),
            copies,
        ]
    })
}

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Where the control plane's state, certificates and kubeconfig go.
    #[arg(long, env = "PSI_DEV_DIR", default_value = ".dev")]
    pub dir: PathBuf,
    /// Admin port of the webhook.
    #[arg(long, env = "PSI_ADMIN_LISTEN", default_value = "127.0.0.1:8080")]
    pub admin_listen: std::net::SocketAddr,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&args.dir)?;
    let cp_dir = dir.join("controlplane");
    // OLM's global catalog namespace is the webhook's (openshift-marketplace, as on OpenShift).
    let marketplace = crate::state::index::CatalogNamespaces::default().global;
    let global = marketplace.clone();
    let cp =
        tokio::task::spawn_blocking(move || controlplane::ControlPlane::start_with_olm(&cp_dir, &global)).await??;
    let client = cp.admin().await?;

    let certs = crate::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()])?;
    let cert_dir = dir.join("certs");
    crate::commands::certs::write(&cert_dir, &certs)?;
    let mut config = Config { admin_listen: args.admin_listen, ..Config::local(&cert_dir) };
    // dev registers with Fail: what the webhook cannot decide in time is refused, loudly.
    config.admission.failure_policy = crate::webhook::FailurePolicy::Fail;
    let failure_policy = config.admission.failure_policy.as_str();
    let own_namespace = config.namespaces.own_namespace.clone();
    // The webhook's own namespace holds the reconciler's Lease.
    let own = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": own_namespace } });
    apply(&client, "", "v1", "Namespace", "namespaces", own).await?;
    // The ledger of copies and the links, as the chart installs them.
    for crd in PROJECT_CRDS {
        let crd: Value = serde_json::from_str(crd)?;
        apply(&client, "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", crd)
            .await?;
    }
    let running = runtime::start(client.clone(), config).await?;
    let listen = running.webhook_addr.context("dev runs every role, the webhook included")?;
    let webhook_config = webhook_configuration(
        "olm-pullsecret-injector",
        &format!("https://{listen}/mutate"),
        &certs.ca_pem,
        failure_policy,
        &own_namespace,
    );
    apply(
        &client,
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        webhook_config,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await; // the API server loads configurations asynchronously

    let mut decisions = running.decisions().context("dev runs every role, the webhook included")?;
    let _registry = install_sample(&client, &marketplace, &dir.join("catalog")).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), "demo-tenant");
    let pod = loop {
        let list = pods.list(&ListParams::default().labels("app=demo-app")).await?;
        if let Some(pod) = list.items.into_iter().next() {
            break pod;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let names: Vec<String> =
        pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()).map(|r| r.name.clone()).collect();
    // What the webhook decided for it, as it logged it.
    let decision = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match decisions.recv().await {
                Ok(d) if d.kind == "Pod" && d.namespace == "demo-tenant" && d.outcome == Outcome::Patched => {
                    return Ok(d);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await
    .context("no decision for the operand Pod within 30 s")??;
    println!();
    let pod_name = pod.metadata.name.unwrap_or_default();
    println!("The operand Pod demo-tenant/{pod_name} was admitted with imagePullSecrets: {names:?}");
    println!("The webhook's decision for it ({}):", decision.outcome.as_str());
    for chain in &decision.chain {
        println!("  chain:   {chain}");
    }
    println!("  secrets: {}", decision.secrets.join(", "));
    println!();
    println!("Look around:   export KUBECONFIG={}", cp.kubeconfig().display());
    // The README's quick start shows this command; tests/readme.rs runs it.
    println!("Explain it:    cargo run -q --bin kubectl-olm_pullsecret -- explain pod/demo-tenant/{pod_name}");
    println!("Webhook:       https://{listen}/mutate  (admin: http://{}/metrics)", running.admin_addr);
    println!("Stop with Ctrl-C.");

    tokio::signal::ctrl_c().await?;
    running.shutdown().begin();
    running.stopped().await;
    Ok(())
}

async fn apply(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    mut object: Value,
) -> anyhow::Result<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let name = object["metadata"]["name"].as_str().context("manifest without a name")?.to_string();
    let status = object.as_object_mut().and_then(|o| o.remove("status"));
    let api: Api<DynamicObject> = match object["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams::apply("olm-pullsecret-injector-dev").force();
    let applied =
        api.patch(&name, &params, &Patch::Apply(&object)).await.with_context(|| format!("applying {kind} {name}"))?;
    // What OLM writes into status, the sample writes the same way: through the subresource.
    if let Some(status) = status {
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    }
    Ok(applied)
}

/// A private catalog with a pull secret, served by `opm` from `catalog_dir` (kept serving while
/// the returned registry lives); its operator installed by OLM through a Subscription; an
/// operand in a tenant namespace.
async fn install_sample(
    client: &kube::Client,
    marketplace: &str,
    catalog_dir: &std::path::Path,
) -> anyhow::Result<registry::Registry> {
    for ns in ["demo-operator", "demo-tenant"] {
        apply(
            client,
            "",
            "v1",
            "Namespace",
            "namespaces",
            json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
        )
        .await?;
    }
    let docker_config = json!({ "auths": { "registry.example.com": { "auth": "ZGVtbzpkZW1vLXRva2Vu" } } }).to_string();
    apply(
        client,
        "",
        "v1",
        "Secret",
        "secrets",
        json!({ "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "private-registry", "namespace": marketplace },
        "type": "kubernetes.io/dockerconfigjson", "stringData": { ".dockerconfigjson": docker_config } }),
    )
    .await?;
    let package = registry::Package {
        name: "demo-operator".into(),
        channel: "stable".into(),
        bundles: vec![registry::operator_bundle("demo-operator", "1.0.0", None, "demo.example.com", "Demo")],
    };
    registry::write_catalog(catalog_dir, &[package])?;
    let catalog_dir = catalog_dir.to_path_buf();
    let registry = tokio::task::spawn_blocking(move || registry::Registry::serve(&catalog_dir)).await??;
    let olm = "operators.coreos.com";
    apply(client, olm, "v1alpha1", "CatalogSource", "catalogsources", json!({ "apiVersion": "operators.coreos.com/v1alpha1", "kind": "CatalogSource",
        "metadata": { "name": "private-catalog", "namespace": marketplace },
        "spec": { "sourceType": "grpc", "address": registry.address, "displayName": "Private catalog", "secrets": ["private-registry"] } })).await?;
    apply(client, olm, "v1", "OperatorGroup", "operatorgroups", json!({ "apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup",
        "metadata": { "name": "demo", "namespace": "demo-operator" }, "spec": { "targetNamespaces": ["demo-operator", "demo-tenant"] } })).await?;
    apply(client, olm, "v1alpha1", "Subscription", "subscriptions", json!({ "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
        "metadata": { "name": "demo-operator", "namespace": "demo-operator" },
        "spec": { "name": "demo-operator", "channel": "stable", "source": "private-catalog", "sourceNamespace": marketplace } })).await?;

    // OLM resolves the Subscription, installs the CSV and its CRD; then a user creates a Demo and
    // the operator (played here: no container runs) creates its operand's Deployment.
    let csvs: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "demo-tenant",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(olm, "v1alpha1", "ClusterServiceVersion")),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        // OLM copies the CSV into each target namespace once it succeeded in its own.
        let copied = csvs.get_opt(&registry::csv_name("demo-operator", "1.0.0")).await?;
        if copied.is_some_and(|csv| csv.data["status"]["phase"] == "Succeeded") {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "OLM did not install demo-operator within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let demo = loop {
        match apply(
            client,
            "demo.example.com",
            "v1",
            "Demo",
            "demos",
            json!({ "apiVersion": "demo.example.com/v1", "kind": "Demo",
            "metadata": { "name": "prod", "namespace": "demo-tenant" }, "spec": {} }),
        )
        .await
        {
            Ok(demo) => break demo,
            // The CRD's endpoint appears shortly after it is created.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let demo_owner =
        json!({ "apiVersion": "demo.example.com/v1", "kind": "Demo", "name": "prod", "uid": demo.metadata.uid });
    apply(client, "apps", "v1", "Deployment", "deployments", deployment("demo-tenant", "demo-app", demo_owner)).await?;
    Ok(registry)
}

fn deployment(namespace: &str, name: &str, owner: Value) -> Value {
    json!({ "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace, "ownerReferences": [owner] },
        "spec": { "replicas": 1, "selector": { "matchLabels": { "app": name } },
            "template": { "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "main", "image": format!("registry.example.com/{name}:1.0.0") }] } } } })
}
