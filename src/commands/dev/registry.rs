//! A file-based catalog served by OLM's own `opm serve` on loopback, for a CatalogSource with
//! `spec.address`. Each bundle's manifests are embedded as `olm.bundle.object` properties with
//! an empty `image`: OLM then takes the content from the registry and starts no unpack Job
//! (there is no kubelet to run one). Used by `dev` and by the end-to-end tests with real OLM.

use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

/// One version of an operator: its ClusterServiceVersion and the objects shipped with it.
pub struct Bundle {
    pub csv: Value,
    pub objects: Vec<Value>,
}

/// A package with one channel, whose entries are the bundles in order; each replaces what its
/// CSV's `spec.replaces` names.
pub struct Package {
    pub name: String,
    pub channel: String,
    pub bundles: Vec<Bundle>,
}

/// An operator bundle as operator SDK lays one out: a Deployment named after the package, run by
/// the ServiceAccount of the same name (which OLM creates), owning the CRD of `kind` in `group`,
/// installable in every install mode.
pub fn operator_bundle(package: &str, version: &str, replaces: Option<&str>, group: &str, kind: &str) -> Bundle {
    let plural = format!("{}s", kind.to_lowercase());
    let crd_name = format!("{plural}.{group}");
    let operator = package;
    let install_modes: Vec<Value> = ["OwnNamespace", "SingleNamespace", "MultiNamespace", "AllNamespaces"]
        .iter()
        .map(|mode| json!({ "type": mode, "supported": true }))
        .collect();
    let mut csv = json!({
        "apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
        "metadata": { "name": csv_name(package, version) },
        "spec": {
            "displayName": package, "version": version, "installModes": install_modes,
            "customresourcedefinitions": { "owned": [{ "name": crd_name, "kind": kind, "version": "v1", "displayName": kind }] },
            "install": { "strategy": "deployment", "spec": {
                "permissions": [{ "serviceAccountName": operator,
                    "rules": [{ "apiGroups": [group], "resources": [plural], "verbs": ["get", "list", "watch"] }] }],
                "deployments": [{ "name": operator, "spec": {
                    "replicas": 1,
                    "selector": { "matchLabels": { "app": operator } },
                    "template": { "metadata": { "labels": { "app": operator } },
                        "spec": { "serviceAccountName": operator, "containers": [{ "name": "manager",
                            "image": format!("registry.example.com/{package}:{version}") }] } } } }] } } }
    });
    if let Some(replaces) = replaces {
        csv["spec"]["replaces"] = json!(csv_name(package, replaces));
    }
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": crd_name },
        "spec": { "group": group, "scope": "Namespaced",
            "names": { "plural": plural, "singular": kind.to_lowercase(), "kind": kind, "listKind": format!("{kind}List") },
            "versions": [{ "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }] }
    });
    Bundle { csv, objects: vec![crd] }
}

/// The CSV name operator SDK gives a version of a package.
pub fn csv_name(package: &str, version: &str) -> String {
    format!("{package}.v{version}")
}

/// Writes `packages` as a file-based catalog (one `catalog.json` of JSON documents) in `dir`.
pub fn write_catalog(dir: &Path, packages: &[Package]) -> anyhow::Result<()> {
    let encode = |object: &Value| base64::engine::general_purpose::STANDARD.encode(object.to_string());
    let mut documents = Vec::new();
    for package in packages {
        let name = |bundle: &Bundle| bundle.csv["metadata"]["name"].as_str().unwrap_or_default().to_string();
        documents.push(json!({ "schema": "olm.package", "name": package.name, "defaultChannel": package.channel }));
        let entries: Vec<Value> = package
            .bundles
            .iter()
            .map(|bundle| match bundle.csv["spec"]["replaces"].as_str() {
                Some(replaces) => json!({ "name": name(bundle), "replaces": replaces }),
                None => json!({ "name": name(bundle) }),
            })
            .collect();
        documents.push(
            json!({ "schema": "olm.channel", "package": package.name, "name": package.channel, "entries": entries }),
        );
        for bundle in &package.bundles {
            let mut properties = vec![json!({ "type": "olm.package",
                "value": { "packageName": package.name, "version": bundle.csv["spec"]["version"] } })];
            for owned in bundle.csv["spec"]["customresourcedefinitions"]["owned"].as_array().into_iter().flatten() {
                let group = owned["name"].as_str().and_then(|n| n.split_once('.')).map(|(_, g)| g).unwrap_or_default();
                properties.push(json!({ "type": "olm.gvk",
                    "value": { "group": group, "kind": owned["kind"], "version": owned["version"] } }));
            }
            for object in std::iter::once(&bundle.csv).chain(&bundle.objects) {
                properties.push(json!({ "type": "olm.bundle.object", "value": { "data": encode(object) } }));
            }
            documents.push(json!({ "schema": "olm.bundle", "name": name(bundle), "package": package.name,
                "image": "", "properties": properties }));
        }
    }
    std::fs::create_dir_all(dir)?;
    let text: Vec<String> = documents.iter().map(Value::to_string).collect();
    std::fs::write(dir.join("catalog.json"), text.join("\n"))?;
    Ok(())
}

/// `opm serve` of a catalog directory on a loopback port; stopped when dropped, and when this
/// process exits however it exits (its pipe to the wrapping shell closes).
pub struct Registry {
    child: Child,
    stdin: Option<ChildStdin>,
    /// `127.0.0.1:<port>`: a CatalogSource's `spec.address`.
    pub address: String,
    pub dir: PathBuf,
}

impl Registry {
    /// Serves the catalog in `dir` and waits until its gRPC port accepts connections. It logs to
    /// `<dir>.log`.
    pub fn serve(dir: &Path) -> anyhow::Result<Registry> {
        let opm = super::controlplane::build_olm_tools()?.join("opm");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(dir.with_extension("log"))?;
        // The shell runs opm and kills it when its stdin (our pipe) closes; it exits with opm.
        let mut child = Command::new("sh")
            .args(["-c", STOP_WITH_STDIN])
            .arg(&opm)
            .arg("serve")
            .arg(dir)
            .args(["--port", &port.to_string(), "--termination-log", "/dev/null", "--pprof-addr", ""])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", opm.display()))?;
        let stdin = child.stdin.take();
        let mut registry = Registry { child, stdin, address: format!("127.0.0.1:{port}"), dir: dir.to_path_buf() };
        let started = Instant::now();
        while std::net::TcpStream::connect(&registry.address).is_err() {
            if let Some(status) = registry.child.try_wait()? {
                let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                bail!("opm serve {} exited with {status}:\n{log}", dir.display());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("opm serve {} not listening after 60 s", dir.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(registry)
    }
}

/// Runs `"$0" "$@"` until stdin closes. (An asynchronous command's stdin is /dev/null unless
/// redirected, hence fd 3.)
const STOP_WITH_STDIN: &str =
    r#"exec 3<&0; "$0" "$@" & pid=$!; (cat <&3 >/dev/null; kill $pid 2>/dev/null) & wait $pid"#;

impl Drop for Registry {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
