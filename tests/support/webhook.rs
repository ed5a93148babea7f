//! The webhook under test: the real binary, serving TLS on loopback, authenticated as its own
//! service account with exactly the RBAC of the chart (charts/.../files/rbac.yaml), registered
//! through a real MutatingWebhookConfiguration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::ControlPlane;

pub const NAMESPACE: &str = "olm-pullsecret-injector";
pub const SERVICE_ACCOUNT: &str = "olm-pullsecret-injector";
const CONFIG_NAME: &str = "olm-pullsecret-injector-e2e";

pub struct WebhookProcess {
    pub dir: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub ca_pem: String,
    child: Mutex<Child>,
}

static SHARED: tokio::sync::OnceCell<WebhookProcess> = tokio::sync::OnceCell::const_new();

#[derive(serde::Deserialize)]
struct RbacFile {
    #[serde(rename = "clusterRules")]
    cluster_rules: Vec<PolicyRule>,
    #[serde(rename = "catalogNamespaceRules")]
    catalog_namespace_rules: Vec<PolicyRule>,
    #[serde(rename = "ownNamespaceRules")]
    own_namespace_rules: Vec<PolicyRule>,
    #[serde(rename = "healPodsRules")]
    heal_pods_rules: Vec<PolicyRule>,
    #[serde(rename = "operandOwnersAggregationLabel")]
    operand_owners_label: String,
}

fn rbac() -> RbacFile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/olm-pullsecret-injector/files/rbac.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn apply<K>(api: &Api<K>, name: &str, value: serde_json::Value) -> impl Future<Output = K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let api = api.clone();
    let name = name.to_string();
    async move {
        let params = PatchParams::apply("e2e").force();
        api.patch(&name, &params, &Patch::Apply(value)).await.unwrap_or_else(|e| panic!("apply {name}: {e}"))
    }
}

/// Grants the chart's cluster-wide rules to the webhook's service account.
async fn grant_cluster_rbac(client: &kube::Client) {
    let rbac = rbac();
    apply(
        &Api::<Namespace>::all(client.clone()),
        NAMESPACE,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
    )
    .await;
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE);
    apply(&sas, SERVICE_ACCOUNT, json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}})).await;
    let roles = Api::<ClusterRole>::all(client.clone());
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    apply(
        &roles,
        "olm-pullsecret-injector",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "olm-pullsecret-injector"}, "rules": rbac.cluster_rules}),
    )
    .await;
    apply(
        &roles,
        "olm-pullsecret-injector-operand-owners",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "olm-pullsecret-injector-operand-owners"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {rbac.operand_owners_label.clone(): "true"}}]}}),
    )
    .await;
    for role in ["olm-pullsecret-injector", "olm-pullsecret-injector-operand-owners"] {
        apply(
            &bindings,
            role,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": role},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]}),
        )
        .await;
    }
    grant_namespace_role(client, NAMESPACE, "olm-pullsecret-injector", rbac.own_namespace_rules).await;
}

/// What the chart adds with `healPods: true`: deleting pods that lack their secrets.
pub async fn grant_heal_pods(client: &kube::Client) {
    let name = "olm-pullsecret-injector-heal-pods";
    apply(
        &Api::<ClusterRole>::all(client.clone()),
        name,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name}, "rules": rbac().heal_pods_rules}),
    )
    .await;
    apply(
        &Api::<ClusterRoleBinding>::all(client.clone()),
        name,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]}),
    )
    .await;
}

/// What the chart renders for each entry of `catalogNamespaces`: read access to its secrets.
pub async fn grant_catalog_namespace(client: &kube::Client, namespace: &str) {
    grant_namespace_role(client, namespace, "olm-pullsecret-injector-sources", rbac().catalog_namespace_rules).await;
}

/// A Role with `rules` in `namespace`, bound to the webhook's service account.
async fn grant_namespace_role(client: &kube::Client, namespace: &str, name: &str, rules: Vec<PolicyRule>) {
    apply(&Api::<Role>::namespaced(client.clone(), namespace), name, json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": namespace}, "rules": rules})).await;
    apply(
        &Api::<RoleBinding>::namespaced(client.clone(), namespace),
        name,
        json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}]}),
    )
    .await;
}

/// What an administrator adds for an operator whose operands are custom resources: `get` on
/// them, aggregated into the webhook's operand-owners role.
pub async fn grant_operand_owner_read(client: &kube::Client, group: &str, plural: &str) {
    let rbac = rbac();
    let name = format!("olm-pullsecret-injector-read-{plural}.{group}");
    apply(
        &Api::<ClusterRole>::all(client.clone()),
        &name,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {rbac.operand_owners_label: "true"}},
        "rules": [{"apiGroups": [group], "resources": [plural], "verbs": ["get"]}]}),
    )
    .await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl WebhookProcess {
    /// Starts the webhook once per test binary and registers it for Pods and ServiceAccounts.
    pub async fn shared() -> &'static WebhookProcess {
        SHARED
            .get_or_init(|| async {
                let cp = ControlPlane::shared();
                let admin = cp.admin().await;
                grant_cluster_rbac(&admin).await;
                let process = start(cp, "webhook", &["--drain-delay", "0s"]);
                register(&admin, &process).await;
                process
            })
            .await
    }

    /// Everything the webhook logged so far (JSON lines).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("webhook.log")).unwrap_or_default()
    }

    /// The decision log lines for one namespace.
    pub fn decisions(&self, namespace: &str) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "admission decision" && v["namespace"] == namespace)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().try_wait().unwrap().is_none()
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.lock().unwrap().id() as i32;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// The exit status, once the process has exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child.lock().unwrap().try_wait().unwrap()
    }
}

/// Starts a webhook process (as the chart's service account) and waits until it is ready.
/// `name` names its directory; the shared one is registered, others are not.
pub fn start(cp: &ControlPlane, name: &str, extra_args: &[&str]) -> WebhookProcess {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let certs = olm_pullsecret_injector::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()]).unwrap();
    olm_pullsecret_injector::certs::write(&dir, &certs).unwrap();

    let kubeconfig = dir.join("kubeconfig");
    cp.write_impersonating_kubeconfig(NAMESPACE, SERVICE_ACCOUNT, &kubeconfig);
    let (port, admin_port) = (free_port(), free_port());
    let log = std::fs::File::create(dir.join("webhook.log")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_olm-pullsecret-injector"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .arg("--tls-cert-file")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.join("tls.key"))
        .args(["--namespace", NAMESPACE])
        .args(extra_args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,olm_pullsecret_injector=debug")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = spawn_tied_to_this_process(command);

    let started = Instant::now();
    let ready_url = format!("127.0.0.1:{admin_port}");
    loop {
        if http_get_status(&ready_url, "/readyz") == Some(200) {
            break;
        }
        let log = std::fs::read_to_string(dir.join("webhook.log")).unwrap_or_default();
        assert!(started.elapsed() < Duration::from_secs(60), "webhook not ready after 60s:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    WebhookProcess { dir, port, admin_port, ca_pem: certs.ca_pem, child: Mutex::new(child) }
}

/// Spawns the child from a thread that lives as long as the test binary, with the kernel told to
/// kill the child when that thread (so the binary) goes away: no webhook outlives its tests.
pub fn spawn_tied_to_this_process(mut command: Command) -> Child {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        tx.send(command.spawn().expect("spawn the webhook")).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

/// A tiny blocking HTTP/1.1 GET for the admin port.
pub fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    http_get(addr, path).map(|(status, _)| status)
}

pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// The MutatingWebhookConfiguration, as the chart will render it, pointed at the local process.
/// `failurePolicy: Fail` so that a webhook error fails the test rather than hiding.
async fn register(client: &kube::Client, webhook: &WebhookProcess) {
    register_with(client, webhook, "Fail").await
}

/// Registers (or re-points) the configuration at `webhook` with the given failure policy, and
/// waits until the API server calls it.
pub async fn register_with(client: &kube::Client, webhook: &WebhookProcess, failure_policy: &str) {
    let config = olm_pullsecret_injector::dev::webhook_configuration(
        CONFIG_NAME,
        &webhook.url("/mutate"),
        &webhook.ca_pem,
        failure_policy,
        NAMESPACE,
    );
    apply(&Api::<MutatingWebhookConfiguration>::all(client.clone()), CONFIG_NAME, config).await;

    // The API server loads configurations asynchronously: wait until a dry-run Pod reaches us.
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pod = serde_json::from_value(json!({"metadata": {"generateName": "registration-probe-"},
            "spec": {"containers": [{"name": "c", "image": "registry.example/probe:1"}]}}))
        .unwrap();
        let _ = pods.create(&kube::api::PostParams { dry_run: true, ..Default::default() }, &pod).await;
        if webhook.logs().contains("\"namespace\":\"default\"") {
            return;
        }
        assert!(Instant::now() < deadline, "the API server never called the webhook:\n{}", webhook.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

impl WebhookProcess {
    /// POSTs `body` to the webhook over TLS (trusting its CA) and returns the status and JSON body.
    pub async fn post(&self, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls_pemfile::certs(&mut self.ca_pem.as_bytes()).next().unwrap().unwrap();
        roots.add(ca).unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        let server_name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let mut tls = connector.connect(server_name, tcp).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        // A server may answer (and close) before it has read a huge body: that is fine.
        let _ = tls.write_all(body).await;
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response).await;
        let text = String::from_utf8_lossy(&response);
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
    }
}

/// Removes the configuration: the API server stops calling any webhook process.
pub async fn unregister(client: &kube::Client) {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let _ = api.delete(CONFIG_NAME, &Default::default()).await;
}
