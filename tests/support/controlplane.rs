//! One control plane per test binary. It fails the test (never skips it) when it cannot start.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use olm_pullsecret_injector::commands::dev::controlplane;

pub struct ControlPlane(controlplane::ControlPlane);

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| ControlPlane::start(controlplane::ControlPlane::start))
    }

    /// The shared control plane with real OLM (and kube-scheduler and a kwok node), whose global
    /// catalog namespace is the e2e webhook's. A test binary that uses it calls this before
    /// anything else asks for `shared()`.
    pub fn with_olm() -> &'static ControlPlane {
        let cp = SHARED.get_or_init(|| {
            ControlPlane::start(|dir| controlplane::ControlPlane::start_with_olm(dir, super::olm::GLOBAL_CATALOGS))
        });
        assert!(cp.0.runs_olm(), "the shared control plane was started without OLM");
        cp
    }

    fn start(start: impl FnOnce(&Path) -> anyhow::Result<controlplane::ControlPlane>) -> ControlPlane {
        remove_leftovers_of_exited_runs(Path::new(env!("CARGO_TARGET_TMPDIR")));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("controlplane-{}", std::process::id()));
        ControlPlane(start(&dir).unwrap_or_else(|e| panic!("control plane failed to start: {e:#}")))
    }

    pub fn dir(&self) -> PathBuf {
        self.0.kubeconfig().parent().unwrap().to_path_buf()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.0.kubeconfig()
    }

    pub async fn admin(&self) -> kube::Client {
        self.0.admin().await.expect("admin client")
    }

    pub async fn impersonating(&self, namespace: &str, name: &str) -> kube::Client {
        self.0.impersonating(namespace, name).await.expect("impersonating client")
    }

    /// Writes a kubeconfig that impersonates the service account, for a child process. It holds
    /// its certificates and key inline: a process in another root filesystem (the image's) can
    /// use it too.
    pub fn write_impersonating_kubeconfig(&self, namespace: &str, name: &str, path: &Path) {
        use base64::Engine;
        let inline = |file: Option<String>| {
            file.map(|file| base64::engine::general_purpose::STANDARD.encode(std::fs::read(file).unwrap()))
        };
        let mut kubeconfig = self.0.impersonating_kubeconfig(namespace, name).expect("kubeconfig");
        for cluster in kubeconfig.clusters.iter_mut().filter_map(|c| c.cluster.as_mut()) {
            if let Some(data) = inline(cluster.certificate_authority.take()) {
                cluster.certificate_authority_data = Some(data);
            }
        }
        for auth in kubeconfig.auth_infos.iter_mut().filter_map(|a| a.auth_info.as_mut()) {
            if let Some(data) = inline(auth.client_certificate.take()) {
                auth.client_certificate_data = Some(data);
            }
            if let Some(data) = inline(auth.client_key.take()) {
                auth.client_key_data = Some(data.into());
            }
        }
        std::fs::write(path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    }
}

/// Removes what exited test binaries left in the tests' scratch directory, where each names its
/// directories `<what>-<pid>` (kept after a run, for a failure's logs): a control plane's data
/// alone is about 65 MB, and every run of the suite leaves one per test binary.
fn remove_leftovers_of_exited_runs(scratch: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.rsplit_once('-')).and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
