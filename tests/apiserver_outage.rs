//! Reliability: the API server stops answering for 30 s (its process is frozen with SIGSTOP, so
//! connections hang rather than fail). The webhook keeps answering warm reviews from its caches,
//! answers a review that needs the API server within its deadline (a retryable 503 for a Pod),
//! stays ready, steps down as the reconciler's lease holder, and once the API server is back it
//! leads again and its watches carry on: a newly installed operator is used as before.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::ControlPlane;
use support::olm::*;
use support::webhook::{WebhookProcess, http_get_status};

const OUTAGE: Duration = Duration::from_secs(30);

/// The kube-apiserver process of this test binary's control plane.
fn apiserver_pid(cp: &ControlPlane) -> i32 {
    let dir = cp.kubeconfig().parent().unwrap().to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.get(1).map(String::as_str) == Some("kube-apiserver") && args.iter().any(|a| a.contains(&dir)) {
            return pid;
        }
    }
    panic!("no kube-apiserver process for {dir}");
}

/// A Pod CREATE review as the API server sends it, owned by `owner`.
fn pod_review(uid: &str, ns: &str, owner: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": ns, "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "app-", "namespace": ns,
            "ownerReferences": [owner]}, "spec": {"containers": [{"name": "c", "image": "registry.example/app:1"}]}}}}))
    .unwrap()
}

fn patched_with(answer: &Value) -> Option<String> {
    use base64::Engine;
    let patch = answer["response"]["patch"].as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(patch).ok()?).ok()
}

/// Resumes the API server even if an assertion fails while it is frozen.
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a process of this test's control plane.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

#[tokio::test]
async fn the_webhook_answers_from_its_caches_while_the_api_server_is_down_and_recovers() {
    let cp = ControlPlane::with_olm();
    let webhook = WebhookProcess::shared().await;
    let client = cp.admin().await;
    let (catalog, _, tenants) = private_operator(&client, &["outage"]).await;
    let tenant = &tenants[0];
    let owner = create_operand(&client, WIDGET, tenant, "prod").await;
    // A real Pod warms the chain: owner verified, copy made, decision remembered.
    let pod = bare_pod(json!({ "generateName": "app-", "ownerReferences": [owner] }));
    let created = Api::<Pod>::namespaced(client.clone(), tenant).create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(pull_secret_names(&created), [catalog.secret.as_str()]);
    let (status, warm) = webhook.post("/mutate", &pod_review("warm-0", tenant, &owner)).await;
    assert_eq!(status, 200);
    assert!(patched_with(&warm).is_some_and(|p| p.contains(catalog.secret.as_str())), "{warm}");

    let frozen = Frozen(apiserver_pid(cp));
    // SAFETY: kill(2) on a process of this test's control plane.
    assert_eq!(unsafe { libc::kill(frozen.0, libc::SIGSTOP) }, 0);
    let stopped = Instant::now();
    let admin = format!("127.0.0.1:{}", webhook.admin_port);
    let mut answered = 0;
    while stopped.elapsed() < OUTAGE {
        let asked = Instant::now();
        let (status, answer) = webhook.post("/mutate", &pod_review(&format!("warm-{answered}"), tenant, &owner)).await;
        assert_eq!(status, 200, "{answer}");
        assert!(patched_with(&answer).is_some_and(|p| p.contains(catalog.secret.as_str())), "{answer}");
        assert!(asked.elapsed() < Duration::from_millis(500), "a warm review waited {:?}", asked.elapsed());
        assert_eq!(http_get_status(&admin, "/readyz"), Some(200), "still ready while the API server is down");
        answered += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // An owner the webhook never saw needs the API server: a prompt, retryable denial.
    let unknown = owner_ref(&WIDGET.api_version(), "Widget", "never-seen", "11111111-2222-3333-4444-555555555555");
    let asked = Instant::now();
    let (status, answer) = webhook.post("/mutate", &pod_review("cold", tenant, &unknown)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(answer["response"]["status"]["code"], 503, "{answer}");
    assert!(asked.elapsed() < Duration::from_secs(5), "answered after {:?}", asked.elapsed());
    // The reconciler's lease could not be renewed: it stopped reconciling rather than act on a
    // lease another replica could take.
    assert!(webhook.logs().contains("could not renew in time: stopped reconciling"), "{}", webhook.logs());
    drop(frozen);
    println!("{answered} warm reviews answered from the caches during a {OUTAGE:?} outage");
    support::eventually("the lease to be held again", Duration::from_secs(30), || async {
        (webhook.logs().matches("acquired the lease").count() >= 2).then_some(())
    })
    .await;

    // Back: the watches carry on, and a newly installed operator is used (install_operator
    // waits until a dry-run Pod owned by its CSV comes back with the secret).
    let (catalog, operator, _) = private_operator(&client, &[]).await;
    let pod = bare_pod(json!({ "generateName": "op-", "ownerReferences": [operator.csv_owner()] }));
    let pods = Api::<Pod>::namespaced(client.clone(), &operator.namespace);
    assert_eq!(pull_secret_names(&pods.create(&PostParams::default(), &pod).await.unwrap()), [catalog.secret.as_str()]);
}
