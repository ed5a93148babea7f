//! The Helm chart, rendered by helm built from its Go module (tests/helm): `helm lint` and
//! `helm template` for each certificate mode and for non-default values, the values schema, the
//! properties the README asks of the render ("Install", "RBAC", "Security"), and every rendered
//! object applied to the real control plane with server-side apply.

mod support;

use serde_json::{Value, json};
use support::helm::{self, Helm, find, of_kind};
use support::{ControlPlane, create_namespace_if_missing, eventually, unique_name};

const MODES: [&str; 3] = ["self-signed", "cert-manager", "openshift"];
const NS: &str = "psi-system";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Every value changed from its default that changes what is rendered.
fn non_default_values(catalogs: [&str; 2]) -> Value {
    json!({
        "healPods": true,
        "globalCatalogNamespace": catalogs[0],
        "catalogNamespaces": [catalogs[1]],
        "failurePolicy": "Fail",
        "timeoutSeconds": 10,
        "deadline": "8s",
        "serviceMonitor": { "enabled": true, "labels": { "release": "prometheus" } },
        "operandOwnerRules": [{ "apiGroups": ["etcd.database.coreos.com"], "resources": ["etcdclusters"], "verbs": ["get"] }],
        "excludeNamespaces": ["legacy-apps"],
        "includeNamespaces": ["openshift-gitops"],
        "replicas": 3,
        "onCopyFailure": "allow",
        "cleanupGrace": "30m",
        "logFormat": "text",
        "image": { "repository": "registry.example.com/psi", "tag": "1.2.3", "digest": DIGEST },
        "imagePullSecrets": [{ "name": "registry-login" }],
        "clientCA": { "configMapName": "apiserver-client-ca", "key": "ca.crt", "allowedName": "kube-apiserver.example" },
        "networkPolicy": { "apiServerCIDRs": ["10.0.0.0/24"], "metricsNamespaces": [], "metricsNamespaceLabels": { "name": "monitoring" } },
    })
}

fn with_mode(mut values: Value, mode: &str) -> Value {
    values["certificates"] = json!({ "mode": mode });
    values
}

fn container(objects: &[Value], deployment: &str) -> Value {
    find(objects, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0].clone()
}

fn args(objects: &[Value], deployment: &str) -> Vec<String> {
    container(objects, deployment)["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

#[test]
fn lint_passes_for_every_certificate_mode_with_default_and_non_default_values() {
    let helm = Helm::shared();
    for mode in MODES {
        for values in [json!({}), non_default_values(["catalogs-a", "catalogs-b"])] {
            let values = with_mode(values, mode);
            let report = helm.lint(&values).unwrap_or_else(|e| panic!("lint {values}: {e}"));
            assert!(report.contains("0 chart(s) failed"), "{report}");
        }
    }
    let issuer = json!({ "certificates": { "mode": "cert-manager",
        "certManager": { "issuerRef": { "name": "corporate-ca", "kind": "ClusterIssuer" } } } });
    helm.lint(&issuer).unwrap();
}

#[test]
fn the_schema_and_the_chart_refuse_bad_values() {
    let helm = Helm::shared();
    let refused = [
        (json!({ "certificates": { "mode": "bogus" } }), "/certificates/mode"),
        (json!({ "replicas": "two" }), "/replicas"),
        (json!({ "image": { "digest": "latest" } }), "/image/digest"),
        (json!({ "failurePolicy": "Sometimes" }), "/failurePolicy"),
        (json!({ "onCopyFailure": "retry" }), "/onCopyFailure"),
        (json!({ "drainDelay": "five seconds" }), "/drainDelay"),
        (json!({ "catalogNamespaces": ["Not_A_Namespace"] }), "/catalogNamespaces/0"),
        (json!({ "includeNamespaces": ["kube-system"] }), "/includeNamespaces/0"),
        (json!({ "healpods": true }), "healpods"),
        (json!({ "operandOwnerRules": [{ "apiGroups": ["x"], "resources": ["y"] }] }), "verbs"),
        // Operand owners are read with `get` only, never Secrets or everything.
        (
            json!({ "operandOwnerRules": [{ "apiGroups": ["x"], "resources": ["y"], "verbs": ["list"] }] }),
            "/operandOwnerRules/0/verbs/0",
        ),
        (
            json!({ "operandOwnerRules": [{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["get"] }] }),
            "/operandOwnerRules/0/resources/0",
        ),
        (
            json!({ "operandOwnerRules": [{ "apiGroups": ["x"], "resources": ["*"], "verbs": ["get"] }] }),
            "/operandOwnerRules/0/resources/0",
        ),
        (
            json!({ "operandOwnerRules": [{ "apiGroups": ["*"], "resources": ["y"], "verbs": ["get"] }] }),
            "/operandOwnerRules/0/apiGroups/0",
        ),
        // Cross-checks the schema cannot express, done by the templates.
        (json!({ "deadline": "5s" }), "deadline (5s) must be below timeoutSeconds (5)"),
        (json!({ "preStopSleepSeconds": 20, "drainDelay": "10s" }), "must be below terminationGracePeriodSeconds"),
        (
            json!({ "certificates": { "mode": "cert-manager", "certManager": { "issuerRef": { "kind": "Issuer" } } } }),
            "issuerRef needs a name",
        ),
        // No silent downgrade: without the policy, the risk is stated or the chart refuses.
        (json!({ "admissionPolicy": { "enabled": false } }), "set admissionPolicy.acceptUnguardedSecretWrites=true"),
    ];
    for (values, expected) in refused {
        let error = helm.try_template("psi", NS, &values).expect_err(&format!("{values} must be refused"));
        assert!(error.contains(expected), "{values}: the error should name {expected:?}:\n{error}");
        // `helm lint` checks the schema; it reports a template's `fail` only as information.
        if expected.starts_with('/') || !expected.contains(' ') {
            assert!(helm.lint(&values).is_err(), "helm lint must refuse {values}");
        }
    }
    // Stated, the policy may go (and goes).
    let unguarded = helm.template(
        "psi",
        NS,
        &json!({ "admissionPolicy": { "enabled": false, "acceptUnguardedSecretWrites": true } }),
    );
    assert!(of_kind(&unguarded, "ValidatingAdmissionPolicy").is_empty());
    let operand = json!({ "operandOwnerRules": [{ "apiGroups": ["etcd.database.coreos.com"], "resources": ["etcdclusters"], "verbs": ["get"] }] });
    helm.template("psi", NS, &operand);
}

/// The chart's properties, checked on the default render (self-signed certificates).
#[test]
fn the_default_render_has_the_properties_of_the_design() {
    let objects = Helm::shared().template("psi", NS, &json!({}));
    let name = "psi-olm-pullsecret-injector";

    // The webhook configuration: Pods and ServiceAccounts asked, our copies' changes told.
    let config = find(&objects, "MutatingWebhookConfiguration", name);
    let hooks = config["webhooks"].as_array().unwrap();
    let reference = olm_pullsecret_injector::commands::dev::webhook_configuration(
        "reference",
        "https://x/mutate",
        "",
        "Ignore",
        NS,
    );
    let names: Vec<&str> = hooks.iter().map(|h| h["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["pods.pullsecret-injector.io", "serviceaccounts.pullsecret-injector.io", "copies.pullsecret-injector.io"]
    );
    for (hook, reference) in hooks.iter().zip(reference["webhooks"].as_array().unwrap()) {
        for field in [
            "name",
            "rules",
            "sideEffects",
            "admissionReviewVersions",
            "reinvocationPolicy",
            "timeoutSeconds",
            "objectSelector",
        ] {
            assert_eq!(hook[field], reference[field], "{field} of {}", hook["name"]);
        }
        assert_eq!(hook["sideEffects"], "NoneOnDryRun");
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(hook["failurePolicy"], "Ignore");
        let secrets = hook["name"] == "copies.pullsecret-injector.io";
        assert_eq!(hook["reinvocationPolicy"], if secrets { "Never" } else { "IfNeeded" });
        for rule in hook["rules"].as_array().unwrap() {
            let resources = rule["resources"].as_array().unwrap();
            assert!(!resources.iter().any(|r| r == "*" || r == "*/*"), "{rule}");
            assert_eq!(rule["apiGroups"], json!([""]));
            if resources.iter().any(|r| r == "secrets") {
                // Only changes to Secrets labelled as our copies, and never their creation (the
                // webhook creates copies while it answers).
                assert!(secrets, "{rule}");
                assert_eq!(rule["operations"], json!(["UPDATE", "DELETE"]));
                assert_eq!(
                    hook["objectSelector"]["matchLabels"]["app.kubernetes.io/managed-by"],
                    "olm-pullsecret-injector"
                );
            }
        }
        let service = &hook["clientConfig"]["service"];
        assert_eq!((service["name"].as_str(), service["namespace"].as_str()), (Some(name), Some(NS)));
        assert_eq!(service["path"], "/mutate");
        let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
        assert_eq!(excluded["operator"], "NotIn");
        for ns in [NS, "kube-system"] {
            assert!(excluded["values"].as_array().unwrap().iter().any(|v| v == ns), "{excluded}");
        }
        if secrets {
            continue; // our copies exist only where the other two webhooks put them
        }
        let conditions = hook["matchConditions"].as_array().unwrap();
        let expression = conditions[0]["expression"].as_str().unwrap();
        for needle in ["request.namespace", "\"kube-\"", "\"openshift-\"", "\"openshift-operators\""] {
            assert!(expression.contains(needle), "{expression}");
        }
    }

    // The Deployment: two replicas that survive a drain, locked down, probed on the admin port.
    let deployment = find(&objects, "Deployment", name);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(pod["serviceAccountName"], name);
    let c = container(&objects, name);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(c["resources"]["requests"]["cpu"].is_string() && c["resources"]["requests"]["memory"].is_string());
    assert_eq!(c["livenessProbe"]["httpGet"], json!({ "path": "/healthz", "port": "admin" }));
    assert_eq!(c["readinessProbe"]["httpGet"], json!({ "path": "/readyz", "port": "admin" }));
    let ports: Vec<(&str, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("https", 8443), ("admin", 8080)]);
    let pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"].as_i64().expect("a preStop sleep on 1.34+");
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap();
    let args = args(&objects, name);
    let drain: i64 =
        args.iter().find_map(|a| a.strip_prefix("--drain-delay=")?.strip_suffix('s')?.parse().ok()).unwrap();
    assert!(0 < pre_stop && pre_stop + drain < grace, "preStop {pre_stop}s + drain {drain}s < grace {grace}s");
    let env = c["env"].as_array().unwrap();
    let pod_namespace = env.iter().find(|e| e["name"] == "POD_NAMESPACE").expect("POD_NAMESPACE");
    assert_eq!(pod_namespace["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/webhook/certs");
    assert!(c["volumeMounts"][0].get("subPath").is_none(), "a subPath mount never sees a rotated certificate");
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], format!("{name}-tls"));
    for arg in ["--tls-cert-file=/etc/webhook/certs/tls.crt", "--tls-key-file=/etc/webhook/certs/tls.key"] {
        assert!(args.contains(&arg.to_string()), "{args:?}");
    }
    assert!(!args.contains(&"--heal-pods".to_string()));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        c["image"],
        format!("ghcr.io/olm-pullsecret-injector/olm-pullsecret-injector:{version}"),
        "the project's image; the tag defaults to the appVersion, which is the crate's version"
    );

    let pdb = find(&objects, "PodDisruptionBudget", name);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"], deployment["spec"]["selector"]);
    let service = find(&objects, "Service", name);
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "https");
    assert!(of_kind(&objects, "ServiceMonitor").is_empty());

    // RBAC: no heal-pods rule by default; the admission policy and its binding.
    assert!(objects.iter().all(|o| o["metadata"]["name"] != format!("{name}-heal-pods")));
    let policy = find(&objects, "ValidatingAdmissionPolicy", &format!("{name}-managed-secrets"));
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        format!(
            "request.userInfo.username in [\"system:serviceaccount:{NS}:{name}\",\"system:serviceaccount:{NS}:{name}-reconciler\"]"
        )
    );
    let binding = find(&objects, "ValidatingAdmissionPolicyBinding", &format!("{name}-managed-secrets"));
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
}

/// No ClusterRole the chart renders (with any values) may read Secrets: copies are found in the
/// ledger, sources are read through Roles in the catalog namespaces.
#[test]
fn no_cluster_role_reads_secrets() {
    let with_hook = json!({ "cleanupOnUninstall": true });
    for values in [json!({}), non_default_values(["catalogs-a", "catalogs-b"]), with_hook] {
        let objects = Helm::shared().template("psi", NS, &values);
        for role in of_kind(&objects, "ClusterRole") {
            for rule in role["rules"].as_array().into_iter().flatten() {
                let matches = |list: &str, wanted: &[&str]| {
                    rule[list].as_array().into_iter().flatten().any(|v| v == "*" || wanted.iter().any(|w| v == w))
                };
                let reads = matches("verbs", &["get", "list", "watch"]);
                let secrets = matches("resources", &["secrets"]) && matches("apiGroups", &[""]);
                assert!(!(reads && secrets), "{} reads secrets: {rule}", role["metadata"]["name"]);
            }
        }
    }
}

/// The chart's RBAC is files/rbac.yaml, rule for rule.
#[test]
fn rbac_objects_carry_exactly_the_rules_of_files_rbac_yaml() {
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(helm::chart_dir().join("files/rbac.yaml")).unwrap()).unwrap();
    let objects = Helm::shared().template("psi", NS, &non_default_values(["catalogs-a", "catalogs-b"]));
    let name = "psi-olm-pullsecret-injector";
    let reconciler = format!("{name}-reconciler");
    let webhook_subject = json!({ "kind": "ServiceAccount", "name": name, "namespace": NS });
    let reconciler_subject = json!({ "kind": "ServiceAccount", "name": reconciler, "namespace": NS });
    let rules = |own: &str| -> Value {
        let mut all = file["sharedClusterRules"].as_array().unwrap().clone();
        all.extend(file[own].as_array().unwrap().iter().cloned());
        Value::Array(all)
    };
    assert_eq!(find(&objects, "ClusterRole", name)["rules"], rules("webhookClusterRules"));
    assert_eq!(find(&objects, "ClusterRole", &reconciler)["rules"], rules("reconcilerClusterRules"));
    assert_eq!(find(&objects, "ClusterRole", &format!("{name}-heal-pods"))["rules"], file["healPodsRules"]);
    let own = find(&objects, "Role", &reconciler);
    assert_eq!((own["metadata"]["namespace"].as_str(), &own["rules"]), (Some(NS), &file["ownNamespaceRules"]));
    let sources: Vec<&Value> =
        of_kind(&objects, "Role").into_iter().filter(|r| r["metadata"]["name"] == format!("{name}-sources")).collect();
    let namespaces: Vec<&str> = sources.iter().map(|r| r["metadata"]["namespace"].as_str().unwrap()).collect();
    assert_eq!(namespaces, ["catalogs-a", "catalogs-b"]);
    assert!(sources.iter().all(|r| r["rules"] == file["catalogNamespaceRules"]));
    // Both binaries watch exactly the namespaces the Roles grant.
    for deployment in [name, reconciler.as_str()] {
        let args = args(&objects, deployment);
        assert!(args.contains(&"--global-catalog-namespace=catalogs-a".to_string()), "{args:?}");
        assert!(args.contains(&"--catalog-namespace=catalogs-b".to_string()), "{args:?}");
    }
    let label = file["operandOwnersAggregationLabel"].as_str().unwrap();
    let aggregated = find(&objects, "ClusterRole", &format!("{name}-operand-owners"));
    assert_eq!(aggregated["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"][label], "true");
    let operand_rules = find(&objects, "ClusterRole", &format!("{name}-operand-owner-rules"));
    assert_eq!(operand_rules["metadata"]["labels"][label], "true");
    assert_eq!(operand_rules["rules"][0]["resources"], json!(["etcdclusters"]));
    // Each binding names exactly the identities it is for, and nothing else.
    let bindings: Vec<&Value> =
        objects.iter().filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding").collect();
    assert_eq!(bindings.len(), 7, "webhook, reconciler, heal-pods, operand-owners, lease, two catalogs");
    for binding in bindings {
        let role = binding["roleRef"]["name"].as_str().unwrap();
        let expected = if role == name {
            json!([webhook_subject])
        } else if role.ends_with("-sources") || role.ends_with("-operand-owners") {
            json!([webhook_subject, reconciler_subject])
        } else {
            json!([reconciler_subject])
        };
        assert_eq!(binding["subjects"], expected, "{binding}");
    }
    // The chart runs the two identities apart, from the same image.
    let (webhook_pod, reconciler_pod) = (container(&objects, name), container(&objects, &reconciler));
    assert_eq!(webhook_pod["image"], reconciler_pod["image"]);
    assert!(args(&objects, name).contains(&"--role=webhook".to_string()));
    assert!(args(&objects, &reconciler).contains(&"--role=reconciler".to_string()));
    let account = |deployment: &str| {
        find(&objects, "Deployment", deployment)["spec"]["template"]["spec"]["serviceAccountName"].clone()
    };
    assert_eq!((account(name), account(&reconciler)), (json!(name), json!(reconciler)));
}

#[test]
fn non_default_values_reach_the_webhook_configuration_and_the_deployment() {
    let objects = Helm::shared().template("psi", NS, &non_default_values(["catalogs-a", "catalogs-b"]));
    let name = "psi-olm-pullsecret-injector";
    for hook in find(&objects, "MutatingWebhookConfiguration", name)["webhooks"].as_array().unwrap() {
        // The copies webhook is only told of changes: it never fails a tenant's request and
        // answers within 5 s.
        let told = hook["name"] == "copies.pullsecret-injector.io";
        assert_eq!(hook["failurePolicy"], if told { "Ignore" } else { "Fail" });
        assert_eq!(hook["timeoutSeconds"], if told { 5 } else { 10 });
        let excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"].as_array().unwrap();
        assert!(excluded.iter().any(|v| v == "legacy-apps"), "{excluded:?}");
        if let Some(condition) = hook["matchConditions"][0]["expression"].as_str() {
            assert!(condition.contains(r#"request.namespace in ["openshift-gitops"]"#), "{condition}");
        }
    }
    let policy = find(&objects, "ValidatingAdmissionPolicy", &format!("{name}-service-accounts"));
    assert!(policy["spec"]["validations"][1]["expression"].as_str().unwrap().contains("openshift-gitops"));
    let webhook_args = args(&objects, name);
    for arg in [
        "--exclude-namespace=legacy-apps",
        "--include-namespace=openshift-gitops",
        "--on-copy-failure=allow",
        "--deadline=8s",
        "--log-format=text",
    ] {
        assert!(webhook_args.contains(&arg.to_string()), "{arg} missing from {webhook_args:?}");
    }
    let reconciler_args = args(&objects, &format!("{name}-reconciler"));
    for arg in [
        "--heal-pods",
        "--exclude-namespace=legacy-apps",
        "--cleanup-grace=30m",
        "--log-format=text",
        &format!("--lease-name={name}"),
    ] {
        assert!(reconciler_args.contains(&arg.to_string()), "{arg} missing from {reconciler_args:?}");
    }
    let deployment = find(&objects, "Deployment", name);
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["template"]["spec"]["imagePullSecrets"], json!([{ "name": "registry-login" }]));
    assert_eq!(container(&objects, name)["image"], format!("registry.example.com/psi:1.2.3@{DIGEST}"));
    let monitor = find(&objects, "ServiceMonitor", name);
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let service = find(&objects, "Service", name);
    assert!(service["spec"]["ports"].as_array().unwrap().iter().any(|p| p["name"] == "metrics"));
}

/// The Deployment's arguments are ones the binary accepts: it gets past parsing and fails only
/// when it looks for a cluster.
#[test]
fn the_rendered_arguments_parse_with_the_real_binary() {
    let objects = Helm::shared().template("psi", NS, &non_default_values(["catalogs-a", "catalogs-b"]));
    for deployment in ["psi-olm-pullsecret-injector", "psi-olm-pullsecret-injector-reconciler"] {
        the_binary_takes(&args(&objects, deployment));
    }
}

/// The binary parses `args` and fails only for want of a cluster.
fn the_binary_takes(args: &[String]) {
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_olm-pullsecret-injector"))
        .args(args)
        .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
        .env("HOME", home.path())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_ne!(output.status.code(), Some(2), "clap refused the chart's arguments {args:?}:\n{stderr}");
    assert!(!output.status.success());
    let out = format!("{}{stderr}", String::from_utf8_lossy(&output.stdout));
    assert!(out.contains("Kubernetes API") || out.contains("kubeconfig"), "{out}");
}

#[test]
fn the_pre_stop_sleep_needs_kubernetes_1_34() {
    let objects = Helm::shared().try_template_for("psi", NS, &json!({}), "1.31.0").unwrap();
    assert!(container(&objects, "psi-olm-pullsecret-injector").get("lifecycle").is_none());
    let refused = Helm::shared().try_template_for("psi", NS, &json!({}), "1.29.0").unwrap_err();
    assert!(refused.contains("kubeVersion"), "{refused}");
}

#[test]
fn self_signed_mode_generates_a_ca_and_a_serving_pair_for_the_service() {
    let objects = Helm::shared().template("psi", NS, &json!({ "certificates": { "mode": "self-signed" } }));
    let name = "psi-olm-pullsecret-injector";
    let secret = find(&objects, "Secret", &format!("{name}-tls"));
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let data = |key: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(secret["data"][key].as_str().unwrap()).unwrap()
    };
    let config = find(&objects, "MutatingWebhookConfiguration", name);
    assert!(config["metadata"].get("annotations").is_none());
    for hook in config["webhooks"].as_array().unwrap() {
        assert_eq!(hook["clientConfig"]["caBundle"], secret["data"]["ca.crt"], "the caBundle is the Secret's CA");
    }
    // The serving certificate verifies against that CA for every name the API server may use.
    let ca = rustls_pemfile::certs(&mut data("ca.crt").as_slice()).next().unwrap().unwrap();
    let cert = rustls_pemfile::certs(&mut data("tls.crt").as_slice()).next().unwrap().unwrap();
    assert!(rustls_pemfile::private_key(&mut data("tls.key").as_slice()).unwrap().is_some());
    use rustls::client::danger::ServerCertVerifier;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
    for host in [format!("{name}.{NS}.svc"), format!("{name}.{NS}.svc.cluster.local")] {
        let server_name = rustls::pki_types::ServerName::try_from(host.clone()).unwrap();
        verifier
            .verify_server_cert(&cert, &[], &server_name, &[], rustls::pki_types::UnixTime::now())
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    assert!(of_kind(&objects, "Certificate").is_empty() && of_kind(&objects, "Issuer").is_empty());
}

#[test]
fn cert_manager_mode_issues_the_serving_certificate_and_injects_its_ca() {
    let helm = Helm::shared();
    let name = "psi-olm-pullsecret-injector";
    let objects = helm.template("psi", NS, &json!({ "certificates": { "mode": "cert-manager" } }));
    let serving = find(&objects, "Certificate", &format!("{name}-serving"));
    assert_eq!(serving["spec"]["secretName"], format!("{name}-tls"));
    assert_eq!(serving["spec"]["issuerRef"]["name"], format!("{name}-ca"));
    let dns: Vec<&str> = serving["spec"]["dnsNames"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert!(dns.contains(&format!("{name}.{NS}.svc").as_str()), "{dns:?}");
    assert_eq!(find(&objects, "Certificate", &format!("{name}-ca"))["spec"]["isCA"], true);
    assert_eq!(find(&objects, "Issuer", &format!("{name}-ca"))["spec"]["ca"]["secretName"], format!("{name}-ca"));
    assert!(find(&objects, "Issuer", &format!("{name}-selfsigned"))["spec"]["selfSigned"].is_object());
    let config = find(&objects, "MutatingWebhookConfiguration", name);
    assert_eq!(config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"], format!("{NS}/{name}-serving"));
    assert!(config["webhooks"].as_array().unwrap().iter().all(|h| h["clientConfig"].get("caBundle").is_none()));
    assert!(of_kind(&objects, "Secret").is_empty(), "cert-manager writes the Secret");

    let objects = helm.template(
        "psi",
        NS,
        &json!({ "certificates": { "mode": "cert-manager",
            "certManager": { "issuerRef": { "name": "corporate-ca", "kind": "ClusterIssuer" } } } }),
    );
    assert_eq!(of_kind(&objects, "Certificate").len(), 1);
    assert!(of_kind(&objects, "Issuer").is_empty());
    let issuer = &find(&objects, "Certificate", &format!("{name}-serving"))["spec"]["issuerRef"];
    assert_eq!(issuer, &json!({ "name": "corporate-ca", "kind": "ClusterIssuer", "group": "cert-manager.io" }));
}

#[test]
fn openshift_mode_asks_the_service_ca_for_the_pair_and_the_ca_bundle() {
    let objects = Helm::shared().template("psi", NS, &json!({ "certificates": { "mode": "openshift" } }));
    let name = "psi-olm-pullsecret-injector";
    let service = find(&objects, "Service", name);
    let secret_name =
        &find(&objects, "Deployment", name)["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"];
    assert_eq!(&service["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"], secret_name);
    let config = find(&objects, "MutatingWebhookConfiguration", name);
    assert_eq!(config["metadata"]["annotations"]["service.beta.openshift.io/inject-cabundle"], "true");
    assert!(config["webhooks"].as_array().unwrap().iter().all(|h| h["clientConfig"].get("caBundle").is_none()));
    assert!(of_kind(&objects, "Secret").is_empty() && of_kind(&objects, "Certificate").is_empty());
}

/// Renders the chart with `mode` and the non-default values into a namespace of its own and
/// applies every object. The namespace enforces the `restricted` Pod Security Standard, so the
/// Deployment's Pods exist only if the pod template passes it.
async fn apply_render(mode: &str) {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    helm::install_foreign_crds(&client).await;
    let ns = unique_name("chart");
    let release = format!("psi-{}", mode.replace('-', ""));
    let catalogs = [unique_name("catalogs"), unique_name("catalogs")];
    helm::apply(
        &client,
        &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns,
        "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } }),
        false,
    )
    .await
    .unwrap();
    for catalog in &catalogs {
        create_namespace_if_missing(&client, catalog).await;
    }
    let objects =
        Helm::shared().template(&release, &ns, &with_mode(non_default_values([&catalogs[0], &catalogs[1]]), mode));
    let mut kinds = std::collections::BTreeSet::new();
    for object in &objects {
        let kind = object["kind"].as_str().unwrap();
        kinds.insert(kind.to_string());
        // The webhook configuration is only validated (dry run): stored, it would send the API
        // server to a Service with no endpoints (and Fail would refuse Pods in other tests).
        let dry_run = kind == "MutatingWebhookConfiguration";
        // CRD endpoints appear shortly after the CRD: retry discovery for a few seconds.
        eventually(&format!("{kind} accepted"), std::time::Duration::from_secs(20), || async {
            match helm::apply(&client, object, dry_run).await {
                Ok(_) => Some(()),
                Err(e) if e.contains("discovery") => None,
                Err(e) => panic!("the API server refused the chart ({mode}): {e}"),
            }
        })
        .await;
    }
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "ServiceMonitor",
    ] {
        assert!(kinds.contains(kind), "{kind} not rendered in mode {mode}: {kinds:?}");
    }
    match mode {
        "self-signed" => assert!(kinds.contains("Secret")),
        "cert-manager" => assert!(kinds.contains("Certificate") && kinds.contains("Issuer")),
        _ => assert!(!kinds.contains("Secret") && !kinds.contains("Certificate")),
    }

    // The controller-manager makes the Deployment's Pods; restricted admission lets them in.
    let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns);
    let replica_sets = kube::Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(client.clone(), &ns);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while pods.list(&Default::default()).await.unwrap().items.len() < 3 {
        if std::time::Instant::now() > deadline {
            let rs = replica_sets.list(&Default::default()).await.unwrap();
            let conditions: Vec<_> =
                rs.items.iter().flat_map(|r| r.status.iter().flat_map(|s| s.conditions.iter().flatten())).collect();
            panic!("the chart's Deployment did not get its 3 Pods in {ns} ({mode}): {conditions:#?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn self_signed_render_is_accepted_by_the_api_server() {
    apply_render("self-signed").await;
}

#[tokio::test]
async fn cert_manager_render_is_accepted_by_the_api_server() {
    apply_render("cert-manager").await;
}

#[tokio::test]
async fn openshift_render_is_accepted_by_the_api_server() {
    apply_render("openshift").await;
}

/// `helm upgrade` in self-signed mode keeps the pair the install generated: with the Secret in
/// the cluster, a render that can look it up (`--dry-run=server`) reuses it and its CA.
#[tokio::test]
async fn self_signed_pair_is_kept_when_the_secret_exists() {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    let helm = Helm::shared();
    let ns = unique_name("chart-upgrade");
    create_namespace_if_missing(&client, &ns).await;
    let name = "psi-olm-pullsecret-injector";
    let secret_of = |objects: &[Value]| find(objects, "Secret", &format!("{name}-tls")).clone();
    let ca_bundles = |objects: &[Value]| -> Vec<Value> {
        let config = find(objects, "MutatingWebhookConfiguration", name);
        config["webhooks"].as_array().unwrap().iter().map(|h| h["clientConfig"]["caBundle"].clone()).collect()
    };

    // Nothing in the cluster yet: a fresh pair, different on every render.
    let first = helm.template_against_cluster(&cp.kubeconfig(), "psi", &ns, &json!({}));
    let installed = secret_of(&first);
    let again = helm.template("psi", &ns, &json!({}));
    assert!(secret_of(&again)["data"] != installed["data"], "an offline render generates a new pair");

    // Installed: every later render keeps the Secret's pair and CA.
    helm::apply(&client, &installed, false).await.unwrap();
    let upgraded = helm.template_against_cluster(&cp.kubeconfig(), "psi", &ns, &json!({ "replicas": 3 }));
    assert!(secret_of(&upgraded)["data"] == installed["data"], "the pair is kept");
    assert_eq!(ca_bundles(&upgraded), vec![installed["data"]["ca.crt"].clone(); 3], "the caBundle is the kept CA");
    assert_eq!(find(&upgraded, "Deployment", name)["spec"]["replicas"], 3);
}

/// `dev` registers the configuration the chart renders: every field of every webhook equal,
/// except `clientConfig` (a URL to the local process instead of the chart's Service).
#[test]
fn dev_registers_the_charts_webhook_configuration() {
    let objects = Helm::shared().template("psi", NS, &json!({ "failurePolicy": "Fail" }));
    let chart = find(&objects, "MutatingWebhookConfiguration", "psi-olm-pullsecret-injector");
    let dev = olm_pullsecret_injector::commands::dev::webhook_configuration(
        "psi",
        "https://127.0.0.1:1/mutate",
        "ca",
        "Fail",
        NS,
    );
    let (chart_hooks, dev_hooks) = (chart["webhooks"].as_array().unwrap(), dev["webhooks"].as_array().unwrap());
    assert_eq!(chart_hooks.len(), dev_hooks.len());
    for (chart_hook, dev_hook) in chart_hooks.iter().zip(dev_hooks) {
        let fields = |hook: &Value| -> Vec<String> {
            let mut keys: Vec<String> = hook.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(fields(chart_hook), fields(dev_hook), "the same fields in {}", chart_hook["name"]);
        for field in fields(chart_hook).iter().filter(|f| *f != "clientConfig") {
            assert_eq!(chart_hook[field], dev_hook[field], "{field} of {}", chart_hook["name"]);
        }
        assert_eq!(dev_hook["clientConfig"]["url"], "https://127.0.0.1:1/mutate");
    }
}

/// The front door in the chart: with a client CA the binary verifies the API server's certificate
/// from the mounted ConfigMap; the NetworkPolicy opens only the webhook port (to the API server's
/// ranges when given) and the admin port (to the metrics namespaces).
#[test]
fn the_client_ca_and_the_network_policy_render() {
    let name = "psi-olm-pullsecret-injector";
    let objects = Helm::shared().template("psi", NS, &non_default_values(["catalogs-a", "catalogs-b"]));
    assert!(args(&objects, name).contains(&"--client-ca-file=/etc/webhook/client-ca/ca.crt".to_string()));
    assert!(args(&objects, name).contains(&"--client-name=kube-apiserver.example".to_string()));
    let pod = &find(&objects, "Deployment", name)["spec"]["template"]["spec"];
    assert!(pod["volumes"].as_array().unwrap().iter().any(|v| v["configMap"]["name"] == "apiserver-client-ca"));
    let policy = find(&objects, "NetworkPolicy", name);
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 2);
    assert_eq!(ingress[0]["ports"], json!([{ "port": 8443, "protocol": "TCP" }]));
    assert_eq!(ingress[0]["from"], json!([{ "ipBlock": { "cidr": "10.0.0.0/24" } }]));
    assert_eq!(ingress[1]["ports"], json!([{ "port": 8080, "protocol": "TCP" }]));
    assert_eq!(ingress[1]["from"], json!([{ "namespaceSelector": { "matchLabels": { "name": "monitoring" } } }]));

    // Defaults: no client CA; the policy is on, the webhook port open to any source.
    let objects = Helm::shared().template("psi", NS, &json!({}));
    assert!(!args(&objects, name).iter().any(|a| a.starts_with("--client-ca-file") || a.starts_with("--client-name")));
    let ingress = find(&objects, "NetworkPolicy", name)["spec"]["ingress"].clone();
    assert!(ingress[0].get("from").is_none(), "{ingress}");
    // The admin port: the monitoring namespaces by name, not every namespace.
    let monitoring = json!([{ "namespaceSelector": { "matchExpressions": [{ "key": "kubernetes.io/metadata.name",
        "operator": "In", "values": ["openshift-monitoring", "monitoring"] }] } }]);
    assert_eq!(ingress[1]["from"], monitoring);
}

/// Without a client CA the install says so, and whether the NetworkPolicy narrows who may call.
#[test]
fn the_install_notes_warn_without_a_client_ca() {
    let (helm, kubeconfig) = (Helm::shared(), ControlPlane::shared().kubeconfig());
    let open = helm.notes(&kubeconfig, &json!({}));
    assert!(open.contains("WARNING: no client CA"), "{open}");
    assert!(open.contains("open to every source"), "{open}");
    let narrowed = helm.notes(&kubeconfig, &json!({ "networkPolicy": { "apiServerCIDRs": ["10.0.0.0/24"] } }));
    assert!(narrowed.contains("WARNING: no client CA") && narrowed.contains("through the NetworkPolicy"), "{narrowed}");
    let verified = helm.notes(&kubeconfig, &json!({ "clientCA": { "configMapName": "apiserver-client-ca" } }));
    assert!(!verified.contains("WARNING"), "{verified}");
}

/// `certificates.mode: auto` (the default) is the OpenShift service CA where the cluster serves
/// OpenShift's config API, and a self-signed pair elsewhere (and offline).
#[test]
fn auto_certificates_follow_the_cluster() {
    let name = "psi-olm-pullsecret-injector";
    let offline = Helm::shared().template("psi", NS, &json!({}));
    assert!(of_kind(&offline, "Secret").iter().any(|s| s["metadata"]["name"] == format!("{name}-tls")));
    let openshift = Helm::shared().template_serving("psi", NS, &json!({}), &["config.openshift.io/v1"]);
    assert!(of_kind(&openshift, "Secret").is_empty(), "the service CA writes the pair");
    let service = find(&openshift, "Service", name);
    assert_eq!(
        service["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"],
        format!("{name}-tls")
    );
    let config = find(&openshift, "MutatingWebhookConfiguration", name);
    assert_eq!(config["metadata"]["annotations"]["service.beta.openshift.io/inject-cabundle"], "true");
}

/// The alerts pass promtool (built from its Go module in tests/promtool), and every metric of
/// ours that the alerts and the dashboard read is one the binary exports.
#[test]
fn alerts_pass_promtool_and_read_only_metrics_the_binary_exports() {
    let values = json!({ "prometheusRule": { "enabled": true }, "grafanaDashboard": { "enabled": true } });
    let objects = Helm::shared().template("psi", NS, &values);
    let name = "psi-olm-pullsecret-injector";
    let rule = find(&objects, "PrometheusRule", name);
    let rules_file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    serde_json::to_writer(&rules_file, &json!({ "groups": rule["spec"]["groups"] })).unwrap();
    let promtool = support::gotool::build("promtool", "github.com/prometheus/prometheus/cmd/promtool", "").unwrap();
    let output = std::process::Command::new(promtool).args(["check", "rules"]).arg(rules_file.path()).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool refused the rules:\n{said}");
    assert!(said.contains("5 rules found"), "{said}");

    let dashboard = find(&objects, "ConfigMap", &format!("{name}-dashboard"));
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard = dashboard["data"]["olm-pullsecret-injector.json"].as_str().unwrap();
    let panels: Value = serde_json::from_str(dashboard).expect("the dashboard is JSON");
    assert!(panels["panels"].as_array().unwrap().len() >= 6);

    // What the binary registers: `# TYPE <name> <type>`; samples add _total, _bucket, _sum, _count.
    // A family labelled by what happens shows once something did: one forbidden lookup.
    olm_pullsecret_injector::telemetry::metrics::owner_lookup_forbidden("widgets.example.com");
    let exported: Vec<String> = olm_pullsecret_injector::telemetry::metrics::encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_whitespace().next().map(str::to_string))
        .collect();
    let text = format!("{}{dashboard}", serde_json::to_string(&rule["spec"]).unwrap());
    let mut read = 0;
    for start in text.match_indices("pullsecret_injector_").map(|(i, _)| i) {
        let metric: String =
            text[start..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit()).collect();
        let base =
            ["_total", "_bucket", "_sum", "_count"].iter().fold(metric.as_str(), |m, s| m.strip_suffix(s).unwrap_or(m));
        assert!(exported.iter().any(|e| e == base), "{metric} is not exported; the binary has {exported:?}");
        read += 1;
    }
    assert!(read >= 10, "the alerts and the dashboard read our metrics ({read} uses)");
}

/// The chart's README lists every value of values.yaml with its default, and nothing else.
#[test]
fn the_chart_readme_lists_every_value_with_its_default() {
    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(helm::chart_dir().join("values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(helm::chart_dir().join("README.md")).unwrap();
    fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
        match value.as_object() {
            Some(map) if !map.is_empty() => {
                for (key, child) in map {
                    let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    leaves(&path, child, out);
                }
            }
            _ => out.push((prefix.to_string(), value.to_string())),
        }
    }
    let mut expected = Vec::new();
    leaves("", &values, &mut expected);
    for (path, default) in &expected {
        assert!(
            readme.contains(&format!("| `{path}` | `{default}` |")),
            "{path} (default {default}) is not in the table"
        );
    }
    let rows = readme.lines().filter(|l| l.starts_with("| `")).count();
    assert_eq!(rows, expected.len(), "the table has rows for values that do not exist");
}

/// The chart is released with the crate: the same version, license and home, and a changelog
/// entry for that version.
#[test]
fn the_chart_is_released_with_the_crate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let chart: Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("charts/olm-pullsecret-injector/Chart.yaml")).unwrap())
            .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!((&chart["version"], &chart["appVersion"]), (&json!(version), &json!(version)));
    assert_eq!(chart["home"], env!("CARGO_PKG_REPOSITORY"));
    assert_eq!(chart["sources"], json!([env!("CARGO_PKG_REPOSITORY")]));
    assert_eq!(chart["annotations"]["artifacthub.io/license"], env!("CARGO_PKG_LICENSE"));
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    assert!(changelog.lines().any(|l| l.starts_with(&format!("## {version} "))), "CHANGELOG.md has {version}");
}

/// `cleanupOnUninstall`: a post-delete hook Job runs `cleanup` from the chart's image as an
/// identity of its own (files/rbac.yaml's cleanupClusterRules), every object of it a hook. All
/// but the Job run before it (weight -1) with `hook-succeeded`: Helm deletes them once the Job
/// has succeeded, and also when it failed (execHook deletes the hooks that succeeded before a
/// failed one), so only a failed Job stays, for its logs. Off by default.
#[test]
fn cleanup_on_uninstall_is_a_post_delete_hook_with_an_identity_of_its_own() {
    let file: Value =
        serde_yaml::from_str(&std::fs::read_to_string(helm::chart_dir().join("files/rbac.yaml")).unwrap()).unwrap();
    let name = "psi-olm-pullsecret-injector-cleanup";
    let helm = Helm::shared();
    let hooks = |objects: &[Value]| -> Vec<Value> {
        objects.iter().filter(|o| o["metadata"]["annotations"]["helm.sh/hook"].is_string()).cloned().collect()
    };
    assert!(hooks(&helm.template("psi", NS, &json!({}))).is_empty(), "opt-in");

    let objects = helm.template("psi", NS, &json!({ "cleanupOnUninstall": true }));
    let hooks = hooks(&objects);
    let mut kinds: Vec<&str> = hooks.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Job",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding"
        ]
    );
    for hook in &hooks {
        let annotations = &hook["metadata"]["annotations"];
        assert_eq!(annotations["helm.sh/hook"], "post-delete", "after the webhook and reconciler are gone");
        assert_eq!(annotations["helm.sh/hook-delete-policy"], "before-hook-creation,hook-succeeded");
        let weight = if hook["kind"] == "Job" { "0" } else { "-1" };
        assert_eq!(annotations["helm.sh/hook-weight"], weight, "everything else exists before the Job");
        assert!(hook["metadata"]["name"].as_str().unwrap().starts_with(name));
    }
    // The release's admission policies are gone when the hook runs: the hook brings the same two
    // for its own identity.
    for policy in ["managed-secrets", "service-accounts"] {
        let release = find(&objects, "ValidatingAdmissionPolicy", &format!("psi-olm-pullsecret-injector-{policy}"));
        let hook = find(&hooks, "ValidatingAdmissionPolicy", &format!("{name}-{policy}"));
        let users = json!(format!("request.userInfo.username in [\"system:serviceaccount:{NS}:{name}\"]"));
        assert_eq!(hook["spec"]["matchConditions"][0]["expression"], users);
        assert_eq!(hook["spec"]["validations"], release["spec"]["validations"]);
        assert_eq!(hook["spec"]["variables"], release["spec"]["variables"]);
        let binding = find(&hooks, "ValidatingAdmissionPolicyBinding", &format!("{name}-{policy}"));
        assert_eq!(binding["spec"]["policyName"], format!("{name}-{policy}"));
    }
    assert_eq!(find(&hooks, "ClusterRole", name)["rules"], file["cleanupClusterRules"]);
    let binding = find(&hooks, "ClusterRoleBinding", name);
    assert_eq!(binding["subjects"], json!([{ "kind": "ServiceAccount", "name": name, "namespace": NS }]));
    let job = find(&hooks, "Job", name);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], name);
    let container = &pod["containers"][0];
    assert_eq!(container["args"], json!(["cleanup"]));
    let deployment = find(&objects, "Deployment", "psi-olm-pullsecret-injector");
    assert_eq!(container["image"], deployment["spec"]["template"]["spec"]["containers"][0]["image"]);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
}
