//! The local control plane of `tests/controlplane` (etcd, kube-apiserver, kube-controller-manager
//! and OLM's CRDs), built from its Go module (only when its sources changed) and started on free
//! loopback ports. Used by `dev` and by the end-to-end tests.
//!
//! The process is told to exit when its stdin closes, which happens when this process exits
//! however it exits, so no control plane outlives its owner.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use sha2::{Digest, Sha256};

pub struct ControlPlane {
    dir: PathBuf,
    // Held for the life of the owner: dropping the pipe stops the control plane.
    _process: Mutex<(Child, ChildStdin)>,
}

impl ControlPlane {
    /// Builds the control plane if its sources changed and starts it with its state in `dir`.
    /// The error carries the tail of every component log.
    pub fn start(dir: &Path) -> anyhow::Result<ControlPlane> {
        let binary = build()?;
        start(&binary, dir)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A client with cluster-admin rights.
    pub async fn admin(&self) -> anyhow::Result<kube::Client> {
        client_for(Kubeconfig::read_from(self.kubeconfig())?).await
    }

    /// A client authenticated as `system:serviceaccount:<namespace>:<name>`, with exactly the
    /// rights RBAC grants that service account.
    pub async fn impersonating(&self, namespace: &str, name: &str) -> anyhow::Result<kube::Client> {
        client_for(self.impersonating_kubeconfig(namespace, name)?).await
    }

    /// The admin kubeconfig changed to impersonate a service account (for a child process:
    /// write it out and point KUBECONFIG at it).
    pub fn impersonating_kubeconfig(&self, namespace: &str, name: &str) -> anyhow::Result<Kubeconfig> {
        let mut kc = Kubeconfig::read_from(self.kubeconfig())?;
        for auth in &mut kc.auth_infos {
            let Some(info) = auth.auth_info.as_mut() else { continue };
            info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
            info.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]);
        }
        Ok(kc)
    }
}

async fn client_for(kubeconfig: Kubeconfig) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    // Show the API server's answers as they are: a webhook's retryable 503 is an answer too.
    config.default_retry = false;
    Ok(crate::api_client::from_config(config)?)
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane")
}

/// Builds the Go program unless a binary built from the same sources exists. Go's own build
/// cache makes a rebuild after a small change quick; the first build takes minutes.
fn build() -> anyhow::Result<PathBuf> {
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/controlplane");
    std::fs::create_dir_all(&out_dir)?;
    let binary = out_dir.join("controlplane");
    let stamp = out_dir.join("controlplane.sources-sha256");
    let ldflags = version_ldflags()?;
    let digest = go_sources_digest(&source_dir(), &ldflags)?;
    if binary.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&digest) {
        return Ok(binary);
    }
    let started = Instant::now();
    eprintln!("building the control plane from tests/controlplane (the first build takes several minutes)");
    // Several processes may build at once (`dev` and a test, or two test binaries): each writes
    // a file of its own and renames it, so none runs a binary another is still writing.
    let partial = out_dir.join(format!("controlplane.partial-{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-buildvcs=false", "-ldflags", &ldflags, "-o"])
        .arg(&partial)
        .arg(".")
        .current_dir(source_dir())
        .status()
        .context("running `go` (Go 1.26 must be installed)")?;
    if !status.success() {
        bail!("go build of tests/controlplane failed ({status})");
    }
    std::fs::rename(&partial, &binary)?;
    std::fs::write(&stamp, digest)?;
    eprintln!("built the control plane in {:.0?}", started.elapsed());
    Ok(binary)
}

/// Stamps the Kubernetes version of go.mod into the binaries, as a release build does: without
/// it the API server reports `v0.0.0-master`, which tools that check versions (Helm's
/// `kubeVersion`) refuse.
fn version_ldflags() -> anyhow::Result<String> {
    let go_mod = std::fs::read_to_string(source_dir().join("go.mod"))?;
    let version = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes v"))
        .and_then(|v| v.split_whitespace().next())
        .context("tests/controlplane/go.mod requires no k8s.io/kubernetes version")?;
    let mut parts = version.split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
    let var = |name: &str, value: &str| format!("-X k8s.io/component-base/version.{name}={value}");
    Ok([var("gitVersion", &format!("v{version}")), var("gitMajor", major), var("gitMinor", minor)].join(" "))
}

/// A digest of a Go module's sources (`*.go`, go.mod, go.sum in `dir`) and of `build_flags`: a
/// binary built from them is rebuilt only when it changes. Also keys the tests' Helm build.
pub fn go_sources_digest(dir: &Path, build_flags: &str) -> std::io::Result<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".go") || name == "go.mod" || name == "go.sum" {
            files.push(path);
        }
    }
    files.sort();
    let mut hash = Sha256::new();
    hash.update(build_flags.as_bytes());
    for file in files {
        hash.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hash.update(std::fs::read(&file)?);
    }
    Ok(hex::encode(hash.finalize()))
}

fn start(binary: &Path, dir: &Path) -> anyhow::Result<ControlPlane> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("controlplane.log"))?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--dir")
        .arg(dir)
        .arg("--exit-on-stdin-close")
        .stdin(Stdio::piped())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;
    let stdin = child.stdin.take().context("control plane stdin")?;
    let deadline = started + Duration::from_secs(180);
    while !dir.join("ready").exists() {
        if let Some(status) = child.try_wait()? {
            bail!("the control plane exited with {status}\n{}", logs(dir));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the control plane was not ready after 180s\n{}", logs(dir));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("control plane ready in {:.1?} ({})", started.elapsed(), dir.display());
    Ok(ControlPlane { dir: dir.to_path_buf(), _process: Mutex::new((child, stdin)) })
}

/// The tail of every component log, for an error message.
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
