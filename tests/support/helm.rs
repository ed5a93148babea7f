//! Helm, built by the tests from its Go module (`tests/helm`, a `tool` directive on
//! helm.sh/helm/v3/cmd/helm; see `gotool`), never downloaded; the first build takes a minute or
//! two.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};

pub const CHART: &str = "charts/olm-pullsecret-injector";

pub struct Helm {
    binary: PathBuf,
    kube_version: String,
}

static SHARED: OnceLock<Helm> = OnceLock::new();

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart_dir() -> PathBuf {
    repo().join(CHART)
}

impl Helm {
    /// Builds helm once per test binary (when its sources changed) and fails the test if it cannot.
    pub fn shared() -> &'static Helm {
        SHARED.get_or_init(|| {
            let binary = build().unwrap_or_else(|e| panic!("building helm from tests/helm failed: {e}"));
            Helm { binary, kube_version: control_plane_kube_version() }
        })
    }

    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `helm template` of the chart as release `release` in `namespace`, for the control plane's
    /// Kubernetes version, with `values` (a JSON object) as the values file. Returns every
    /// rendered object; panics with helm's error.
    pub fn template(&self, release: &str, namespace: &str, values: &Value) -> Vec<Value> {
        self.try_template(release, namespace, values).unwrap_or_else(|e| panic!("helm template failed:\n{e}"))
    }

    /// As `template`, but helm's refusal (a schema violation, a `fail` in a template) is an `Err`.
    pub fn try_template(&self, release: &str, namespace: &str, values: &Value) -> Result<Vec<Value>, String> {
        self.try_template_for(release, namespace, values, &self.kube_version)
    }

    /// As `try_template`, for another Kubernetes version (`.Capabilities.KubeVersion`).
    pub fn try_template_for(
        &self,
        release: &str,
        namespace: &str,
        values: &Value,
        kube_version: &str,
    ) -> Result<Vec<Value>, String> {
        self.try_template_with(release, namespace, values, kube_version, &[])
    }

    /// As `template`, for a cluster that also serves `api_versions` (`.Capabilities.APIVersions`).
    pub fn template_serving(
        &self,
        release: &str,
        namespace: &str,
        values: &Value,
        api_versions: &[&str],
    ) -> Vec<Value> {
        self.try_template_with(release, namespace, values, &self.kube_version, api_versions)
            .unwrap_or_else(|e| panic!("helm template failed:\n{e}"))
    }

    fn try_template_with(
        &self,
        release: &str,
        namespace: &str,
        values: &Value,
        kube_version: &str,
        api_versions: &[&str],
    ) -> Result<Vec<Value>, String> {
        let values_file = write_values(values);
        let values_path = values_file.path().to_string_lossy().into_owned();
        let chart = chart_dir().to_string_lossy().into_owned();
        let mut args = vec!["template", release, &chart, "--namespace", namespace, "--kube-version", kube_version];
        args.extend(["--values", &values_path]);
        for api_version in api_versions {
            args.extend(["--api-versions", api_version]);
        }
        parse_documents(&self.run(&args)?)
    }

    /// `helm template --dry-run=server` against the cluster of `kubeconfig`: the chart's
    /// `lookup` calls see what exists there (as in `helm upgrade`), nothing is written.
    pub fn template_against_cluster(
        &self,
        kubeconfig: &Path,
        release: &str,
        namespace: &str,
        values: &Value,
    ) -> Vec<Value> {
        let values_file = write_values(values);
        let values_path = values_file.path().to_string_lossy().into_owned();
        let chart = chart_dir().to_string_lossy().into_owned();
        let kubeconfig = kubeconfig.to_string_lossy().into_owned();
        let args = [
            "template",
            release,
            &chart,
            "--namespace",
            namespace,
            "--dry-run=server",
            "--kube-version",
            &self.kube_version,
            "--kubeconfig",
            &kubeconfig,
        ];
        let output = self.run(&[&args[..], &["--values", &values_path]].concat()).unwrap_or_else(|e| panic!("{e}"));
        parse_documents(&output).unwrap()
    }

    /// The NOTES Helm prints after `helm install` of the chart with `values` into the cluster of
    /// `kubeconfig` (a client-side dry run: nothing is installed).
    pub fn notes(&self, kubeconfig: &Path, values: &Value) -> String {
        let values_file = write_values(values);
        let output = self
            .run(&[
                "install",
                "psi",
                &chart_dir().to_string_lossy(),
                "--dry-run=client",
                // Other tests' releases leave the CRDs: a dry run takes nothing over.
                "--take-ownership",
                "--namespace",
                "olm-pullsecret-injector",
                "--kubeconfig",
                &kubeconfig.to_string_lossy(),
                "--output",
                "json",
                "--values",
                &values_file.path().to_string_lossy(),
            ])
            .unwrap_or_else(|e| panic!("{e}"));
        let release: Value = serde_json::from_str(&output).unwrap_or_else(|e| panic!("{e}: {output}"));
        release["info"]["notes"].as_str().unwrap_or_default().to_string()
    }

    /// `helm lint --strict` of the chart with `values`; `Ok` carries helm's report.
    pub fn lint(&self, values: &Value) -> Result<String, String> {
        let values_file = write_values(values);
        self.run(&[
            "lint",
            "--strict",
            &chart_dir().to_string_lossy(),
            "--kube-version",
            &self.kube_version,
            "--values",
            &values_file.path().to_string_lossy(),
        ])
    }

    fn run(&self, args: &[&str]) -> Result<String, String> {
        let home = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = Command::new(&self.binary)
            .args(args)
            // No user configuration, repositories or plugins of the machine.
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_DATA_HOME", home.path().join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .map_err(|e| format!("running {}: {e}", self.binary.display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("helm {} ({}):\n{stdout}{}", args[0], output.status, String::from_utf8_lossy(&output.stderr)))
        }
    }
}

fn parse_documents(output: &str) -> Result<Vec<Value>, String> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(output) {
        let value = <Value as serde::Deserialize>::deserialize(document)
            .map_err(|e| format!("helm rendered invalid YAML: {e}\n{output}"))?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn write_values(values: &Value) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    // JSON is YAML.
    serde_json::to_writer(&mut file, values).unwrap();
    file
}

/// The Kubernetes version the control plane is built from (k8s.io/kubernetes in its go.mod).
fn control_plane_kube_version() -> String {
    super::gotool::required_version("controlplane", "k8s.io/kubernetes")
        .expect("k8s.io/kubernetes in tests/controlplane/go.mod")
}

/// Builds the helm tool of tests/helm (see `gotool`), with its version stamped in.
fn build() -> Result<PathBuf, String> {
    let version = super::gotool::required_version("helm", "helm.sh/helm/v3")?;
    let ldflags = format!("-X helm.sh/helm/v3/internal/version.version=v{version}");
    super::gotool::build("helm", "helm.sh/helm/v3/cmd/helm", &ldflags)
}

/// The rendered objects of one kind.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The one rendered object of `kind` named `name`; panics if it is missing.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// Server-side applies one rendered object (any kind the API server serves, found by discovery)
/// as field manager "helm-e2e". With `dry_run` it is admitted and validated but not stored.
pub async fn apply(client: &kube::Client, object: &Value, dry_run: bool) -> Result<kube::api::DynamicObject, String> {
    use kube::api::{Api, DynamicObject, Patch, PatchParams};
    use kube::core::GroupVersionKind;
    use kube::discovery::Scope;

    let (api_version, kind) = (object["apiVersion"].as_str().unwrap_or(""), object["kind"].as_str().unwrap_or(""));
    let name = object["metadata"]["name"].as_str().ok_or_else(|| format!("a {kind} without a name"))?;
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("discovery of {api_version} {kind}: {e}"))?;
    let api: Api<DynamicObject> = match (&capabilities.scope, object["metadata"]["namespace"].as_str()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (Scope::Namespaced, None) => {
            return Err(format!("{kind} {name} is namespaced but rendered without a namespace"));
        }
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    let mut params = PatchParams::apply("helm-e2e").force();
    params.dry_run = dry_run;
    api.patch(name, &params, &Patch::Apply(object)).await.map_err(|e| format!("apply {kind} {name}: {e}"))
}

/// The control plane has no cert-manager or Prometheus Operator: their CRDs are installed here
/// with open schemas, so the API server checks the group, version, kind and scope of what the
/// chart renders for them, not their fields.
pub async fn install_foreign_crds(client: &kube::Client) {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        for (group, kind, plural) in [
            ("cert-manager.io", "Issuer", "issuers"),
            ("cert-manager.io", "Certificate", "certificates"),
            ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        ] {
            let crd = json!({ "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": { "name": format!("{plural}.{group}") },
                "spec": { "group": group, "scope": "Namespaced",
                    "names": { "plural": plural, "singular": kind.to_lowercase(), "kind": kind },
                    "versions": [{ "name": "v1", "served": true, "storage": true,
                        "schema": { "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } } }] } });
            apply(client, &crd, false).await.unwrap();
        }
    })
    .await;
}
