//! Proof that the test control plane is a real one: controllers run, OLM's CRDs serve their
//! status subresources, RBAC is enforced and admission webhooks are called over TLS; and that our
//! API client speaks HTTP/2 to it.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{ControlPlane, create_namespace, eventually, unique_name};

/// Our API client (`src/api_client.rs`) speaks HTTP/2 to the API server, so concurrent requests
/// share one connection instead of each opening a TLS connection of its own (the bursts bench's
/// first wave), and it keeps kube's credentials and impersonation (the identity the answer is for).
#[tokio::test]
async fn the_api_client_speaks_http2_with_kubes_credentials() {
    let cp = ControlPlane::shared();
    for (client, user) in [
        (cp.admin().await, None),
        (cp.impersonating("kube-system", "default").await, Some("system:serviceaccount:kube-system:default")),
    ] {
        let review = json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview" });
        let request = axum::http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header("content-type", "application/json")
            .body(kube::client::Body::from(serde_json::to_vec(&review).unwrap()))
            .unwrap();
        let response = client.send(request).await.unwrap();
        assert_eq!(response.version(), axum::http::Version::HTTP_2);
        assert_eq!(response.status(), 201);
        let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if let Some(user) = user {
            assert_eq!(answer["status"]["userInfo"]["username"], user);
        }
    }
}

#[tokio::test]
async fn a_deployment_yields_a_pod_through_the_controller_manager() {
    let client = ControlPlane::shared().admin().await;
    // Stamped like a release build, so tools that check the version (Helm's kubeVersion) accept it.
    let version = client.apiserver_version().await.unwrap();
    let go_mod = include_str!("controlplane/go.mod");
    assert!(go_mod.contains(&format!("k8s.io/kubernetes {}", version.git_version)), "{version:?}");
    let ns = unique_name("smoke-deploy");
    create_namespace(&client, &ns).await;

    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "registry.example/web:1" }] }
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), &ns).create(&PostParams::default(), &deployment).await.unwrap();

    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let pod = eventually("a pod of the deployment", Duration::from_secs(60), || async {
        pods.list(&ListParams::default()).await.unwrap().items.into_iter().next()
    })
    .await;
    let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "ReplicaSet");
    assert!(owner.name.starts_with("web-"));

    // The serviceaccount controller gave the new namespace its default service account.
    let sas = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns);
    eventually("the default service account", Duration::from_secs(30), || async {
        sas.get_opt("default").await.unwrap()
    })
    .await;
}

fn olm(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("operators.coreos.com", "v1alpha1", kind))
}

#[tokio::test]
async fn olm_crds_serve_objects_and_their_status_subresource() {
    let client = ControlPlane::shared().admin().await;
    let ns = unique_name("smoke-olm");
    create_namespace(&client, &ns).await;

    let catalogs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &olm("CatalogSource"));
    let catalog: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "CatalogSource",
        "metadata": { "name": "private" },
        "spec": { "sourceType": "grpc", "image": "registry.example/index:1", "secrets": ["registry-creds"] }
    }))
    .unwrap();
    let created = catalogs.create(&PostParams::default(), &catalog).await.unwrap();
    assert_eq!(created.data["spec"]["secrets"], json!(["registry-creds"]));

    let subs: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &olm("Subscription"));
    let sub: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "Subscription",
        "metadata": { "name": "etcd" },
        "spec": { "name": "etcd", "source": "private", "sourceNamespace": ns, "channel": "stable" }
    }))
    .unwrap();
    subs.create(&PostParams::default(), &sub).await.unwrap();

    // status is a subresource: a main-resource patch must not change it, a status patch must.
    let status = json!({ "status": { "installedCSV": "etcd.v0.9.4", "currentCSV": "etcd.v0.9.4", "lastUpdated": "2026-01-01T00:00:00Z" } });
    let ignored = subs.patch("etcd", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert!(ignored.data.get("status").is_none_or(|s| s.get("installedCSV").is_none()));
    let patched = subs.patch_status("etcd", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert_eq!(patched.data["status"]["installedCSV"], "etcd.v0.9.4");

    for (version, kind) in [("v1alpha1", "ClusterServiceVersion"), ("v1", "OperatorGroup"), ("v1alpha1", "InstallPlan")]
    {
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("operators.coreos.com", version, kind));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &resource);
        api.list(&ListParams::default()).await.unwrap_or_else(|e| panic!("list {kind}: {e}"));
    }
}

#[tokio::test]
async fn rbac_denies_a_service_account_without_rules() {
    let cp = ControlPlane::shared();
    let admin = cp.admin().await;
    let ns = unique_name("smoke-rbac");
    create_namespace(&admin, &ns).await;

    let nobody = cp.impersonating(&ns, "nobody").await;
    let err = Api::<ConfigMap>::namespaced(nobody, &ns)
        .list(&ListParams::default())
        .await
        .expect_err("an unprivileged service account must not list configmaps");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403, got {other}"),
    }
}

/// A minimal HTTPS admission webhook: it counts calls and labels every Pod `mutated: "yes"`.
async fn start_labelling_webhook(calls: Arc<AtomicUsize>) -> (u16, String) {
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params(), rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
    let cert = params.signed_by(&key, &ca).unwrap();

    let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();

    let app = axum::Router::new().route(
        "/mutate",
        axum::routing::post(move |axum::Json(review): axum::Json<serde_json::Value>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let patch = json!([{ "op": "add", "path": "/metadata/labels", "value": { "mutated": "yes" } }]);
                axum::Json(json!({
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": {
                        "uid": review["request"]["uid"],
                        "allowed": true,
                        "patchType": "JSONPatch",
                        "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string()),
                    }
                }))
            }
        }),
    );
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (port, ca.pem())
}

fn ca_params() -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "smoke test CA");
    params
}

#[tokio::test]
async fn a_mutating_webhook_is_called_over_tls_and_its_patch_is_stored() {
    let client = ControlPlane::shared().admin().await;
    let ns = unique_name("smoke-webhook");
    create_namespace(&client, &ns).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (port, ca_pem) = start_labelling_webhook(calls.clone()).await;

    let name = format!("smoke-{ns}");
    let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": { "name": name },
        "webhooks": [{
            "name": "smoke.pullsecret-injector.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}/mutate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
            },
            "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": ns } },
            "rules": [{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"] }]
        }]
    }))
    .unwrap();
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    configs.create(&PostParams::default(), &config).await.unwrap();

    // The apiserver picks the configuration up asynchronously: retry until the webhook is seen.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let stored = eventually("the webhook to be called", Duration::from_secs(30), || async {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "generateName": "probe-" },
            "spec": { "containers": [{ "name": "c", "image": "registry.example/probe:1" }] }
        }))
        .unwrap();
        let created = pods.create(&PostParams::default(), &pod).await.unwrap();
        let labels = created.metadata.labels.clone().unwrap_or_default();
        (labels.get("mutated").map(String::as_str) == Some("yes")).then_some(created)
    })
    .await;
    assert!(calls.load(Ordering::SeqCst) >= 1);
    let reread = pods.get(stored.metadata.name.as_deref().unwrap()).await.unwrap();
    assert_eq!(reread.metadata.labels.unwrap()["mutated"], "yes");

    configs.delete(&name, &Default::default()).await.unwrap();
}
