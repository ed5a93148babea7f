//! The real control plane of `tests/controlplane` (etcd, kube-apiserver, kube-controller-manager
//! and OLM's CRDs), built once from its Go module and started once per test binary.
//!
//! The process is told to exit when its stdin closes, which happens when the test binary exits
//! however it exits, so no control plane outlives its tests.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use sha2::{Digest, Sha256};

pub struct ControlPlane {
    dir: PathBuf,
    // Held for the life of the test binary: dropping the pipe stops the control plane.
    _process: Mutex<(Child, ChildStdin)>,
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// Builds (if its sources changed) and starts the control plane on first use; panics with the
    /// component logs when it cannot start, so CI fails instead of skipping.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| {
            let binary = build();
            start(&binary).unwrap_or_else(|e| panic!("control plane failed to start: {e}"))
        })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// A client with cluster-admin rights.
    pub async fn admin(&self) -> kube::Client {
        client_for(self.read_kubeconfig()).await
    }

    /// A client authenticated as `system:serviceaccount:<namespace>:<name>`, with exactly the
    /// rights RBAC grants that service account.
    pub async fn impersonating(&self, namespace: &str, name: &str) -> kube::Client {
        client_for(self.impersonating_kubeconfig(namespace, name)).await
    }

    /// Writes a kubeconfig that impersonates the service account, for a child process.
    pub fn write_impersonating_kubeconfig(&self, namespace: &str, name: &str, path: &Path) {
        let yaml = serde_yaml::to_string(&self.impersonating_kubeconfig(namespace, name)).unwrap();
        std::fs::write(path, yaml).unwrap();
    }

    fn read_kubeconfig(&self) -> Kubeconfig {
        Kubeconfig::read_from(self.kubeconfig()).expect("admin kubeconfig")
    }

    fn impersonating_kubeconfig(&self, namespace: &str, name: &str) -> Kubeconfig {
        let mut kc = self.read_kubeconfig();
        for auth in &mut kc.auth_infos {
            let info = auth.auth_info.as_mut().expect("auth info");
            info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
            info.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]);
        }
        kc
    }
}

async fn client_for(kubeconfig: Kubeconfig) -> kube::Client {
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kube config");
    kube::Client::try_from(config).expect("kube client")
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane")
}

/// Builds the Go program unless a binary built from the same sources exists. Go's own build
/// cache makes a rebuild after a small change quick; the first build takes minutes.
fn build() -> PathBuf {
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/controlplane");
    std::fs::create_dir_all(&out_dir).unwrap();
    let binary = out_dir.join("controlplane");
    let stamp = out_dir.join("controlplane.sources-sha256");
    let digest = sources_digest();
    if binary.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&digest) {
        return binary;
    }
    let started = Instant::now();
    eprintln!("building the control plane from tests/controlplane (first build takes several minutes)");
    let status = Command::new("go")
        .args(["build", "-buildvcs=false", "-o"])
        .arg(&binary)
        .arg(".")
        .current_dir(source_dir())
        .status()
        .expect("run `go` (Go 1.26 must be installed)");
    assert!(status.success(), "go build of tests/controlplane failed");
    std::fs::write(&stamp, digest).unwrap();
    eprintln!("built the control plane in {:.0?}", started.elapsed());
    binary
}

fn sources_digest() -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(source_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.ends_with(".go") || name == "go.mod" || name == "go.sum"
        })
        .collect();
    files.sort();
    let mut hash = Sha256::new();
    for file in files {
        hash.update(file.file_name().unwrap().as_encoded_bytes());
        hash.update(std::fs::read(&file).unwrap());
    }
    hex::encode(hash.finalize())
}

fn start(binary: &Path) -> Result<ControlPlane, String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("controlplane-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = std::fs::File::create(dir.join("controlplane.log")).unwrap();
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--dir")
        .arg(&dir)
        .arg("--exit-on-stdin-close")
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
    let stdin = child.stdin.take().unwrap();
    let deadline = started + Duration::from_secs(180);
    while !dir.join("ready").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            return Err(format!("exited with {status}\n{}", logs(&dir)));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("not ready after 180s\n{}", logs(&dir)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("control plane ready in {:.1?} ({})", started.elapsed(), dir.display());
    Ok(ControlPlane { dir, _process: Mutex::new((child, stdin)) })
}

/// The tail of every component log, for a failure message.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    for name in ["controlplane.log", "kube-apiserver.log", "kube-controller-manager.log"] {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(dir.join(name)) {
            let _ = f.read_to_string(&mut text);
        }
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        out.push_str(&format!("--- {name} (last lines)\n"));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
