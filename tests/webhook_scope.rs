//! What the chart's MutatingWebhookConfiguration does not match: its own namespace, kube-system
//! (and every kube-* and openshift-* namespace but openshift-operators), and Secrets. Registered
//! with `failurePolicy: Fail` and pointed at a loopback port where nothing listens, the webhook is
//! "down": whatever it matches is refused, whatever it does not match goes through.
//! A test binary of its own: a configuration that refuses Pods would disturb other tests.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;
use support::webhook::{NAMESPACE, chart_webhook_configuration};
use support::{ControlPlane, create_namespace, create_namespace_if_missing, eventually, helm, unique_name};

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({ "metadata": { "name": name },
        "spec": { "containers": [{ "name": "c", "image": "registry.example.com/app:1" }] } }))
    .unwrap()
}

async fn create_pod(client: &kube::Client, ns: &str) -> Result<Pod, kube::Error> {
    Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod(&unique_name("p"))).await
}

fn assert_webhook_failure<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains("failed calling webhook") && status.message.contains("pullsecret-injector.io"),
            "{what}: {}",
            status.message
        ),
        other => panic!("{what} must fail on the unreachable webhook, got {other:?}"),
    }
}

#[tokio::test]
async fn with_the_webhook_down_and_fail_policy_only_tenant_pods_and_service_accounts_are_refused() {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    // Namespaces first, with their default service accounts: once the configuration is active,
    // the controller-manager could not create those in the namespaces the webhook matches.
    let tenant = unique_name("tenant");
    create_namespace(&client, &tenant).await;
    let others = [NAMESPACE, "kube-system", "kube-public", "openshift-marketplace", "openshift-monitoring"];
    for ns in others.iter().chain(&["openshift-operators", tenant.as_str()]) {
        create_namespace_if_missing(&client, ns).await;
        let sas = Api::<ServiceAccount>::namespaced(client.clone(), ns);
        eventually(&format!("the default service account of {ns}"), Duration::from_secs(30), || async {
            sas.get_opt("default").await.unwrap().map(|_| ())
        })
        .await;
    }

    // A port with no listener: a call is refused at once (loopback only, never a Service IP).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ca = olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()])
        .unwrap()
        .ca_pem;
    let config = chart_webhook_configuration(&format!("https://127.0.0.1:{closed}/mutate"), &ca, "Fail");
    helm::apply(&client, &config, false).await.unwrap();
    // The API server loads the configuration asynchronously: wait until it refuses a tenant Pod.
    eventually("the configuration to be active", Duration::from_secs(30), || async {
        match create_pod(&client, &tenant).await {
            Err(kube::Error::Api(s)) if s.message.contains("failed calling webhook") => Some(()),
            Err(e) => panic!("unexpected refusal: {e}"),
            Ok(_) => None,
        }
    })
    .await;

    // Proof that it is active: tenant Pods and ServiceAccounts, and openshift-operators.
    assert_webhook_failure(create_pod(&client, &tenant).await, "a tenant pod");
    let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "app" } })).unwrap();
    let tenant_sas = Api::<ServiceAccount>::namespaced(client.clone(), &tenant);
    assert_webhook_failure(tenant_sas.create(&PostParams::default(), &sa).await, "a tenant service account");
    assert_webhook_failure(create_pod(&client, "openshift-operators").await, "a pod in openshift-operators");

    // Not matched: the release namespace, kube-system, other kube-* and openshift-* namespaces.
    for ns in others {
        create_pod(&client, ns).await.unwrap_or_else(|e| panic!("a pod in {ns} must not reach the webhook: {e}"));
        let sa: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": unique_name("sa") } })).unwrap();
        Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap_or_else(|e| panic!("a service account in {ns} must not reach the webhook: {e}"));
    }

    // Never Secrets, in any namespace: the webhook creates Secrets while it answers.
    let secret: Secret = serde_json::from_value(json!({ "metadata": { "name": "tenant-secret" },
        "type": "kubernetes.io/dockerconfigjson", "stringData": { ".dockerconfigjson": "{\"auths\":{}}" } }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &tenant)
        .create(&PostParams::default(), &secret)
        .await
        .expect("a Secret in a tenant namespace must not reach the webhook");
}
