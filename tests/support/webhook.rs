//! The webhook under test: the real binary, as the chart runs it: a webhook process serving TLS on
//! loopback and a reconciler process, each authenticated as its own service account of the chart
//! with exactly the RBAC objects (and the ValidatingAdmissionPolicy) that the chart renders,
//! registered through the chart's MutatingWebhookConfiguration pointed at the webhook.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::Api;
use serde_json::{Value, json};

use super::ControlPlane;
use super::helm::{self, Helm};
use super::olm::{GLOBAL_CATALOGS, SELF_HOSTED_CATALOGS};

/// The release namespace; the release is named like the chart, so its objects are named
/// `olm-pullsecret-injector` (and `olm-pullsecret-injector-*`).
pub const NAMESPACE: &str = "olm-pullsecret-injector";
pub const RELEASE: &str = "olm-pullsecret-injector";
pub const SERVICE_ACCOUNT: &str = "olm-pullsecret-injector";
pub const RECONCILER_SERVICE_ACCOUNT: &str = "olm-pullsecret-injector-reconciler";
const CONFIG_NAME: &str = "olm-pullsecret-injector";

/// The two processes of one replica of the chart: `serve --role webhook` and `serve --role
/// reconciler`, logging into one file.
pub struct WebhookProcess {
    pub dir: PathBuf,
    pub port: u16,
    /// The webhook's admin port.
    pub admin_port: u16,
    pub reconciler_admin_port: u16,
    pub ca_pem: String,
    child: Mutex<Child>,
    reconciler: Mutex<Child>,
}

static SHARED: tokio::sync::OnceCell<WebhookProcess> = tokio::sync::OnceCell::const_new();

/// The chart rendered as the e2e release with `values` over the chart's defaults and the e2e
/// catalog namespaces.
pub fn render(mut values: Value) -> Vec<Value> {
    values["globalCatalogNamespace"] = json!(GLOBAL_CATALOGS);
    values["catalogNamespaces"] = json!([SELF_HOSTED_CATALOGS]);
    Helm::shared().template(RELEASE, NAMESPACE, &values)
}

/// The catalog flags of every e2e webhook, as the chart renders them from `render`'s values.
pub const CATALOG_ARGS: [&str; 4] =
    ["--global-catalog-namespace", GLOBAL_CATALOGS, "--catalog-namespace", SELF_HOSTED_CATALOGS];

const RBAC_KINDS: [&str; 4] = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

async fn apply_all<'a>(client: &kube::Client, objects: impl IntoIterator<Item = &'a Value>) {
    for object in objects {
        helm::apply(client, object, false).await.unwrap_or_else(|e| panic!("{e}"));
    }
}

/// Applies what the chart renders for the webhook's identity and rights: the ServiceAccount,
/// every RBAC object, the ValidatingAdmissionPolicy with its binding and the ledger's CRD (not the Deployment,
/// Service, certificate or webhook configuration: the process runs here, see `start`).
/// `edit` may change the rendered objects first (to take a permission away).
pub async fn grant_chart_rbac_with(client: &kube::Client, edit: impl FnOnce(&mut Vec<Value>)) {
    let mut objects = render(json!({}));
    edit(&mut objects);
    for namespace in [NAMESPACE, GLOBAL_CATALOGS, SELF_HOSTED_CATALOGS] {
        super::create_namespace_if_missing(client, namespace).await;
    }
    let mut names: Vec<&Value> =
        helm::of_kind(&objects, "ServiceAccount").iter().map(|sa| &sa["metadata"]["name"]).collect();
    names.sort_by_key(|name| name.as_str());
    assert_eq!(names, [SERVICE_ACCOUNT, RECONCILER_SERVICE_ACCOUNT], "the chart's two identities");
    let wanted = |o: &&Value| {
        let kind = o["kind"].as_str().unwrap_or("");
        kind == "ServiceAccount" || RBAC_KINDS.contains(&kind) || kind.starts_with("ValidatingAdmissionPolicy")
    };
    apply_all(client, objects.iter().filter(wanted)).await;
    super::in_process::install_crds(client).await;
}

/// Grants the chart's rules to the webhook's service account.
async fn grant_cluster_rbac(client: &kube::Client) {
    grant_chart_rbac_with(client, |_| {}).await
}

/// What the chart adds with `healPods: true`: deleting pods that lack their secrets.
pub async fn grant_heal_pods(client: &kube::Client) {
    let objects = render(json!({ "healPods": true }));
    let heal: Vec<&Value> = objects
        .iter()
        .filter(|o| RBAC_KINDS.contains(&o["kind"].as_str().unwrap_or("")))
        .filter(|o| o["metadata"]["name"] == format!("{RELEASE}-heal-pods"))
        .collect();
    assert_eq!(heal.len(), 2, "healPods renders a ClusterRole and its binding");
    apply_all(client, heal).await;
}

/// What an administrator adds for an operator whose operands are custom resources: `get` on
/// them through the chart's `operandOwnerRules` (every kind granted so far in this test binary),
/// aggregated into the webhook's operand-owners role.
pub async fn grant_operand_owner_read(client: &kube::Client, group: &str, plural: &str) {
    static GRANTED: tokio::sync::Mutex<Vec<(String, String)>> = tokio::sync::Mutex::const_new(Vec::new());
    let mut granted = GRANTED.lock().await;
    if !granted.iter().any(|(g, p)| g == group && p == plural) {
        granted.push((group.to_string(), plural.to_string()));
    }
    let rules: Vec<Value> =
        granted.iter().map(|(g, p)| json!({ "apiGroups": [g], "resources": [p], "verbs": ["get"] })).collect();
    let objects = render(json!({ "operandOwnerRules": rules }));
    apply_all(client, [helm::find(&objects, "ClusterRole", &format!("{RELEASE}-operand-owner-rules"))]).await;
}

impl WebhookProcess {
    /// Starts the webhook once per test binary and registers it for Pods and ServiceAccounts.
    pub async fn shared() -> &'static WebhookProcess {
        SHARED
            .get_or_init(|| async {
                let cp = ControlPlane::shared();
                let admin = cp.admin().await;
                grant_cluster_rbac(&admin).await;
                // Registered with Fail (below): the process follows the same policy.
                let process = start(cp, "webhook", &["--drain-delay", "0s", "--failure-policy", "Fail"]);
                register(&admin, &process).await;
                process
            })
            .await
    }

    /// Everything the webhook logged so far (JSON lines). The webhook writes its log lines in
    /// batches every 50 ms: this waits a few batches first, so that the line of what just
    /// happened (a decision, a reconciler action) is there.
    pub fn logs(&self) -> String {
        std::thread::sleep(Duration::from_millis(250));
        std::fs::read_to_string(self.dir.join("webhook.log")).unwrap_or_default()
    }

    /// The decision log lines for one namespace (see `logs`).
    pub fn decisions(&self, namespace: &str) -> Vec<serde_json::Value> {
        self.logged("admission decision", namespace)
    }

    /// The log lines with this message about one namespace, parsed.
    pub fn logged(&self, message: &str, namespace: &str) -> Vec<serde_json::Value> {
        self.logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message && v["namespace"] == namespace)
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Whether the webhook process runs.
    pub fn is_running(&self) -> bool {
        self.child.lock().unwrap().try_wait().unwrap().is_none()
    }

    /// Sends `signal` to both processes.
    pub fn signal(&self, signal: i32) {
        for child in [&self.child, &self.reconciler] {
            let pid = child.lock().unwrap().id() as i32;
            // SAFETY: kill(2) on our own child's pid.
            assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        }
    }

    /// The reconciler's pid: the one in its Lease identity.
    pub fn pid(&self) -> u32 {
        self.reconciler.lock().unwrap().id()
    }

    /// The webhook's exit status, once both processes have exited.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let reconciler = self.reconciler.lock().unwrap().try_wait().unwrap();
        reconciler.and(self.child.lock().unwrap().try_wait().unwrap())
    }
}

/// Starts a webhook process (as the chart's service account) and waits until it is ready.
/// `name` names its directory; the shared one is registered, others are not.
pub fn start(cp: &ControlPlane, name: &str, extra_args: &[&str]) -> WebhookProcess {
    let dir = process_dir(name);
    let certs =
        olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()]).unwrap();
    olm_pullsecret_injector::commands::certs::write(&dir, &certs).unwrap();
    start_with_cert_files(cp, name, &dir.join("tls.crt"), &dir.join("tls.key"), &certs.ca_pem, extra_args)
}

/// A fresh directory for the process `name` (its kubeconfig and log).
pub fn process_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// As `start`, serving the certificate and key of the given files (signed by `ca_pem`); the
/// directory is `process_dir(name)`, which the caller may have filled already.
pub fn start_with_cert_files(
    cp: &ControlPlane,
    name: &str,
    cert_file: &Path,
    key_file: &Path,
    ca_pem: &str,
    extra_args: &[&str],
) -> WebhookProcess {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    start_from(cp, &Entrypoint::this_build(), name, &dir, (cert_file, key_file, ca_pem), extra_args)
}

/// How a replica's processes start: the binary of this build, or an image's entrypoint inside
/// its unpacked root filesystem as the image's user.
pub struct Entrypoint {
    /// The command line that `serve ...` follows.
    pub command: Vec<String>,
    /// The root directory the processes see: files under it are named to them from there.
    pub root: PathBuf,
    /// The user and group the processes run as (None: as this test).
    pub user: Option<(u32, u32)>,
}

impl Entrypoint {
    pub fn this_build() -> Self {
        Entrypoint { command: vec![env!("CARGO_BIN_EXE_olm-pullsecret-injector").into()], root: "/".into(), user: None }
    }

    /// `path` (under `root`) as the processes see it.
    fn path(&self, path: &Path) -> String {
        let inside = path.strip_prefix(&self.root).unwrap_or_else(|_| panic!("{path:?} is outside {:?}", self.root));
        Path::new("/").join(inside).to_string_lossy().into_owned()
    }

    /// The command, entering the root and becoming the user in the child before it runs: done
    /// there rather than by chroot(8), so that the parent-death signal set after it (which a
    /// change of user clears) still ties the process to this test.
    fn command(&self) -> Command {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&self.command[0]);
        command.args(&self.command[1..]);
        if self.root != Path::new("/") || self.user.is_some() {
            let root = std::ffi::CString::new(self.root.as_os_str().as_bytes()).unwrap();
            let user = self.user;
            // SAFETY: only async-signal-safe calls, on memory owned by the closure.
            unsafe {
                command.pre_exec(move || {
                    let check = |result: libc::c_int| match result {
                        0 => Ok(()),
                        _ => Err(std::io::Error::last_os_error()),
                    };
                    check(libc::chroot(root.as_ptr()))?;
                    check(libc::chdir(c"/".as_ptr()))?;
                    if let Some((uid, gid)) = user {
                        check(libc::setgroups(0, std::ptr::null()))?;
                        check(libc::setgid(gid))?;
                        check(libc::setuid(uid))?;
                    }
                    Ok(())
                });
            }
        }
        command
    }
}

/// Starts a replica from `entrypoint`, its kubeconfigs and log in `dir` (under the entrypoint's
/// root), serving `cert_file` and `key_file` (signed by `ca_pem`), and waits until it is ready.
pub fn start_from(
    cp: &ControlPlane,
    entrypoint: &Entrypoint,
    name: &str,
    dir: &Path,
    (cert_file, key_file, ca_pem): (&Path, &Path, &str),
    extra_args: &[&str],
) -> WebhookProcess {
    let dir = dir.to_path_buf();
    let [port, admin_port, reconciler_admin_port] = super::free_ports();
    let log_path = dir.join("webhook.log");
    std::fs::File::create(&log_path).unwrap();
    let spawn = |role: &str, service_account: &str, admin: u16, role_args: Vec<String>| {
        let kubeconfig = dir.join(format!("kubeconfig-{role}"));
        cp.write_impersonating_kubeconfig(NAMESPACE, service_account, &kubeconfig);
        // Both write whole lines with O_APPEND: one file, in the order things happened.
        let log = std::fs::OpenOptions::new().append(true).open(&log_path).unwrap();
        let mut command = entrypoint.command();
        command
            .args(["serve", "--role", role, "--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(role_args)
            .args(["--namespace", NAMESPACE])
            .args(CATALOG_ARGS)
            .args(extra_args)
            .env("KUBECONFIG", entrypoint.path(&kubeconfig))
            .env("RUST_LOG", "info,olm_pullsecret_injector=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        spawn_tied_to_this_process(command)
    };
    let webhook_args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port}"),
        "--tls-cert-file".into(),
        entrypoint.path(cert_file),
        "--tls-key-file".into(),
        entrypoint.path(key_file),
    ];
    let child = spawn("webhook", SERVICE_ACCOUNT, admin_port, webhook_args);
    let reconciler = spawn("reconciler", RECONCILER_SERVICE_ACCOUNT, reconciler_admin_port, Vec::new());

    let started = Instant::now();
    for admin in [admin_port, reconciler_admin_port] {
        let ready_url = format!("127.0.0.1:{admin}");
        loop {
            if http_get_status(&ready_url, "/readyz") == Some(200) {
                break;
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            assert!(started.elapsed() < Duration::from_secs(60), "{name} not ready after 60s:\n{log}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    WebhookProcess {
        dir,
        port,
        admin_port,
        reconciler_admin_port,
        ca_pem: ca_pem.to_string(),
        child: Mutex::new(child),
        reconciler: Mutex::new(reconciler),
    }
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

/// The chart's MutatingWebhookConfiguration, pointed at the local process.
/// `failurePolicy: Fail` so that a webhook error fails the test rather than hiding.
async fn register(client: &kube::Client, webhook: &WebhookProcess) {
    register_with(client, webhook, "Fail").await
}

/// The chart's MutatingWebhookConfiguration rendered with `failurePolicy`, each webhook's
/// `clientConfig` (a Service in the chart) replaced by `url` and a `caBundle` of `ca_pem`.
pub fn chart_webhook_configuration(url: &str, ca_pem: &str, failure_policy: &str) -> Value {
    use base64::Engine;
    let objects = render(json!({ "failurePolicy": failure_policy }));
    let mut config = helm::find(&objects, "MutatingWebhookConfiguration", CONFIG_NAME).clone();
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    for hook in config["webhooks"].as_array_mut().expect("webhooks") {
        hook["clientConfig"] = json!({ "url": url, "caBundle": ca_bundle });
    }
    config
}

/// Registers (or re-points) the configuration at `webhook` with the given failure policy, and
/// waits until the API server calls it.
pub async fn register_with(client: &kube::Client, webhook: &WebhookProcess, failure_policy: &str) {
    let config = chart_webhook_configuration(&webhook.url("/mutate"), &webhook.ca_pem, failure_policy);
    helm::apply(client, &config, false).await.unwrap_or_else(|e| panic!("{e}"));

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

/// What the API server says (SubjectAccessReview) the service account `account` of the release
/// namespace may do: `verb` on `group`/`resource` in `namespace` ("" for cluster-wide).
pub async fn allowed(
    client: &kube::Client,
    account: &str,
    verb: &str,
    namespace: &str,
    group: &str,
    resource: &str,
) -> bool {
    use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{NAMESPACE}:{account}")),
            groups: Some(vec!["system:serviceaccounts".into(), "system:authenticated".into()]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews = Api::<SubjectAccessReview>::all(client.clone());
    reviews.create(&kube::api::PostParams::default(), &review).await.unwrap().status.is_some_and(|s| s.allowed)
}
