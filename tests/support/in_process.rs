//! The webhook served from this process (benches): the runtime with its default settings, on the
//! certificate pair in `dir`, against the test control plane.

use std::net::SocketAddr;
use std::path::Path;

use olm_pullsecret_injector::runtime::{self, Config};
use olm_pullsecret_injector::state::index::CatalogNamespaces;

pub fn free_addr() -> SocketAddr {
    let [port] = super::free_ports();
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Serves `app` on the webhook's own TLS server with `dir/tls.crt` and `dir/tls.key`: the
/// benches' reference handlers run where ours does.
pub async fn serve_tls(dir: &Path, app: axum::Router) -> anyhow::Result<SocketAddr> {
    let tls = olm_pullsecret_injector::serving::tls::CertReloader::load(dir.join("tls.crt"), dir.join("tls.key"))?;
    let addr = free_addr();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tokio::spawn(olm_pullsecret_injector::serving::https::serve_tls(
        listener,
        tls.server_config(None),
        app,
        Default::default(),
        std::future::pending(),
    ));
    Ok(addr)
}

/// Starts the runtime (webhook and reconciler) with `dir/tls.crt` and `dir/tls.key`; returns
/// once it accepts connections.
pub async fn serve(client: kube::Client, dir: &Path) -> SocketAddr {
    serve_as(client, dir, runtime::Role::All).await
}

/// As `serve`, running only `role` (which must serve the webhook).
pub async fn serve_as(client: kube::Client, dir: &Path, role: runtime::Role) -> SocketAddr {
    let catalogs = CatalogNamespaces {
        global: super::olm::GLOBAL_CATALOGS.into(),
        private: vec![super::olm::SELF_HOSTED_CATALOGS.into()],
    };
    let config = Config { role, namespaces: namespace_rules(), catalogs, ..Config::local(dir) };
    for namespace in [super::webhook::NAMESPACE, super::olm::GLOBAL_CATALOGS, super::olm::SELF_HOSTED_CATALOGS] {
        super::create_namespace_if_missing(&client, namespace).await;
    }
    install_crds(&client).await;
    let running = runtime::start(client, config).await.expect("the runtime starts");
    running.webhook_addr.expect("the role serves the webhook")
}

fn namespace_rules() -> olm_pullsecret_injector::resolve::NamespaceRules {
    olm_pullsecret_injector::resolve::NamespaceRules {
        own_namespace: super::webhook::NAMESPACE.into(),
        ..Default::default()
    }
}

/// The project's CRDs (the ledger, the links), as the chart installs them, once they are served.
pub async fn install_crds(client: &kube::Client) {
    for crd in olm_pullsecret_injector::commands::dev::PROJECT_CRDS {
        let crd: serde_json::Value = serde_json::from_str(crd).unwrap();
        super::helm::apply(client, &crd, false).await.unwrap();
    }
    let ledger = kube::Api::<olm_pullsecret_injector::inject::ledger::PullSecretCopy>::all(client.clone());
    let links = kube::Api::<olm_pullsecret_injector::state::links::PullSecretLink>::all(client.clone());
    super::eventually("the ledger and the links to be served", std::time::Duration::from_secs(20), || async {
        (ledger.list(&Default::default()).await.is_ok() && links.list(&Default::default()).await.is_ok()).then_some(())
    })
    .await;
}

/// A bench's setting from the environment variable `name`, or `default`.
pub fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Runs a bench: `run` gets its own directory under the target dir (the webhook's log is written
/// there) and a two-thread runtime, as `serve` would have on the chart's two cores.
pub fn bench<F: Future<Output = anyhow::Result<()>>>(
    name: &str,
    run: impl FnOnce(std::path::PathBuf) -> F,
) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-{name}"));
    std::fs::create_dir_all(&dir)?;
    let _log_guard =
        olm_pullsecret_injector::telemetry::logging::init("json", std::fs::File::create(dir.join("webhook.log"))?);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(run(dir))
}

/// CPU seconds (user and system) spent so far by this process's threads whose names start with
/// one of `prefixes` (a runtime's `thread_name`), from /proc.
pub fn thread_cpu_seconds(prefixes: &[&str]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !prefixes.iter().any(|prefix| name.starts_with(prefix)) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // After the parenthesised name: state is field 3, utime field 14, stime field 15.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
        ticks += fields.get(11..13).map_or(0, |f| f.iter().map(|v| v.parse::<u64>().unwrap_or(0)).sum());
    }
    ticks as f64 / ticks_per_second
}
