//! End to end: the real API server calls the webhook over TLS through a real
//! MutatingWebhookConfiguration; Pods come from Deployments through the controller-manager; the
//! webhook runs as its own service account with the chart's RBAC.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use olm_pullsecret_injector::state::links::{PullSecretLink, name_of};
use serde_json::json;
use support::olm::*;
use support::webhook::WebhookProcess;
use support::{ControlPlane, create_namespace, unique_name};

/// Real OLM installs the operators: the control plane runs it (asked for before the webhook
/// asks for the shared control plane).
async fn setup() -> (kube::Client, &'static WebhookProcess) {
    let cp = ControlPlane::with_olm();
    let webhook = WebhookProcess::shared().await;
    (cp.admin().await, webhook)
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
    let (client, webhook) = setup().await;
    let (catalog, op, _) = private_operator(&client, &[]).await;
    let ns = op.namespace.clone();

    // OLM's Deployment of the operator, owned by its CSV.
    let pod = &pods_of(&client, &ns, "widget-operator", 1).await[0];
    assert_eq!(pull_secret_names(pod), [catalog.secret.as_str()]);

    let secrets = secrets_in(&client, &ns).await;
    assert_is_copy_of(&secrets[&catalog.secret], &catalog.source);

    let admin = format!("127.0.0.1:{}", webhook.admin_port);
    let (status, metrics) = support::webhook::http_get(&admin, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"pullsecret_injector_admissions_total{kind="Pod",operation="CREATE",decision="patched"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("pullsecret_injector_copies_created_total"), "{metrics}");
    assert!(metrics.contains("pullsecret_injector_admission_duration_seconds_bucket"), "{metrics}");
}

#[tokio::test]
async fn operand_of_a_custom_resource_in_a_target_namespace_gets_the_secret() {
    let (client, webhook) = setup().await;
    let (catalog, _, mut tenants) = private_operator(&client, &["tenant"]).await;
    let tenant = tenants.remove(0);

    let owner = create_operand(&client, WIDGET, &tenant, "prod").await;
    create_deployment(&client, &tenant, "widget-prod", Some(owner), 1, json!({})).await;
    let pod = &pods_of(&client, &tenant, "widget-prod", 1).await[0];
    assert_eq!(pull_secret_names(pod), [catalog.secret.as_str()]);
    assert_is_copy_of(&secrets_in(&client, &tenant).await[&catalog.secret], &catalog.source);

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
    // In a namespace the operator reaches (its own holds the copies its Pods and
    // ServiceAccounts got from OLM's install).
    let (catalog, _, mut tenants) = private_operator(&client, &["tenant"]).await;
    let ns = tenants.remove(0);

    create_deployment(&client, &ns, "unrelated", None, 1, json!({})).await;
    let pod = &pods_of(&client, &ns, "unrelated", 1).await[0];
    assert!(pull_secret_names(pod).is_empty());
    assert!(!secrets_in(&client, &ns).await.contains_key(catalog.secret.as_str()));
}

#[tokio::test]
async fn dry_run_returns_the_patch_and_creates_no_secret() {
    let (client, _webhook) = setup().await;
    // In a namespace the operator reaches (its own holds the copies its Pods and
    // ServiceAccounts got from OLM's install), for an operand.
    let (catalog, _, mut tenants) = private_operator(&client, &["tenant"]).await;
    let ns = tenants.remove(0);

    let owner = create_operand(&client, WIDGET, &ns, "prod").await;
    let pod = bare_pod(json!({ "name": "dry", "ownerReferences": [owner] }));
    let created = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams { dry_run: true, ..Default::default() }, &pod)
        .await
        .unwrap();
    assert_eq!(pull_secret_names(&created), [catalog.secret.as_str()]);
    assert!(secrets_in(&client, &ns).await.is_empty(), "dry run must not create the copy");
    assert!(Api::<Pod>::namespaced(client.clone(), &ns).get_opt("dry").await.unwrap().is_none());
}

#[tokio::test]
async fn service_accounts_owned_by_the_csv_or_named_by_its_install_strategy_get_the_secret() {
    let (client, _webhook) = setup().await;
    let (catalog, op, _) = private_operator(&client, &[]).await;
    let ns = op.namespace.clone();
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), &ns);

    // OLM creates both ServiceAccounts of the install strategy, owned by the CSV.
    let owned = service_account(&client, &ns, "widget-operator").await;
    let csv_owned = |sa: &ServiceAccount| sa.metadata.owner_references.iter().flatten().any(|o| o.uid == op.csv_uid);
    assert!(csv_owned(&owned), "{owned:?}");
    // The tenant links a pull secret of its own to the one the strategy names (an update that
    // sets the list): the webhook keeps it first.
    settled(&client, &op).await;
    let own = json!({ "imagePullSecrets": [{ "name": "tenant-own" }] });
    let named = sas.patch("widget-runner", &PatchParams::default(), &Patch::Merge(&own)).await.unwrap();
    let other: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "someone-else" } })).unwrap();
    sas.create(&PostParams::default(), &other).await.unwrap();
    // Admitted by the webhook, or (created before the webhook's caches had the CSV) backfilled.
    let owned = support::eventually("the operator's ServiceAccount to list the copy", INSTALL, || async {
        let sa = sas.get("widget-operator").await.unwrap();
        (service_account_pull_secrets(&sa) == [catalog.secret.as_str()]).then_some(sa)
    })
    .await;
    assert_eq!(owned.metadata.annotations.unwrap()["pullsecret-injector.io/injected"], catalog.secret.as_str());
    assert_eq!(service_account_pull_secrets(&named), ["tenant-own", catalog.secret.as_str()]);
    assert!(service_account_pull_secrets(&sas.get("someone-else").await.unwrap()).is_empty());
}

fn review(request: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request }))
        .unwrap()
}

#[tokio::test]
async fn all_namespaces_operator_in_openshift_operators_reaches_every_tenant() {
    let (client, _webhook) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let ns = "openshift-operators";
    create_namespace(&client, ns).await;
    install_operator_for(&client, &catalog, ns, &[""], GADGET).await;

    // The operator's own pod (OLM's Deployment), in openshift-operators (an openshift-*
    // namespace that is handled).
    assert_eq!(pull_secret_names(&pods_of(&client, ns, "widget-operator", 1).await[0]), [catalog.secret.as_str()]);

    for _ in 0..2 {
        let tenant = unique_name("anywhere");
        create_namespace(&client, &tenant).await;
        let owner = create_operand(&client, GADGET, &tenant, "g").await;
        create_deployment(&client, &tenant, "gadget", Some(owner), 1, json!({})).await;
        assert_eq!(pull_secret_names(&pods_of(&client, &tenant, "gadget", 1).await[0]), [catalog.secret.as_str()]);
        assert_is_copy_of(&secrets_in(&client, &tenant).await[&catalog.secret], &catalog.source);
    }

    // Excluded namespaces stay untouched even though the operator reaches them.
    for excluded in ["kube-system", support::webhook::NAMESPACE] {
        let owner = create_operand(&client, GADGET, excluded, &unique_name("g")).await;
        let name = unique_name("excluded");
        let pod = bare_pod(json!({ "name": name, "ownerReferences": [owner] }));
        let created =
            Api::<Pod>::namespaced(client.clone(), excluded).create(&PostParams::default(), &pod).await.unwrap();
        assert!(pull_secret_names(&created).is_empty(), "{excluded} must never be mutated");
        assert!(!secrets_in(&client, excluded).await.contains_key(catalog.secret.as_str()));
    }

    // A namespace that opted out.
    let opted_out = unique_name("opted-out");
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({ "metadata": { "name": opted_out,
        "annotations": { "pullsecret-injector.io/inject": "false" } } }))
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .unwrap();
    let owner = create_operand(&client, GADGET, &opted_out, "g").await;
    // The webhook sees namespaces through a watch: dry runs (which copy nothing) tell when it
    // has seen this one.
    let probes = Api::<Pod>::namespaced(client.clone(), &opted_out);
    support::eventually("the webhook to see the opted-out namespace", std::time::Duration::from_secs(30), || async {
        let probe = bare_pod(json!({ "generateName": "probe-", "ownerReferences": [owner] }));
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        pull_secret_names(&probes.create(&dry_run, &probe).await.unwrap()).is_empty().then_some(())
    })
    .await;
    create_deployment(&client, &opted_out, "gadget", Some(owner), 1, json!({})).await;
    assert!(pull_secret_names(&pods_of(&client, &opted_out, "gadget", 1).await[0]).is_empty());
    assert!(!secrets_in(&client, &opted_out).await.contains_key(catalog.secret.as_str()));
}

#[tokio::test]
async fn existing_pull_secrets_are_kept_in_order_and_the_patch_is_idempotent() {
    let (client, webhook) = setup().await;
    let (catalog, op, _) = private_operator(&client, &[]).await;
    let ns = op.namespace.clone();

    // A further Deployment of the operator (OLM's own has no pull secrets).
    let pod_spec = json!({ "imagePullSecrets": [{ "name": "first" }, { "name": "second" }] });
    create_deployment(&client, &ns, "widget-helper", Some(op.csv_owner()), 1, pod_spec).await;
    let pod = pods_of(&client, &ns, "widget-helper", 1).await.remove(0);
    assert_eq!(pull_secret_names(&pod), ["first", "second", catalog.secret.as_str()]);

    // The stored Pod sent back through the webhook needs nothing more.
    let (status, answer) = webhook
        .post(
            "/mutate",
            &review(json!({ "uid": "again", "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" }, "operation": "CREATE", "namespace": ns,
            "object": pod })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["uid"], "again");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none(), "{answer}");
}

#[tokio::test]
async fn only_existing_pull_secrets_of_the_catalog_are_injected() {
    let (client, webhook) = setup().await;
    let (missing, opaque) = (unique_name("missing"), unique_name("opaque"));
    create_secret(&client, GLOBAL_CATALOGS, &opaque, "Opaque", json!({ "token": "x" })).await;
    let catalog = private_catalog(&client, &[&missing, &opaque]).await;
    let ns = unique_name("operator");
    create_namespace(&client, &ns).await;
    install_operator(&client, &catalog, &ns, &[&ns]).await;

    // OLM's Deployment of the operator.
    assert_eq!(pull_secret_names(&pods_of(&client, &ns, "widget-operator", 1).await[0]), [catalog.secret.as_str()]);
    let copies: Vec<String> = secrets_in(&client, &ns).await.into_keys().collect();
    assert_eq!(copies, [catalog.secret.as_str()]);
    let logs = webhook.logs();
    for name in [missing, opaque] {
        assert!(
            logs.contains(&format!(
                "pull secret {GLOBAL_CATALOGS}/{name} of the catalog is missing or not a pull secret"
            ))
        );
    }
}

#[tokio::test]
async fn a_tenant_secret_with_the_source_name_is_never_touched() {
    let (client, _webhook) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let ns = unique_name("operator");
    create_namespace(&client, &ns).await;
    let own = create_pull_secret(&client, &ns, catalog.secret.as_str(), "the-tenants-own").await;
    install_operator(&client, &catalog, &ns, &[&ns]).await;

    // OLM's Deployment of the operator.
    let pod = &pods_of(&client, &ns, "widget-operator", 1).await[0];
    let hashed =
        format!("{}-{}", catalog.secret, &sha256_hex(&format!("{}/{}", catalog.namespace, catalog.secret))[..10]);
    assert_eq!(pull_secret_names(pod), vec![hashed.clone()]);

    let secrets = secrets_in(&client, &ns).await;
    let still_own = &secrets[&catalog.secret];
    assert_eq!(still_own.metadata.resource_version, own.metadata.resource_version, "the tenant's secret was modified");
    assert_eq!(still_own.data, own.data);
    assert_is_copy_of(&secrets[&hashed], &catalog.source);

    // The entry made with the first try (under the tenant's name) was taken back, with the
    // chart's RBAC; the copy's entry stays.
    use olm_pullsecret_injector::inject::ledger::{PullSecretCopy, entry_name};
    let ledger = Api::<PullSecretCopy>::all(client.clone());
    assert!(ledger.get_opt(&entry_name(&ns, &catalog.secret)).await.unwrap().is_none());
    assert_eq!(ledger.get(&entry_name(&ns, &hashed)).await.unwrap().spec.name, hashed);
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn forged_owner_references_and_labels_get_nothing() {
    let (client, _webhook) = setup().await;
    // In a namespace the operator reaches, where nothing legitimate ran (its own namespace holds
    // the copies its Pods and ServiceAccounts got from OLM's install); OLM copied the CSV there.
    let (_, op, mut tenants) = private_operator(&client, &["tenant"]).await;
    let ns = tenants.remove(0);
    support::eventually("OLM to copy the CSV into the tenant", INSTALL, || async {
        csvs(&client, &ns).get_opt(&op.csv).await.unwrap()
    })
    .await;

    // An operand's ReplicaSet exists (no replicas, so nothing legitimate is injected yet).
    let owner = create_operand(&client, WIDGET, &ns, "prod").await;
    create_deployment(&client, &ns, "widget-prod", Some(owner), 0, json!({})).await;
    let sets = Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(client.clone(), &ns);
    let rs = support::eventually("the operand's ReplicaSet", std::time::Duration::from_secs(60), || async {
        sets.list(&ListParams::default()).await.unwrap().items.into_iter().next()
    })
    .await;
    let rs_name = rs.metadata.name.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let wrong_uid = owner_ref("apps/v1", "ReplicaSet", &rs_name, "00000000-0000-0000-0000-000000000000");
    let forged_csv = owner_ref(
        "operators.coreos.com/v1alpha1",
        "ClusterServiceVersion",
        &op.csv,
        "11111111-1111-1111-1111-111111111111",
    );
    let forgeries = [
        json!({ "name": "wrong-uid", "ownerReferences": [wrong_uid] }),
        json!({ "name": "wrong-csv-uid", "ownerReferences": [forged_csv] }),
        json!({ "name": "olm-labels", "labels": { "olm.owner": op.csv, "olm.owner.kind": "ClusterServiceVersion", "olm.owner.namespace": ns },
                "annotations": { "olm.operatorGroup": "og", "olm.operatorNamespace": ns, "olm.targetNamespaces": ns } }),
    ];
    for metadata in forgeries {
        let pod = bare_pod(metadata);
        let created = pods.create(&PostParams::default(), &pod).await.unwrap();
        assert!(pull_secret_names(&created).is_empty(), "{:?} got secrets", created.metadata.name);
    }
    assert!(secrets_in(&client, &ns).await.is_empty(), "a forgery caused a copy");
}

#[tokio::test]
async fn catalog_namespace_gets_original_names_and_catalog_pods_are_left_alone() {
    let (client, _webhook) = setup().await;
    // The one operator installed into the configured private catalog namespace, from its catalog.
    let ns = SELF_HOSTED_CATALOGS;
    let catalog = catalog_in(&client, ns, &[]).await;
    install_operator(&client, &catalog, ns, &[ns]).await;

    // OLM's Deployment of the operator.
    assert_eq!(pull_secret_names(&pods_of(&client, ns, "widget-operator", 1).await[0]), [catalog.secret.as_str()]);
    let managed: Vec<String> = secrets_in(&client, ns)
        .await
        .into_values()
        .filter(|s| s.metadata.labels.as_ref().is_some_and(|l| l.contains_key("app.kubernetes.io/managed-by")))
        .filter_map(|s| s.metadata.name)
        .collect();
    assert!(managed.is_empty(), "nothing is copied into the catalog's own namespace: {managed:?}");

    // The catalog's own pod is owned by the CatalogSource, not by a CSV.
    let catalogs: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &olm_resource("v1alpha1", "CatalogSource"));
    let uid = catalogs.get(&catalog.name).await.unwrap().metadata.uid.unwrap();
    let owner = owner_ref("operators.coreos.com/v1alpha1", "CatalogSource", &catalog.name, &uid);
    let pod: Pod =
        serde_json::from_value(json!({ "metadata": { "name": "private-catalog", "ownerReferences": [owner] },
        "spec": { "containers": [{ "name": "registry-server", "image": "registry.example/index:1" }] } }))
        .unwrap();
    let created = Api::<Pod>::namespaced(client.clone(), ns).create(&PostParams::default(), &pod).await.unwrap();
    assert!(pull_secret_names(&created).is_empty());
}

#[tokio::test]
async fn malformed_reviews_get_400_with_a_json_error_and_unknown_kinds_pass() {
    let (_client, webhook) = setup().await;
    let huge = vec![b' '; 9 * 1024 * 1024];
    let bodies: [(&str, Vec<u8>); 5] = [
        ("not json", b"this is not json".to_vec()),
        ("wrong apiVersion", br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE"}}"#.to_vec()),
        ("missing request", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec()),
        ("wrong types", br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#.to_vec()),
        ("huge", huge),
    ];
    for (what, body) in bodies {
        let (status, answer) = webhook.post("/mutate", &body).await;
        assert_eq!(status, 400, "{what}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {answer}");
    }
    assert!(webhook.is_running(), "bad input must never crash the webhook");

    let (status, answer) = webhook
        .post(
            "/mutate",
            &review(json!({ "uid": "cm-1", "kind": { "group": "", "version": "v1", "kind": "ConfigMap" },
            "operation": "CREATE", "namespace": "default", "object": { "metadata": { "name": "x" } } })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    assert_eq!(answer["response"]["uid"], "cm-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
}

#[tokio::test]
async fn fifty_operand_pods_at_once_share_one_copy() {
    let (client, _webhook) = setup().await;
    let (catalog, _, mut tenants) = private_operator(&client, &["burst"]).await;
    let tenant = tenants.remove(0);
    let owner = create_operand(&client, WIDGET, &tenant, "burst").await;

    let pods = Api::<Pod>::namespaced(client.clone(), &tenant);
    let creates = (0..50).map(|i| {
        let pods = pods.clone();
        let pod = bare_pod(json!({ "name": format!("p{i}"), "ownerReferences": [owner.clone()] }));
        async move { pods.create(&PostParams::default(), &pod).await }
    });
    let created = futures::future::join_all(creates).await;
    for pod in created {
        let pod = pod.expect("every pod is admitted");
        assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()], "{:?}", pod.metadata.name);
    }
    let secrets = secrets_in(&client, &tenant).await;
    let copies: Vec<&String> = secrets.keys().collect();
    assert_eq!(copies, [catalog.secret.as_str()], "exactly one copy per source");
}

#[tokio::test]
async fn a_pod_whose_copy_cannot_be_made_is_denied_retryably_and_a_service_account_is_admitted() {
    let (client, _webhook) = setup().await;
    let catalog = private_catalog(&client, &[]).await;
    let ns = unique_name("operator");
    create_namespace(&client, &ns).await;
    // The tenant holds both names a copy could take.
    let hashed =
        format!("{}-{}", catalog.secret, &sha256_hex(&format!("{}/{}", catalog.namespace, catalog.secret))[..10]);
    create_pull_secret(&client, &ns, catalog.secret.as_str(), "own-1").await;
    create_pull_secret(&client, &ns, &hashed, "own-2").await;
    let op = install_operator(&client, &catalog, &ns, &[&ns]).await;

    let pod = bare_pod(json!({ "name": "op", "ownerReferences": [op.csv_owner()] }));
    let err =
        Api::<Pod>::namespaced(client.clone(), &ns).create(&PostParams::default(), &pod).await.expect_err("denied");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 503, "{status:?}");
            assert!(status.message.contains("retry"), "{}", status.message);
            assert!(!status.message.contains("own-1") && !status.message.contains("token"), "no secret data in errors");
        }
        other => panic!("expected a 503 denial, got {other}"),
    }

    // OLM created the operator's ServiceAccount, owned by the CSV: admitted, without the copy.
    let created = service_account(&client, &ns, "widget-operator").await;
    assert!(created.metadata.owner_references.iter().flatten().any(|o| o.uid == op.csv_uid), "{created:?}");
    assert!(created.image_pull_secrets.is_none());
}

#[tokio::test]
async fn sigterm_turns_readiness_off_keeps_serving_through_the_drain_then_exits() {
    let (_client, _shared) = setup().await;
    let cp = ControlPlane::with_olm();
    let webhook =
        tokio::task::spawn_blocking(move || support::webhook::start(cp, "draining-webhook", &["--drain-delay", "2s"]))
            .await
            .unwrap();
    let admin = format!("127.0.0.1:{}", webhook.admin_port);
    assert_eq!(support::webhook::http_get_status(&admin, "/readyz"), Some(200));

    webhook.signal(libc::SIGTERM);
    support::eventually("readiness to turn false", std::time::Duration::from_secs(5), || async {
        (support::webhook::http_get_status(&admin, "/readyz") == Some(503)).then_some(())
    })
    .await;
    // Still draining: reviews are answered.
    let body = review(json!({ "uid": "draining", "kind": { "group": "", "version": "v1", "kind": "ConfigMap" },
        "operation": "CREATE", "namespace": "default", "object": { "metadata": { "name": "x" } } }));
    let (status, answer) = webhook.post("/mutate", &body).await;
    assert_eq!((status, answer["response"]["uid"].as_str()), (200, Some("draining")));

    let status = support::eventually("the process to exit", std::time::Duration::from_secs(20), || async {
        webhook.exit_status()
    })
    .await;
    assert!(status.success(), "{status:?}\n{}", webhook.logs());
}

/// Runs `explain <target> -o json` as an administrator would.
async fn explain(target: &str) -> serde_json::Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_olm-pullsecret-injector"))
        .args(["explain", target, "-o", "json"])
        .args(support::webhook::CATALOG_ARGS)
        .env("KUBECONFIG", ControlPlane::with_olm().kubeconfig())
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

#[tokio::test]
async fn explain_shows_the_chain_of_an_operand_and_why_others_get_nothing() {
    let (client, _webhook) = setup().await;
    let (catalog, _, mut tenants) = private_operator(&client, &["tenant"]).await;
    let tenant = tenants.remove(0);
    let owner = create_operand(&client, WIDGET, &tenant, "prod").await;
    create_deployment(&client, &tenant, "widget-prod", Some(owner), 1, json!({})).await;
    create_deployment(&client, &tenant, "unrelated", None, 1, json!({})).await;
    let operand = pods_of(&client, &tenant, "widget-prod", 1).await.remove(0);
    let unrelated = pods_of(&client, &tenant, "unrelated", 1).await.remove(0);
    // Forged with the labels OLM puts on what it owns (an ownerReference with a wrong UID would be
    // garbage-collected before explain could look at it).
    let forged = bare_pod(json!({ "name": "forged", "labels": {
        "olm.owner": "widget-operator.v1.0.0", "olm.owner.kind": "ClusterServiceVersion", "olm.owner.namespace": tenant } }));
    Api::<Pod>::namespaced(client.clone(), &tenant).create(&PostParams::default(), &forged).await.unwrap();

    let report = explain(&format!("pod/{tenant}/{}", operand.metadata.name.unwrap())).await;
    assert!(report["verdict"].as_str().unwrap().starts_with("ok"), "{report}");
    assert_eq!(report["catalogs"], json!([format!("{}/{}", catalog.namespace, catalog.name)]));
    assert!(
        report["chains"][0].as_str().unwrap().contains("<-Widget/prod<-CSV/widget-operator.v1.0.0<-Subscription/"),
        "{report}"
    );
    assert_eq!(report["secrets"][0]["name"], catalog.secret.as_str());
    assert_eq!(report["secrets"][0]["exists_in_namespace"], true);
    assert_eq!(report["secrets"][0]["listed_in_object"], true);

    let report = explain(&format!("pod/{tenant}/{}", unrelated.metadata.name.unwrap())).await;
    assert!(report["verdict"].as_str().unwrap().starts_with("not injected"), "{report}");
    assert!(report["dropped"][0].as_str().unwrap().contains("no operator above"), "{report}");

    let report = explain(&format!("pod/{tenant}/forged")).await;
    assert!(report["verdict"].as_str().unwrap().starts_with("not injected"), "{report}");
    assert_eq!(report["chains"], json!([]), "labels are never believed: {report}");
}

/// With the chart's default values no operand kind is granted. A Pod whose only path runs through
/// an operand the webhook may not read is admitted, not denied; a Pod with another path is
/// patched through it; the refusal is counted by resource and logged once.
#[tokio::test]
async fn an_owner_the_webhook_may_not_read_drops_that_path_and_never_denies_the_pod() {
    let (client, webhook) = setup().await;
    let (catalog, op, mut tenants) = private_operator(&client, &["ungranted"]).await;
    let tenant = tenants.remove(0);
    // A second operator beside it, subscribed from the same catalog, owning Doohickeys (whose
    // `get` the webhook is not granted).
    subscribe_operator(&client, &catalog, &op.namespace, DOOHICKEY).await;
    let doohickey = create_operand(&client, DOOHICKEY, &tenant, "d").await;
    let widget = create_operand(&client, WIDGET, &tenant, "w").await;

    // Once the webhook indexed the CSV owning Doohickeys, it looks the owner up (and is refused).
    let pods = Api::<Pod>::namespaced(client.clone(), &tenant);
    let probe = bare_pod(json!({ "generateName": "probe-", "ownerReferences": [doohickey.clone()] }));
    let dry_run = PostParams { dry_run: true, ..Default::default() };
    support::eventually("the webhook to look a Doohickey up", std::time::Duration::from_secs(30), || async {
        let _ = pods.create(&dry_run, &probe).await;
        webhook.decisions(&tenant).iter().any(|d| d.to_string().contains("doohickeys")).then_some(())
    })
    .await;

    create_deployment(&client, &tenant, "doohickey-only", Some(doohickey.clone()), 1, json!({})).await;
    let only = pods_of(&client, &tenant, "doohickey-only", 1).await.remove(0);
    assert!(pull_secret_names(&only).is_empty(), "no trusted path, nothing injected");
    let both = bare_pod(json!({ "name": "both", "ownerReferences": [doohickey, widget] }));
    let both = pods.create(&PostParams::default(), &both).await.unwrap();
    assert_eq!(pull_secret_names(&both), [catalog.secret.as_str()], "patched through the Widget path");

    let resource = format!("doohickeys.{WIDGET_GROUP}");
    let line = webhook
        .decisions(&tenant)
        .into_iter()
        .find(|d| d["kind"] == "Pod" && d["decision"] == "unchanged" && d["dry_run"] == false)
        .expect("the decision for the Doohickey's Pod");
    assert!(line["reason"].as_str().unwrap().contains(&format!("not allowed to get {resource}")), "{line}");
    let admin = format!("127.0.0.1:{}", webhook.admin_port);
    let (_, metrics) = support::webhook::http_get(&admin, "/metrics").unwrap();
    let counted = format!("pullsecret_injector_owner_lookups_forbidden_total{{resource=\"{resource}\"}}");
    assert!(metrics.contains(&counted), "{metrics}");
    // Once per resource and process: the webhook, and the reconciler that resolves the Pod too.
    let warnings = webhook.logs().lines().filter(|l| l.contains(&format!("may not get {resource}"))).count();
    assert!((1..=2).contains(&warnings), "logged once per resource and process, {warnings} times");
}

/// A copy someone else deleted is not listed by name while it does not exist: the webhook follows
/// its copies, so the next Pod gets a copy that exists.
#[tokio::test]
async fn a_pod_admitted_after_its_copy_was_deleted_gets_a_copy_that_exists() {
    let (client, _webhook) = setup().await;
    let (catalog, op, _) = private_operator(&client, &[]).await;
    let ns = op.namespace.clone();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let first = bare_pod(json!({ "name": "first", "ownerReferences": [op.csv_owner()] }));
    let first = pods.create(&PostParams::default(), &first).await.unwrap();
    assert_eq!(pull_secret_names(&first), [catalog.secret.as_str()]);
    secrets.delete(catalog.secret.as_str(), &Default::default()).await.unwrap();

    let started = std::time::Instant::now();
    let mut n = 0;
    support::eventually("a Pod admitted with a copy that exists", std::time::Duration::from_secs(10), || {
        n += 1;
        let (pods, secrets, owner) = (pods.clone(), secrets.clone(), op.csv_owner());
        let catalog = &catalog;
        async move {
            let pod = bare_pod(json!({ "name": format!("after-delete-{n}"), "ownerReferences": [owner] }));
            let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
            assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()]);
            secrets.get_opt(catalog.secret.as_str()).await.unwrap().map(|_| ())
        }
    })
    .await;
    println!("a deleted copy was made again by the next admission within {:?} ({n} Pods)", started.elapsed());
}

/// A namespace admin may edit their Subscription (OLM's aggregate-olm-edit), and OLM follows the
/// edit. Repointed at another catalog of the global namespace (oc-mirror's newly named catalog on
/// a disconnected cluster), the operator's new Pods get that catalog's secret, as a Subscription
/// to it would; pointed at another team's private catalog, which OLM does not resolve from for
/// this namespace, they never get that team's secret: the CSV keeps the link last proven (the
/// mirror), as it keeps running from there.
#[tokio::test]
async fn a_repointed_subscription_follows_olms_resolution() {
    use kube::api::DynamicObject;
    let (client, webhook) = setup().await;
    let (_, op, _) = private_operator(&client, &[]).await;
    let subs =
        Api::<DynamicObject>::namespaced_with(client.clone(), &op.namespace, &olm_resource("v1alpha1", "Subscription"));
    let pods = Api::<Pod>::namespaced(client.clone(), &op.namespace);
    let mirror = private_catalog(&client, &[]).await;
    let theirs = catalog_in(&client, SELF_HOSTED_CATALOGS, &[]).await;
    let to_mirror = format!("<-Subscription/widget-operator<-CatalogSource/{}/{}", mirror.namespace, mirror.name);
    let remembered =
        format!("<-Subscription/widget-operator(remembered)<-CatalogSource/{}/{}", mirror.namespace, mirror.name);
    for (catalog, expected, copied, chain) in [
        (&mirror, vec![mirror.secret.clone()], vec![mirror.secret.clone()], &to_mirror),
        (&theirs, vec![mirror.secret.clone()], vec![], &remembered),
    ] {
        let edit = json!({ "spec": { "source": catalog.name, "sourceNamespace": catalog.namespace } });
        subs.patch("widget-operator", &PatchParams::default(), &Patch::Merge(&edit)).await.unwrap();
        let probe = bare_pod(json!({ "generateName": "probe-", "ownerReferences": [op.csv_owner()] }));
        let dry_run = PostParams { dry_run: true, ..Default::default() };
        // Seen once a decision for the operator's namespace follows the edited Subscription.
        support::eventually(
            "the webhook to see the edited Subscription",
            std::time::Duration::from_secs(30),
            || async {
                pods.create(&dry_run, &probe).await.unwrap();
                let last = webhook.decisions(&op.namespace).pop()?;
                last["chain"].as_str().is_some_and(|c| c.ends_with(chain.as_str())).then_some(())
            },
        )
        .await;
        let pod = bare_pod(json!({ "generateName": "operator-", "ownerReferences": [op.csv_owner()] }));
        let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
        assert_eq!(pull_secret_names(&pod), expected, "pointed at {}/{}", catalog.namespace, catalog.name);
        assert_eq!(copies_of(&client, &op.namespace, catalog).await, copied, "copies of {}", catalog.secret);
        // The reconciler writes down the mirror as the CSV's catalog (a catalog that does not
        // serve this namespace never replaces it): what the next edit is remembered by.
        let links = Api::<PullSecretLink>::all(client.clone());
        support::eventually("the CSV's link to name the mirror", std::time::Duration::from_secs(30), || async {
            let link = links.get_opt(&name_of(&op.namespace, &op.csv)).await.unwrap()?;
            (link.spec.catalog_name == mirror.name).then_some(())
        })
        .await;
    }
}

/// OLM keeps five InstallPlans per namespace and deletes them with their Subscription's
/// garbage: an operator whose plans are gone keeps its link, through the Subscription.
#[tokio::test]
async fn an_operator_whose_install_plans_are_gone_keeps_its_link() {
    use kube::api::{DeleteParams, DynamicObject};
    let (client, _webhook) = setup().await;
    let (catalog, op, _) = private_operator(&client, &[]).await;
    let plans =
        Api::<DynamicObject>::namespaced_with(client.clone(), &op.namespace, &olm_resource("v1alpha1", "InstallPlan"));
    settled(&client, &op).await;
    plans.delete_collection(&DeleteParams::default(), &Default::default()).await.unwrap();
    support::eventually("the InstallPlans to be gone", std::time::Duration::from_secs(30), || async {
        plans.list(&Default::default()).await.unwrap().items.is_empty().then_some(())
    })
    .await;
    create_deployment(&client, &op.namespace, "after-gc", Some(op.csv_owner()), 1, json!({})).await;
    let pod = &pods_of(&client, &op.namespace, "after-gc", 1).await[0];
    assert_eq!(pull_secret_names(pod), [catalog.secret.as_str()]);
}

/// A catalog in a namespace other than the global one serves Subscriptions of that namespace
/// only, as OLM resolves: an operator installed elsewhere from it (its Subscription and CSV
/// saying so) gets nothing.
#[tokio::test]
async fn a_private_catalog_serves_no_other_namespace() {
    let (client, _webhook) = setup().await;
    let catalog = catalog_in(&client, SELF_HOSTED_CATALOGS, &[]).await;
    let ns = unique_name("cross");
    create_namespace(&client, &ns).await;
    // A namespace admin subscribes to it from elsewhere: OLM does not resolve the package there
    // (no InstallPlan, no CSV), so the admin writes the CSV by hand (`edit` may create CSVs);
    // OLM cannot install it (its ServiceAccounts are missing), and the admin creates its
    // Deployment.
    create_operator_group(&client, &ns, &[&ns]).await;
    let package = package_of(WIDGET);
    subscribe(&client, &ns, &package, (&catalog.namespace, &catalog.name), "Automatic", None).await;
    let csv = "widget-operator.v1.0.0";
    let uid = create_csv(&client, &ns, csv, WIDGET, &["widget-operator", "widget-runner"]).await;
    let owner = owner_ref("operators.coreos.com/v1alpha1", "ClusterServiceVersion", csv, &uid);
    private_operator(&client, &[]).await;
    let subscription = subscriptions(&client, &ns).get(&package).await.unwrap();
    assert!(subscription.data["status"]["installedCSV"].is_null(), "OLM resolved it: {:?}", subscription.data);
    create_deployment(&client, &ns, "widget-operator", Some(owner), 1, json!({})).await;
    assert!(pull_secret_names(&pods_of(&client, &ns, "widget-operator", 1).await[0]).is_empty());
    assert!(copies_of(&client, &ns, &catalog).await.is_empty());
}

/// The copies of `catalog`'s secret in `ns` (by the source annotation).
async fn copies_of(client: &kube::Client, ns: &str, catalog: &Catalog) -> Vec<String> {
    let source = format!("{}/{}", catalog.namespace, catalog.secret);
    secrets_in(client, ns)
        .await
        .into_iter()
        .filter(|(_, s)| {
            s.metadata.annotations.as_ref().and_then(|a| a.get("pullsecret-injector.io/source")) == Some(&source)
        })
        .map(|(name, _)| name)
        .collect()
}
