//! Operators installed as a user installs them, with real OLM (olm-operator and
//! catalog-operator, `ControlPlane::with_olm`) doing the rest: file-based catalogs served by
//! `opm serve`, CatalogSources with `spec.address` and `spec.secrets`, OperatorGroups and
//! Subscriptions. OLM writes the InstallPlans, CSVs (and their copies), Deployments and
//! ServiceAccounts. The only OLM objects a test writes by hand are forgeries (`create_csv`).
//! The benches, which run no OLM, imitate it in `benches/support/olm_imitation.rs`.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use olm_pullsecret_injector::commands::dev::registry::{self, Bundle, Package, Registry};
use serde_json::{Value, json};

use super::{ControlPlane, create_namespace, eventually, unique_name};

pub const WIDGET_GROUP: &str = "e2e.pullsecret-injector.io";

/// An operand kind of the test operators. Each test that installs an operator reaching every
/// namespace uses a kind of its own, so that concurrent tests do not share operands (and OLM
/// refuses a CSV whose OperatorGroup intersects another's that provides the same API).
#[derive(Clone, Copy)]
pub struct Kind {
    pub kind: &'static str,
    pub plural: &'static str,
}

pub const WIDGET: Kind = Kind { kind: "Widget", plural: "widgets" };
pub const GADGET: Kind = Kind { kind: "Gadget", plural: "gadgets" };
/// A kind whose `get` the webhook is never granted (the chart's default `operandOwnerRules: []`).
pub const DOOHICKEY: Kind = Kind { kind: "Doohickey", plural: "doohickeys" };

impl Kind {
    pub fn crd_name(&self) -> String {
        format!("{}.{WIDGET_GROUP}", self.plural)
    }
    pub fn api_version(&self) -> String {
        format!("{WIDGET_GROUP}/v1")
    }
}

pub fn olm_resource(version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("operators.coreos.com", version, kind))
}

pub fn operand_resource(kind: Kind) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(WIDGET_GROUP, "v1", kind.kind), kind.plural)
}

fn dynamic(value: Value) -> DynamicObject {
    serde_json::from_value(value).unwrap()
}

/// A dockerconfigjson secret for `registry`.
pub fn docker_config(registry: &str, token: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("robot:{token}"));
    json!({ "auths": { registry: { "auth": auth } } }).to_string()
}

pub async fn create_secret(client: &kube::Client, ns: &str, name: &str, type_: &str, data: Value) -> Secret {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": ns }, "type": type_, "stringData": data
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &secret).await.unwrap()
}

pub async fn create_pull_secret(client: &kube::Client, ns: &str, name: &str, token: &str) -> Secret {
    create_secret(
        client,
        ns,
        name,
        "kubernetes.io/dockerconfigjson",
        json!({ ".dockerconfigjson": docker_config("registry.example", token) }),
    )
    .await
}

/// An OperatorGroup as a user writes it (OLM fills its status): `targets` empty, or `[""]`,
/// means all namespaces.
pub async fn create_operator_group(client: &kube::Client, ns: &str, targets: &[&str]) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &olm_resource("v1", "OperatorGroup"));
    let all = targets.is_empty() || targets == [""];
    let spec = if all { json!({}) } else { json!({ "targetNamespaces": targets }) };
    let og = dynamic(
        json!({ "apiVersion": "operators.coreos.com/v1", "kind": "OperatorGroup", "metadata": { "name": "og" }, "spec": spec }),
    );
    api.create(&PostParams::default(), &og).await.unwrap();
}

/// A CSV written by hand (not installed by OLM: what an attacker with `create` on CSVs forges),
/// owning the CRD of `kind`, whose install strategy names `service_accounts`. Returns its UID.
pub async fn create_csv(client: &kube::Client, ns: &str, name: &str, kind: Kind, service_accounts: &[&str]) -> String {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "ClusterServiceVersion"));
    let permissions: Vec<Value> =
        service_accounts.iter().map(|sa| json!({ "serviceAccountName": sa, "rules": [] })).collect();
    let csv = dynamic(json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
        "metadata": { "name": name },
        "spec": {
            "displayName": "Widget operator",
            "customresourcedefinitions": { "owned": [{ "name": kind.crd_name(), "kind": kind.kind, "version": "v1" }] },
            "install": { "strategy": "deployment", "spec": {
                "permissions": permissions,
                "deployments": [{ "name": "widget-operator", "spec": {
                    "selector": { "matchLabels": { "app": "widget-operator" } },
                    "template": { "metadata": { "labels": { "app": "widget-operator" } },
                                  "spec": { "serviceAccountName": "widget-operator", "containers": [{ "name": "op", "image": "registry.example/op:1" }] } }
                } }]
            } }
        }
    }));
    api.create(&PostParams::default(), &csv).await.unwrap().metadata.uid.unwrap()
}

/// How long OLM may take to install an operator while the other tests of the binary install
/// theirs (resolution, InstallPlan, CRD, CSV, Deployment, Pods Ready).
pub const INSTALL: Duration = Duration::from_secs(180);

/// Every registry serves until the test binary exits: OLM resolves a namespace against every
/// global catalog, and one whose registry is gone fails resolution in every namespace (as in a
/// cluster), so no test may stop its registry while the others run.
static REGISTRIES: std::sync::Mutex<Vec<Registry>> = std::sync::Mutex::new(Vec::new());

/// Serves `packages` as a file-based catalog of its own with `opm serve` (until the binary
/// exits); returns its address, a CatalogSource's `spec.address`.
pub async fn serve_registry(packages: Vec<Package>) -> String {
    let dir = ControlPlane::with_olm().dir().join("catalogs").join(unique_name("registry"));
    registry::write_catalog(&dir, &packages).unwrap();
    let registry = tokio::task::spawn_blocking(move || Registry::serve(&dir).unwrap()).await.unwrap();
    let address = registry.address.clone();
    REGISTRIES.lock().unwrap().push(registry);
    address
}

/// A CatalogSource served from `address` (an `opm serve`), listing `secrets`.
pub async fn create_catalog_source(client: &kube::Client, ns: &str, name: &str, address: &str, secrets: &[&str]) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "CatalogSource"));
    let catalog = dynamic(json!({ "apiVersion": "operators.coreos.com/v1alpha1", "kind": "CatalogSource",
        "metadata": { "name": name },
        "spec": { "sourceType": "grpc", "address": address, "secrets": secrets, "displayName": name } }));
    api.create(&PostParams::default(), &catalog).await.unwrap();
}

pub fn subscriptions(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "Subscription"))
}

pub fn csvs(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "ClusterServiceVersion"))
}

pub fn install_plans(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "InstallPlan"))
}

/// A Subscription as a user writes it, named like its package, to channel `stable` of
/// `catalog_ns/catalog`, from `start` (a version) if given.
pub async fn subscribe(
    client: &kube::Client,
    ns: &str,
    package: &str,
    (catalog_ns, catalog): (&str, &str),
    approval: &str,
    start: Option<&str>,
) {
    let mut spec = json!({ "name": package, "channel": "stable", "source": catalog,
        "sourceNamespace": catalog_ns, "installPlanApproval": approval });
    if let Some(version) = start {
        spec["startingCSV"] = json!(registry::csv_name(package, version));
    }
    let sub = dynamic(json!({ "apiVersion": "operators.coreos.com/v1alpha1", "kind": "Subscription",
        "metadata": { "name": package }, "spec": spec }));
    subscriptions(client, ns).create(&PostParams::default(), &sub).await.unwrap();
}

/// Waits until OLM reports the CSV `Succeeded` (its Deployment is Available) and returns it.
pub async fn succeeded(client: &kube::Client, ns: &str, csv: &str) -> DynamicObject {
    let api = csvs(client, ns);
    eventually(&format!("CSV {ns}/{csv} Succeeded"), INSTALL, || async {
        let csv = api.get_opt(csv).await.unwrap()?;
        (csv.data["status"]["phase"] == "Succeeded").then_some(csv)
    })
    .await
}
/// The CRD of an operand kind (idempotent), and `get` on it for the webhook.
pub async fn ensure_crd(client: &kube::Client, kind: Kind) {
    create_crd(client, kind).await;
    super::webhook::grant_operand_owner_read(client, WIDGET_GROUP, kind.plural).await;
}

/// The CRD of an operand kind, as the test operators' bundles ship it.
pub fn crd(kind: Kind) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": kind.crd_name() },
        "spec": { "group": WIDGET_GROUP, "scope": "Namespaced",
            "names": { "plural": kind.plural, "singular": kind.kind.to_lowercase(), "kind": kind.kind },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }] }
    })
}

/// The CRD of an operand kind (idempotent), established; the webhook gets no right on it.
pub async fn create_crd(client: &kube::Client, kind: Kind) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let name = kind.crd_name();
    crds.patch(&name, &PatchParams::apply("e2e").force(), &Patch::Apply(crd(kind))).await.unwrap();
    eventually("the CRD to be established", Duration::from_secs(30), || async {
        let crd = crds.get(&name).await.ok()?;
        let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// A custom resource of `kind`, and the ownerReference that points at it.
pub async fn create_operand(client: &kube::Client, kind: Kind, ns: &str, name: &str) -> Value {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &operand_resource(kind));
    let object = dynamic(
        json!({ "apiVersion": kind.api_version(), "kind": kind.kind, "metadata": { "name": name }, "spec": {} }),
    );
    // Right after the CRD is established its endpoint may still 404 for a moment.
    let created = eventually("the operand endpoint", Duration::from_secs(30), || async {
        api.create(&PostParams::default(), &object).await.ok()
    })
    .await;
    owner_ref(&kind.api_version(), kind.kind, name, created.metadata.uid.as_deref().unwrap())
}

pub fn owner_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> Value {
    json!({ "apiVersion": api_version, "kind": kind, "name": name, "uid": uid })
}

/// A Deployment (owned by `owner`, if any) whose Pods the controller-manager creates.
pub async fn create_deployment(
    client: &kube::Client,
    ns: &str,
    name: &str,
    owner: Option<Value>,
    replicas: i32,
    pod_spec: Value,
) {
    let mut spec = json!({ "containers": [{ "name": "main", "image": format!("registry.example/{name}:1") }] });
    if let (Some(extra), Some(target)) = (pod_spec.as_object(), spec.as_object_mut()) {
        target.extend(extra.clone());
    }
    let owners: Vec<Value> = owner.into_iter().collect();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": name, "ownerReferences": owners },
        "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } },
                  "template": { "metadata": { "labels": { "app": name } }, "spec": spec } }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns).create(&PostParams::default(), &deployment).await.unwrap();
}

/// Waits until the Deployment `app` has `count` Pods and returns them.
pub async fn pods_of(client: &kube::Client, ns: &str, app: &str, count: usize) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("app={app}"));
    eventually(&format!("{count} pods of {ns}/{app}"), INSTALL, || async {
        let list = pods.list(&lp).await.unwrap().items;
        (list.len() >= count).then_some(list)
    })
    .await
}

pub fn pull_secret_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

/// OLM's global catalog namespace of the e2e webhook (`--global-catalog-namespace`): every test's
/// catalog lives here, under names of its own.
pub const GLOBAL_CATALOGS: &str = "e2e-marketplace";
/// The e2e webhook's one further catalog namespace (`--catalog-namespace`): a catalog here serves
/// only Subscriptions in this namespace.
pub const SELF_HOSTED_CATALOGS: &str = "e2e-self-hosted";

/// A catalog with a pull secret of its own, readable by the webhook.
pub struct Catalog {
    pub namespace: String,
    pub name: String,
    /// The name of its pull secret, and so of the copies.
    pub secret: String,
    pub source: Secret,
}

/// The package of the test operator whose operand is `kind` (`widget-operator` for Widgets);
/// its Subscription is named alike.
pub fn package_of(kind: Kind) -> String {
    format!("{}-operator", kind.kind.to_lowercase())
}

/// The operator's Deployment and ServiceAccount, and the further ServiceAccount its install
/// strategy names. Every kind's operator runs as `widget-operator` beside `widget-runner`, but
/// the Doohickey operator, which a test installs beside a Widget operator in one namespace.
fn accounts_of(kind: Kind) -> (&'static str, &'static str) {
    if kind.kind == DOOHICKEY.kind {
        ("doohickey-operator", "doohickey-runner")
    } else {
        ("widget-operator", "widget-runner")
    }
}

/// The one version (1.0.0) of the operator of `kind`: its CSV owns the operand's CRD (shipped in
/// the bundle), installs in every install mode, runs the Deployment `widget-operator` as the
/// ServiceAccount `widget-operator` and names `widget-runner` too (see `accounts_of`).
fn operator_bundle(kind: Kind) -> Bundle {
    let package = package_of(kind);
    let (operator, runner) = accounts_of(kind);
    let install_modes: Vec<Value> = ["OwnNamespace", "SingleNamespace", "MultiNamespace", "AllNamespaces"]
        .iter()
        .map(|mode| json!({ "type": mode, "supported": true }))
        .collect();
    let rules = json!([{ "apiGroups": [WIDGET_GROUP], "resources": [kind.plural], "verbs": ["get", "list", "watch"] }]);
    let csv = json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
        "metadata": { "name": registry::csv_name(&package, "1.0.0") },
        "spec": {
            "displayName": "Widget operator", "version": "1.0.0", "installModes": install_modes,
            "customresourcedefinitions": { "owned": [{ "name": kind.crd_name(), "kind": kind.kind, "version": "v1", "displayName": kind.kind }] },
            "install": { "strategy": "deployment", "spec": {
                "permissions": [{ "serviceAccountName": operator, "rules": rules },
                                { "serviceAccountName": runner, "rules": rules }],
                "deployments": [{ "name": operator, "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": { "app": operator } },
                    "template": { "metadata": { "labels": { "app": operator } },
                        "spec": { "serviceAccountName": operator,
                            "containers": [{ "name": "op", "image": "registry.example/op:1" }] } } } }] } } }
    });
    Bundle { csv, objects: vec![crd(kind)] }
}

/// The package of each operand kind's operator, one version each.
fn operator_packages() -> Vec<Package> {
    [WIDGET, GADGET, DOOHICKEY]
        .into_iter()
        .map(|kind| Package { name: package_of(kind), channel: "stable".into(), bundles: vec![operator_bundle(kind)] })
        .collect()
}

/// The registry every test catalog of this binary is served from (`operator_packages`): the
/// catalogs differ in name, namespace and secrets, not in content.
async fn operator_registry() -> &'static str {
    static ADDRESS: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    ADDRESS.get_or_init(|| serve_registry(operator_packages())).await
}

/// A catalog of its own in the global catalog namespace, listing its pull secret and `secrets`.
///
/// Global catalogs are made ahead, a batch at a time: OLM re-resolves every namespace when a
/// global catalog becomes ready, so a catalog made for each test as it starts would queue every
/// installed namespace behind the next test's Subscription, once per test (installs late in a
/// binary then waited 40 s for resolution).
pub async fn private_catalog(client: &kube::Client, secrets: &[&str]) -> Catalog {
    const BATCH: usize = 12;
    static MADE: tokio::sync::Mutex<Vec<Catalog>> = tokio::sync::Mutex::const_new(Vec::new());
    let mut made = MADE.lock().await;
    if made.is_empty() {
        let batch = (0..BATCH).map(|_| catalog_in(client, GLOBAL_CATALOGS, &[]));
        made.extend(futures::future::join_all(batch).await);
    }
    let catalog = made.pop().unwrap();
    drop(made);
    if !secrets.is_empty() {
        let mut listed = vec![catalog.secret.as_str()];
        listed.extend_from_slice(secrets);
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &catalog.namespace, &olm_resource("v1alpha1", "CatalogSource"));
        let patch = json!({ "spec": { "secrets": listed } });
        api.patch(&catalog.name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    }
    catalog
}

/// A catalog in `namespace` (one of the e2e webhook's catalog namespaces), served by
/// `opm serve` (`spec.address`), listing a fresh pull secret and `secrets`.
pub async fn catalog_in(client: &kube::Client, namespace: &str, secrets: &[&str]) -> Catalog {
    let address = operator_registry().await;
    let (catalog, listed) = new_catalog(client, namespace, secrets).await;
    let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
    create_catalog_source(client, namespace, &catalog.name, address, &listed).await;
    catalog
}

/// A fresh catalog's name and pull secret (created) in `namespace`, and what its CatalogSource
/// lists: that secret, then `secrets`. The caller writes the CatalogSource.
pub async fn new_catalog(client: &kube::Client, namespace: &str, secrets: &[&str]) -> (Catalog, Vec<String>) {
    super::create_namespace_if_missing(client, namespace).await;
    let (name, secret) = (unique_name("catalog"), unique_name("registry-creds"));
    let source = create_pull_secret(client, namespace, &secret, "token-1").await;
    let listed = std::iter::once(secret.clone()).chain(secrets.iter().map(|s| s.to_string())).collect();
    (Catalog { namespace: namespace.to_string(), name, secret, source }, listed)
}

/// An operator installed from `catalog` into `ns`, reaching `targets`.
pub struct Operator {
    pub namespace: String,
    pub catalog_namespace: String,
    pub csv: String,
    pub csv_uid: String,
}

pub async fn install_operator(client: &kube::Client, catalog: &Catalog, ns: &str, targets: &[&str]) -> Operator {
    install_operator_for(client, catalog, ns, targets, WIDGET).await
}

pub async fn install_operator_for(
    client: &kube::Client,
    catalog: &Catalog,
    ns: &str,
    targets: &[&str],
    kind: Kind,
) -> Operator {
    let operator = install_operator_unseen(client, catalog, ns, targets, kind).await;
    wait_until_webhook_knows(client, &operator).await;
    operator
}

/// As `install_operator_for`, without waiting for the webhook to use it: for an operator the
/// webhook must not use. Installing a used operator afterwards (`private_operator`) proves that
/// the webhook has seen this one: each kind's watch delivers objects in the order they were
/// written.
///
/// Installed as a user does, OLM doing the rest: `get` on the operand kind for the webhook (the
/// chart's `operandOwnerRules`), an OperatorGroup for `targets` (`[""]`: all namespaces) and a
/// Subscription to the kind's package (`package_of`); returns once OLM created the CSV (its
/// Deployment, Pods and ServiceAccounts follow: wait for them, or for `succeeded`).
pub async fn install_operator_unseen(
    client: &kube::Client,
    catalog: &Catalog,
    ns: &str,
    targets: &[&str],
    kind: Kind,
) -> Operator {
    super::webhook::grant_operand_owner_read(client, WIDGET_GROUP, kind.plural).await;
    create_operator_group(client, ns, targets).await;
    subscribe_operator(client, catalog, ns, kind).await
}

/// Subscribes `ns` (whose OperatorGroup exists) to the operator of `kind` from `catalog` and
/// waits until OLM created its CSV.
pub async fn subscribe_operator(client: &kube::Client, catalog: &Catalog, ns: &str, kind: Kind) -> Operator {
    let package = package_of(kind);
    let started = std::time::Instant::now();
    subscribe(client, ns, &package, (&catalog.namespace, &catalog.name), "Automatic", None).await;
    let csv = registry::csv_name(&package, "1.0.0");
    let api = csvs(client, ns);
    let created = eventually(&format!("OLM to create the CSV {ns}/{csv}"), INSTALL, || async {
        let csv = api.get_opt(&csv).await.unwrap()?;
        let copied = csv.metadata.labels.as_ref().is_some_and(|l| l.contains_key("olm.copiedFrom"));
        (!copied).then_some(csv)
    })
    .await;
    eprintln!("OLM created the CSV {ns}/{csv} {:.1?} after the Subscription", started.elapsed());
    Operator {
        namespace: ns.to_string(),
        catalog_namespace: catalog.namespace.clone(),
        csv,
        csv_uid: created.metadata.uid.unwrap(),
    }
}

/// The webhook learns about OLM objects through watches; a dry-run Pod owned by the CSV comes
/// back with pull secrets once it has.
pub async fn wait_until_webhook_knows(client: &kube::Client, operator: &Operator) {
    let pods = Api::<Pod>::namespaced(client.clone(), &operator.namespace);
    let owner = owner_ref("operators.coreos.com/v1alpha1", "ClusterServiceVersion", &operator.csv, &operator.csv_uid);
    eventually("the webhook to index the operator", Duration::from_secs(30), || async {
        let pod: Pod =
            serde_json::from_value(json!({ "metadata": { "generateName": "sync-probe-", "ownerReferences": [owner] },
            "spec": { "containers": [{ "name": "c", "image": "registry.example/probe:1" }] } }))
            .unwrap();
        match pods.create(&PostParams { dry_run: true, ..Default::default() }, &pod).await {
            Ok(created) => (!pull_secret_names(&created).is_empty()).then_some(()),
            // Our webhook resolved the chain but could not make the copy (a test of exactly that).
            Err(kube::Error::Api(status))
                if status.code == 503 && status.message.contains("olm-pullsecret-injector") =>
            {
                Some(())
            }
            Err(_) => None,
        }
    })
    .await;
}

impl Operator {
    pub fn csv_owner(&self) -> Value {
        owner_ref("operators.coreos.com/v1alpha1", "ClusterServiceVersion", &self.csv, &self.csv_uid)
    }
}

/// A private catalog and an operator installed from it into a fresh namespace, reaching that
/// namespace and one fresh namespace per entry of `tenants` (used as name prefixes); returns
/// once the webhook uses it.
pub async fn private_operator(client: &kube::Client, tenants: &[&str]) -> (Catalog, Operator, Vec<String>) {
    let installed = private_operator_unseen(client, tenants).await;
    wait_until_webhook_knows(client, &installed.1).await;
    installed
}

/// As `private_operator`, without waiting for a webhook (none may be registered yet).
pub async fn private_operator_unseen(client: &kube::Client, tenants: &[&str]) -> (Catalog, Operator, Vec<String>) {
    let catalog = private_catalog(client, &[]).await;
    let (ns, tenants) = operator_and_tenant_namespaces(client, tenants).await;
    let mut targets = vec![ns.as_str()];
    targets.extend(tenants.iter().map(String::as_str));
    let operator = install_operator_unseen(client, &catalog, &ns, &targets, WIDGET).await;
    (catalog, operator, tenants)
}

/// A fresh namespace for an operator and one fresh namespace per entry of `tenant_prefixes`.
pub async fn operator_and_tenant_namespaces(client: &kube::Client, tenant_prefixes: &[&str]) -> (String, Vec<String>) {
    let ns = unique_name("operator");
    create_namespace(client, &ns).await;
    let tenants: Vec<String> = tenant_prefixes.iter().map(|prefix| unique_name(prefix)).collect();
    for tenant in &tenants {
        create_namespace(client, tenant).await;
    }
    (ns, tenants)
}

/// Waits until OLM is done installing `operator`: its CSV `Succeeded` and every InstallPlan of
/// its namespace `Complete`. Until then catalog-operator may run a plan's steps again, and its
/// update of a ServiceAccount it made drops the `imagePullSecrets` someone else added: a test
/// that adds an entry of its own to OLM's ServiceAccount waits for this first.
pub async fn settled(client: &kube::Client, operator: &Operator) {
    succeeded(client, &operator.namespace, &operator.csv).await;
    let plans = install_plans(client, &operator.namespace);
    eventually(&format!("the InstallPlans of {} to be Complete", operator.namespace), INSTALL, || async {
        let list = plans.list(&ListParams::default()).await.unwrap().items;
        list.iter().all(|p| p.data["status"]["phase"] == "Complete").then_some(())
    })
    .await;
}

/// The names listed in a ServiceAccount's `imagePullSecrets`.
pub fn service_account_pull_secrets(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect()
}

/// Waits until the ServiceAccount `name` (OLM creates the operator's) exists and returns it.
pub async fn service_account(client: &kube::Client, ns: &str, name: &str) -> ServiceAccount {
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    eventually(&format!("the ServiceAccount {ns}/{name}"), INSTALL, || async { sas.get_opt(name).await.unwrap() }).await
}

/// A Pod with one container and the given metadata, created directly (not by a controller).
pub fn bare_pod(metadata: Value) -> Pod {
    serde_json::from_value(json!({ "metadata": metadata,
        "spec": { "containers": [{ "name": "c", "image": "registry.example/x:1" }] } }))
    .unwrap()
}

/// In each tenant, an operand custom resource and a Pod it owns, admitted with the catalog's
/// secret (so each tenant holds our copy).
pub async fn operand_pods_with_copies(client: &kube::Client, catalog: &Catalog, tenants: &[String]) {
    for tenant in tenants {
        let owner = create_operand(client, WIDGET, tenant, "prod").await;
        let pod = bare_pod(json!({ "name": "app", "ownerReferences": [owner] }));
        let created =
            Api::<Pod>::namespaced(client.clone(), tenant).create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(pull_secret_names(&created), [catalog.secret.as_str()]);
    }
}
