//! The middle layer: the resolver and the webhook driven in process over caches filled from
//! fixture objects, owners looked up in a map, and a small in-memory API server that takes the
//! writes of copies and events. No control plane: each test takes milliseconds.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{self, StatusCode};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use olm_pullsecret_injector::Context;
use olm_pullsecret_injector::resolve::NamespaceRules;
use olm_pullsecret_injector::resolve::owners::{OwnerMeta, OwnerQuery, OwnerRef, OwnerSource, Owners, Read};
use olm_pullsecret_injector::state::caches::{Caches, Feed, Fixture};
use olm_pullsecret_injector::state::links::PullSecretLink;
use olm_pullsecret_injector::state::olm::{CatalogSource, ClusterServiceVersion, OperatorGroup, Subscription};
use olm_pullsecret_injector::webhook::{FailurePolicy, OnCopyFailure, Settings, Webhook};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const MARKETPLACE: &str = "openshift-marketplace";
pub const OWN_NAMESPACE: &str = "olm-pullsecret-injector";

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

pub fn catalog(ns: &str, name: &str, secrets: &[&str], annotations: Value) -> CatalogSource {
    from(
        json!({ "metadata": { "namespace": ns, "name": name, "annotations": annotations }, "spec": { "secrets": secrets } }),
    )
}

/// A Subscription in `ns` naming `catalog_ns/catalog`, with the CSVs OLM reports in its status.
pub fn subscription(ns: &str, catalog_ns: &str, catalog: &str, installed: &str, current: &str) -> Subscription {
    from(json!({ "metadata": { "namespace": ns, "name": format!("sub-{catalog}") },
        "spec": { "source": catalog, "sourceNamespace": catalog_ns },
        "status": { "installedCSV": installed, "currentCSV": current } }))
}

/// A CSV owning the CRDs `owned` (group, kind, plural) whose install strategy names `service_accounts`.
pub fn csv(ns: &str, name: &str, owned: &[(&str, &str, &str)], service_accounts: &[&str]) -> ClusterServiceVersion {
    let owned: Vec<Value> = owned
        .iter()
        .map(|(group, kind, plural)| json!({ "name": format!("{plural}.{group}"), "kind": kind, "version": "v1" }))
        .collect();
    let permissions: Vec<Value> = service_accounts.iter().map(|sa| json!({ "serviceAccountName": sa })).collect();
    from(json!({ "metadata": { "namespace": ns, "name": name, "uid": csv_uid(ns, name) },
        "spec": { "customresourcedefinitions": { "owned": owned },
            "install": { "strategy": "deployment", "spec": { "permissions": permissions } } } }))
}

/// The link the reconciler writes down for the CSV `ns/csv` (of the fixture's UID).
pub fn link(ns: &str, csv: &str, catalog_ns: &str, catalog: &str) -> PullSecretLink {
    from(json!({ "metadata": { "name": olm_pullsecret_injector::state::links::name_of(ns, csv) },
        "spec": { "csvNamespace": ns, "csvName": csv, "csvUID": csv_uid(ns, csv), "subscription": format!("sub-{catalog}"),
            "catalogNamespace": catalog_ns, "catalogName": catalog } }))
}

/// The copy OLM makes of an all-namespaces operator's CSV in each target namespace.
pub fn copied_csv(ns: &str, name: &str, from_ns: &str) -> ClusterServiceVersion {
    from(json!({ "metadata": { "namespace": ns, "name": name, "uid": csv_uid(ns, name),
        "labels": { "olm.copiedFrom": from_ns } } }))
}

pub fn csv_uid(ns: &str, name: &str) -> String {
    format!("csv-uid-{ns}-{name}")
}

/// An OperatorGroup in `ns` whose status lists `targets` (`[""]`: all namespaces).
pub fn operator_group(ns: &str, targets: &[&str]) -> OperatorGroup {
    from(json!({ "metadata": { "namespace": ns, "name": "og" }, "status": { "namespaces": targets } }))
}

pub fn namespace(name: &str, labels: Value, annotations: Value) -> PartialObjectMeta<Namespace> {
    from(json!({ "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": name, "labels": labels, "annotations": annotations } }))
}

pub fn pull_secret(ns: &str, name: &str) -> Secret {
    from(json!({ "metadata": { "namespace": ns, "name": name, "uid": format!("secret-uid-{name}") },
        "type": "kubernetes.io/dockerconfigjson", "data": { ".dockerconfigjson": "e30=" } }))
}

pub fn owner(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerRef {
    OwnerRef { api_version: api_version.into(), kind: kind.into(), name: name.into(), uid: uid.into() }
}

pub fn csv_owner(ns: &str, name: &str) -> OwnerRef {
    owner("operators.coreos.com/v1alpha1", "ClusterServiceVersion", name, &csv_uid(ns, name))
}

/// (namespace, kind, name) of an owner.
type OwnerKey = (String, String, String);

/// Owners that exist, by (namespace, kind, name); counts the lookups that reach it.
#[derive(Clone, Default)]
pub struct MemoryOwners {
    objects: Arc<Mutex<HashMap<OwnerKey, OwnerMeta>>>,
    /// Kinds whose lookups the API server refuses (403), as without a grant.
    forbidden: Arc<Mutex<Vec<String>>>,
    lookups: Arc<AtomicUsize>,
    /// How long each lookup takes, as a round trip to the API server would.
    latency: Arc<Mutex<std::time::Duration>>,
    /// Owners the API server's watch cache does not have yet: only a read from etcd finds them.
    lagging: Arc<Mutex<Vec<OwnerKey>>>,
}

impl MemoryOwners {
    pub fn insert(&self, ns: &str, kind: &str, name: &str, uid: &str, owners: Vec<OwnerRef>) {
        let meta = OwnerMeta { uid: uid.into(), owner_references: owners };
        self.objects.lock().unwrap().insert((ns.into(), kind.into(), name.into()), meta);
    }

    /// As `insert`, an owner so new that only a read from etcd finds it.
    pub fn insert_lagging(&self, ns: &str, kind: &str, name: &str, uid: &str, owners: Vec<OwnerRef>) {
        self.insert(ns, kind, name, uid, owners);
        self.lagging.lock().unwrap().push((ns.into(), kind.into(), name.into()));
    }

    pub fn set_latency(&self, latency: std::time::Duration) {
        *self.latency.lock().unwrap() = latency;
    }

    pub fn forbid(&self, kind: &str) {
        self.forbidden.lock().unwrap().push(kind.into());
    }

    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

impl OwnerSource for MemoryOwners {
    fn get<'a>(&'a self, q: OwnerQuery<'a>, read: Read) -> BoxFuture<'a, Result<Option<OwnerMeta>, kube::Error>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.forbidden.lock().unwrap().iter().any(|k| k == q.kind) {
            let mut status = kube::core::Status::failure(&format!("cannot get resource {:?}", q.plural), "Forbidden");
            status.code = 403;
            return Box::pin(async move { Err(kube::Error::Api(Box::new(status))) });
        }
        let key = (q.namespace.to_string(), q.kind.to_string(), q.name.to_string());
        let lagging = read == Read::Cached && self.lagging.lock().unwrap().contains(&key);
        let found = if lagging { None } else { self.objects.lock().unwrap().get(&key).cloned() };
        let latency = *self.latency.lock().unwrap();
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            Ok(found)
        })
    }
}

/// An API server in memory: it keeps the Secrets created through it (dry runs excepted), answers
/// 409 for a name taken, accepts patches and Events, and fails every write while `failing`.
#[derive(Clone, Default)]
pub struct MemoryApi {
    secrets: Arc<Mutex<HashMap<(String, String), Value>>>,
    /// Ledger entries by name (server-side applied).
    ledger: Arc<Mutex<HashMap<String, Value>>>,
    requests: Arc<Mutex<Vec<String>>>,
    pub failing: Arc<AtomicBool>,
}

impl MemoryApi {
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// `METHOD path` of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// How many Secret creates reached the server (dry runs included).
    pub fn secret_creates(&self) -> usize {
        self.requests().iter().filter(|r| r.starts_with("POST") && r.ends_with("/secrets")).count()
    }

    /// The ledger entry of a copy, if one was recorded.
    pub fn ledger_entry(&self, ns: &str, name: &str) -> Option<Value> {
        self.ledger.lock().unwrap().get(&olm_pullsecret_injector::inject::ledger::entry_name(ns, name)).cloned()
    }

    pub fn secret(&self, ns: &str, name: &str) -> Option<Value> {
        self.secrets.lock().unwrap().get(&(ns.to_string(), name.to_string())).cloned()
    }

    /// A Secret deleted behind the webhook's back; returns what it was.
    pub fn delete_secret(&self, ns: &str, name: &str) -> Option<Value> {
        self.secrets.lock().unwrap().remove(&(ns.to_string(), name.to_string()))
    }

    /// A Secret the tenant made: our copy may not take its name.
    pub fn tenant_secret(&self, ns: &str, name: &str) {
        let secret = json!({ "metadata": { "namespace": ns, "name": name }, "type": "Opaque" });
        self.secrets.lock().unwrap().insert((ns.into(), name.into()), secret);
    }

    async fn answer(&self, request: http::Request<kube::client::Body>) -> http::Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let dry_run = parts.uri.query().is_some_and(|q| q.contains("dryRun"));
        self.requests.lock().unwrap().push(format!("{} {path}", parts.method));
        let body = body.collect_bytes().await.unwrap_or_default();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let writes_secret = segments.get(4) == Some(&"secrets");
        if writes_secret && self.failing.load(Ordering::SeqCst) {
            return status(StatusCode::SERVICE_UNAVAILABLE, "the API server is failing");
        }
        match (parts.method.as_str(), segments.as_slice()) {
            ("POST", ["api", "v1", "namespaces", ns, "secrets"]) => {
                let mut secret: Value = serde_json::from_slice(&body).unwrap();
                let name = secret["metadata"]["name"].as_str().unwrap().to_string();
                let mut secrets = self.secrets.lock().unwrap();
                if secrets.contains_key(&(ns.to_string(), name.clone())) {
                    return status(StatusCode::CONFLICT, "already exists");
                }
                secret["metadata"]["uid"] = json!(format!("uid-{ns}-{name}"));
                if !dry_run {
                    secrets.insert((ns.to_string(), name), secret.clone());
                }
                respond(StatusCode::CREATED, &secret)
            }
            ("PATCH", ["api", "v1", "namespaces", ns, "secrets", name]) => {
                let key = (ns.to_string(), name.to_string());
                let Some(mut secret) = self.secrets.lock().unwrap().get(&key).cloned() else {
                    return status(StatusCode::NOT_FOUND, "not found");
                };
                let patch: json_patch::Patch = serde_json::from_slice(&body).unwrap();
                if json_patch::patch(&mut secret, &patch).is_err() {
                    return status(StatusCode::UNPROCESSABLE_ENTITY, "the test operation failed");
                }
                if !dry_run {
                    self.secrets.lock().unwrap().insert(key, secret.clone());
                }
                respond(StatusCode::OK, &secret)
            }
            ("POST", ["apis", "pullsecret-injector.io", "v1alpha1", "pullsecretcopies"]) => {
                let mut entry: Value = serde_json::from_slice(&body).unwrap();
                let name = entry["metadata"]["name"].as_str().unwrap().to_string();
                let mut ledger = self.ledger.lock().unwrap();
                if ledger.contains_key(&name) {
                    return status(StatusCode::CONFLICT, "already exists");
                }
                entry["metadata"]["uid"] = json!(format!("uid-{name}"));
                entry["metadata"]["resourceVersion"] = json!("1");
                ledger.insert(name, entry.clone());
                respond(StatusCode::CREATED, &entry)
            }
            ("PATCH", ["apis", "pullsecret-injector.io", "v1alpha1", "pullsecretcopies", name]) => {
                let body: Value = serde_json::from_slice(&body).unwrap();
                let mut ledger = self.ledger.lock().unwrap();
                if body.is_array() {
                    // A JSON patch, `test`s included, of an entry that must exist.
                    let Some(stored) = ledger.get_mut(*name) else { return status(StatusCode::NOT_FOUND, "not found") };
                    let patch: json_patch::Patch = serde_json::from_value(body).unwrap();
                    if json_patch::patch(stored, &patch).is_err() {
                        return status(StatusCode::UNPROCESSABLE_ENTITY, "the test operation failed");
                    }
                    bump(stored);
                    return respond(StatusCode::OK, stored);
                }
                // Server-side apply or a merge patch.
                let stored = ledger
                    .entry(name.to_string())
                    .or_insert_with(|| json!({ "metadata": { "uid": format!("uid-{name}"), "resourceVersion": "0" } }));
                json_patch::merge(stored, &body);
                bump(stored);
                respond(StatusCode::OK, stored)
            }
            ("DELETE", ["apis", "pullsecret-injector.io", "v1alpha1", "pullsecretcopies", name]) => {
                let mut ledger = self.ledger.lock().unwrap();
                let Some(stored) = ledger.get(*name) else { return status(StatusCode::NOT_FOUND, "not found") };
                let options: Value = serde_json::from_slice(&body).unwrap_or_default();
                let preconditions = &options["preconditions"];
                for field in ["uid", "resourceVersion"] {
                    if !preconditions[field].is_null() && preconditions[field] != stored["metadata"][field] {
                        return status(StatusCode::CONFLICT, "the precondition failed");
                    }
                }
                let deleted = ledger.remove(*name).unwrap();
                respond(StatusCode::OK, &deleted)
            }
            ("POST", [.., "events"]) => respond(StatusCode::CREATED, &serde_json::from_slice::<Value>(&body).unwrap()),
            _ => status(StatusCode::NOT_FOUND, "not served by this test API"),
        }
    }
}

/// A write of a ledger entry gives it a new resourceVersion.
fn bump(entry: &mut Value) {
    let version: u64 = entry["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
    entry["metadata"]["resourceVersion"] = json!((version + 1).to_string());
}

fn respond(code: StatusCode, body: &Value) -> http::Response<Full<Bytes>> {
    http::Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

fn status(code: StatusCode, message: &str) -> http::Response<Full<Bytes>> {
    respond(
        code,
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
            "reason": code.canonical_reason(), "code": code.as_u16() }),
    )
}

/// Fixture caches, owners and API, and the context the webhook and resolver share over them.
pub struct World {
    pub feed: Feed,
    pub owners: MemoryOwners,
    pub api: MemoryApi,
    pub ctx: Arc<Context>,
}

impl World {
    /// Must be called inside a Tokio runtime (the client spawns its buffer).
    pub fn new(fixture: Fixture) -> World {
        let feed = Caches::from_fixture(fixture);
        let owners = MemoryOwners::default();
        let api = MemoryApi::default();
        let rules = NamespaceRules {
            own_namespace: OWN_NAMESPACE.into(),
            excluded_namespaces: vec!["excluded".into()],
            included_namespaces: vec!["openshift-included".into()],
        };
        let ctx = Context::new(api.client(), feed.caches().clone(), Owners::new(owners.clone()), rules, "test");
        World { feed, owners, api, ctx }
    }

    /// The webhook as registered with `failurePolicy: Fail`, with a 2 s deadline.
    pub fn webhook(&self, on_copy_failure: OnCopyFailure) -> Arc<Webhook> {
        self.webhook_with(FailurePolicy::Fail, on_copy_failure)
    }

    pub fn webhook_with(&self, failure_policy: FailurePolicy, on_copy_failure: OnCopyFailure) -> Arc<Webhook> {
        let settings = Settings {
            failure_policy,
            on_copy_failure,
            deadline: std::time::Duration::from_secs(2),
            peers_verified: false,
        };
        Arc::new(Webhook::new(self.ctx.clone(), settings))
    }

    /// The webhook's router, as `serve` mounts it.
    pub fn router(&self, on_copy_failure: OnCopyFailure) -> axum::Router {
        olm_pullsecret_injector::router(self.webhook(on_copy_failure), Default::default())
    }
}

/// POSTs `body` to `/mutate` through the router; the status and the JSON answer.
pub async fn post(router: &axum::Router, body: Vec<u8>) -> (u16, Value) {
    let request = http::Request::post("/mutate").header("content-type", "application/json").body(Body::from(body));
    let response = router.clone().oneshot(request.unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes))))
}

/// An AdmissionReview of `kind` (`Pod` or `ServiceAccount`) as the API server sends it.
pub fn review(kind: &str, operation: &str, ns: &str, object: Value) -> Vec<u8> {
    let resource = if kind == "Pod" { "pods" } else { "serviceaccounts" };
    serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": format!("uid-{kind}-{ns}"), "kind": { "group": "", "version": "v1", "kind": kind },
        "resource": { "group": "", "version": "v1", "resource": resource }, "namespace": ns,
        "name": object["metadata"]["name"], "operation": operation, "userInfo": { "username": "test" },
        "object": object, "dryRun": false } }))
    .unwrap()
}

/// The AdmissionReview of an UPDATE (`new` given) or DELETE of the Secret `old`, as the API
/// server sends it through the copies registration.
pub fn secret_review(old: &Value, new: Option<&Value>) -> Vec<u8> {
    let meta = &old["metadata"];
    let operation = if new.is_some() { "UPDATE" } else { "DELETE" };
    serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "uid-Secret", "kind": { "group": "", "version": "v1", "kind": "Secret" },
        "resource": { "group": "", "version": "v1", "resource": "secrets" }, "namespace": meta["namespace"],
        "name": meta["name"], "operation": operation, "userInfo": { "username": "tenant-admin" },
        "object": new, "oldObject": old, "dryRun": false } }))
    .unwrap()
}

/// A Pod owned by `owners` (as JSON ownerReferences), with `pull_secrets` if given.
pub fn pod(owners: &[OwnerRef], pull_secrets: Option<&[&str]>) -> Value {
    let owners: Vec<Value> = owners
        .iter()
        .map(|o| json!({ "apiVersion": o.api_version, "kind": o.kind, "name": o.name, "uid": o.uid, "controller": true }))
        .collect();
    let mut pod = json!({ "apiVersion": "v1", "kind": "Pod",
        "metadata": { "generateName": "web-", "ownerReferences": owners },
        "spec": { "containers": [{ "name": "c", "image": "registry.example/app:1" }] } });
    if let Some(names) = pull_secrets {
        let list: Vec<Value> = names.iter().map(|n| json!({ "name": n })).collect();
        pod["spec"]["imagePullSecrets"] = json!(list);
    }
    pod
}

/// The JSON patch of an answered review, decoded.
pub fn patch_of(answer: &Value) -> Option<Value> {
    use base64::Engine;
    let encoded = answer["response"]["patch"].as_str()?;
    Some(serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()).unwrap())
}
