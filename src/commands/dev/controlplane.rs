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
        start(&binary, dir, &[])
    }

    /// As `start`, with what a cluster with OLM runs besides: kube-scheduler, a node simulated
    /// by kwok (Pods become Ready without a kubelet), and OLM's olm-operator and
    /// catalog-operator, whose global catalog namespace is `global_catalog_namespace`. All are
    /// built from their Go modules (`tests/olm`, `tests/kwok`); the first build takes minutes.
    pub fn start_with_olm(dir: &Path, global_catalog_namespace: &str) -> anyhow::Result<ControlPlane> {
        let binary = build()?;
        let tools = build_olm_tools()?;
        let kwok = build_go_tools("kwok", &[KWOK_PACKAGE], RELEASE_FLAGS)?.join("kwok");
        let (tools, kwok) = (tools.display().to_string(), kwok.display().to_string());
        let args = ["--olm-tools", &tools, "--kwok", &kwok, "--global-catalog-namespace", global_catalog_namespace];
        start(&binary, dir, &args)
    }

    /// Whether OLM runs with it (`start_with_olm`).
    pub fn runs_olm(&self) -> bool {
        self.dir.join("olm-operator.log").exists()
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
    Ok(build_go_tools("controlplane", &["."], &["-ldflags", &version_ldflags()?])?.join("controlplane"))
}

/// How the tools of other projects are built: without paths or symbols (they are large).
const RELEASE_FLAGS: &[&str] = &["-trimpath", "-ldflags", "-s -w"];
const KWOK_PACKAGE: &str = "sigs.k8s.io/kwok/cmd/kwok";

/// OLM's two operators and `opm` (which serves file-based catalogs), in one `go build` of
/// `tests/olm`: they share most of their packages. `opm` needs the tag that leaves out gpgme.
pub fn build_olm_tools() -> anyhow::Result<PathBuf> {
    let mut flags = vec!["-tags", "containers_image_openpgp"];
    flags.extend_from_slice(RELEASE_FLAGS);
    build_go_tools(
        "olm",
        &[
            "github.com/operator-framework/operator-lifecycle-manager/cmd/olm",
            "github.com/operator-framework/operator-lifecycle-manager/cmd/catalog",
            "github.com/operator-framework/operator-registry/cmd/opm",
        ],
        &flags,
    )
}

/// Builds `packages` of the Go module in `tests/<folder>` (a binary each, named after the
/// package's last element) into `target/<folder>/` unless binaries built from the same sources
/// and `flags` are there; returns that directory. Several processes may build at once (`dev`
/// and a test, or two test binaries): each builds into a directory of its own and renames the
/// binaries, so none runs a binary another is still writing.
pub fn build_go_tools(folder: &str, packages: &[&str], flags: &[&str]) -> anyhow::Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = repo.join("tests").join(folder);
    let out_dir = repo.join("target").join(folder);
    std::fs::create_dir_all(&out_dir)?;
    let stamp = out_dir.join(format!("{folder}.sources-sha256"));
    let digest = go_sources_digest(&source, &[flags, packages].concat().join(" "))?;
    let binary_name =
        |package: &str| if package == "." { folder } else { package.rsplit('/').next().unwrap_or(package) }.to_string();
    let built = packages.iter().all(|package| out_dir.join(binary_name(package)).exists());
    if built && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&digest) {
        return Ok(out_dir);
    }
    let started = Instant::now();
    eprintln!("building {} from tests/{folder} (the first build takes minutes)", packages.join(" "));
    let partial = out_dir.join(format!("partial-{}", std::process::id()));
    std::fs::create_dir_all(&partial)?;
    let status = Command::new("go")
        .args(["build", "-buildvcs=false"])
        .args(flags)
        .arg("-o")
        .arg(format!("{}/", partial.display()))
        .args(packages)
        .env("GOFLAGS", "-mod=mod")
        .current_dir(&source)
        .status()
        .context("running `go` (Go 1.26 must be installed)")?;
    if !status.success() {
        bail!("go build in tests/{folder} failed ({status})");
    }
    for binary in std::fs::read_dir(&partial)? {
        let binary = binary?;
        std::fs::rename(binary.path(), out_dir.join(binary.file_name()))?;
    }
    std::fs::remove_dir(&partial)?;
    std::fs::write(&stamp, digest)?;
    eprintln!("built tests/{folder} in {:.0?}", started.elapsed());
    Ok(out_dir)
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

fn start(binary: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<ControlPlane> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let log = std::fs::File::create(dir.join("controlplane.log"))?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .arg("--dir")
        .arg(dir)
        .arg("--exit-on-stdin-close")
        .args(args)
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
    let names = [
        "controlplane.log",
        "kube-apiserver.log",
        "kube-controller-manager.log",
        "olm-operator.log",
        "catalog-operator.log",
    ];
    for name in names.into_iter().filter(|name| dir.join(name).exists()) {
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
