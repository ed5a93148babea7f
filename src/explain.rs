//! `explain pod/<ns>/<name>` and `explain sa/<ns>/<name>`: against a live cluster, the chain the
//! webhook follows for an object, the catalogs and secrets that apply, and what exists and what
//! is missing. Uses the same caches and resolution as the webhook itself.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::Api;
use serde::Serialize;

use crate::SOURCE_ANNOTATION;
use crate::caches::Caches;
use crate::chain::{self, Subject};
use crate::owners::{OwnerRef, Owners};

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// `pod/<namespace>/<name>` or `sa/<namespace>/<name>`.
    pub target: String,
    /// Output format.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub object: String,
    /// The trusted paths from the object to a catalog with secrets.
    pub chains: Vec<String>,
    /// Paths that were followed and dropped, and why.
    pub dropped: Vec<String>,
    pub catalogs: Vec<String>,
    pub secrets: Vec<SecretState>,
    /// One sentence for an administrator.
    pub verdict: String,
}

#[derive(Serialize, Debug)]
pub struct SecretState {
    /// `<catalog namespace>/<name>` of the source.
    pub source: String,
    pub source_exists: bool,
    /// The name the secret has (or would have) in the object's namespace.
    pub name: Option<String>,
    pub exists_in_namespace: bool,
    pub listed_in_object: bool,
}

pub async fn run(client: kube::Client, args: ExplainArgs) -> anyhow::Result<()> {
    let report = explain(client, &args.target).await?;
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{}", report.object);
    println!("  verdict:  {}", report.verdict);
    for chain in &report.chains {
        println!("  chain:    {chain}");
    }
    for dropped in &report.dropped {
        println!("  dropped:  {dropped}");
    }
    for s in &report.secrets {
        let name = s.name.as_deref().unwrap_or("-");
        let state = match (s.source_exists, s.exists_in_namespace, s.listed_in_object) {
            (false, _, _) => "source missing or not a pull secret".to_string(),
            (true, exists, listed) => format!(
                "{} in the namespace, {} in imagePullSecrets",
                if exists { "present" } else { "MISSING" },
                if listed { "listed" } else { "NOT listed" }
            ),
        };
        println!("  secret:   {} -> {name}: {state}", s.source);
    }
    Ok(())
}

pub async fn explain(client: kube::Client, target: &str) -> anyhow::Result<Report> {
    let mut parts = target.splitn(3, '/');
    let (Some(kind), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("expected pod/<namespace>/<name> or sa/<namespace>/<name>, got {target:?}");
    };
    let (kind, meta, listed) = match kind {
        "pod" | "pods" => {
            let pod = Api::<Pod>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("reading pod {ns}/{name}"))?;
            let listed =
                pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()).map(|r| r.name.clone()).collect();
            ("Pod", pod.metadata, listed)
        }
        "sa" | "serviceaccount" | "serviceaccounts" => {
            let sa = Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("reading service account {ns}/{name}"))?;
            let listed = sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect();
            ("ServiceAccount", sa.metadata, listed)
        }
        other => bail!("unsupported kind {other:?}: use pod or sa"),
    };
    let listed: Vec<String> = listed;

    let caches = Caches::start(client.clone());
    tokio::time::timeout(std::time::Duration::from_secs(60), caches.wait_synced())
        .await
        .context("the watch caches did not sync within 60 s")?;
    let index = caches.index();
    let namespace = caches.namespace(ns);
    let empty = BTreeMap::new();
    let subject = Subject {
        kind,
        namespace: ns,
        name,
        owner_references: meta.owner_references.unwrap_or_default().into_iter().map(OwnerRef::from).collect(),
        namespace_labels: namespace.as_ref().and_then(|n| n.metadata.labels.as_ref()).unwrap_or(&empty),
    };
    let resolution = chain::resolve(&index, &Owners::new(client.clone()), &subject).await?;

    let secrets_here: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut secrets = Vec::new();
    for (source_ns, source_name) in resolution.secrets(&index) {
        let source = caches.source_secret(source_ns, source_name).await;
        let source_exists = crate::copies::unusable(source.as_deref()).is_none();
        let name = if !source_exists {
            None
        } else if source_ns == ns {
            Some(source_name.to_string())
        } else {
            our_copy(&secrets_here, source_ns, source_name).await?
        };
        let exists_in_namespace = match &name {
            Some(n) => secrets_here.get_opt(n).await?.is_some(),
            None => false,
        };
        let listed_in_object = name.as_ref().is_some_and(|n| listed.contains(n));
        secrets.push(SecretState {
            source: format!("{source_ns}/{source_name}"),
            source_exists,
            name,
            exists_in_namespace,
            listed_in_object,
        });
    }

    let missing: Vec<&str> = secrets
        .iter()
        .filter(|s| s.source_exists && !(s.exists_in_namespace && s.listed_in_object))
        .map(|s| s.source.as_str())
        .collect();
    let verdict = if resolution.found.is_empty() {
        "not injected: no trusted chain leads from this object to a catalog with pull secrets".to_string()
    } else if missing.is_empty() {
        "ok: it has every pull secret its catalogs provide".to_string()
    } else {
        format!("missing: {} (a Pod gets them when recreated; a ServiceAccount is backfilled)", missing.join(", "))
    };
    Ok(Report {
        object: format!("{kind} {ns}/{name}"),
        chains: resolution.found.iter().map(|f| f.chain.clone()).collect(),
        dropped: resolution.dropped,
        catalogs: resolution.found.iter().map(|f| format!("{}/{}", f.catalog_namespace, f.catalog_name)).collect(),
        secrets,
        verdict,
    })
}

/// The name our copy of the source has in the namespace: its own name, else the hashed one.
async fn our_copy(api: &Api<Secret>, source_ns: &str, source_name: &str) -> anyhow::Result<Option<String>> {
    let source = format!("{source_ns}/{source_name}");
    let fallback = crate::copies::fallback_name(source_ns, source_name);
    for candidate in [source_name, fallback.as_str()] {
        match api.get_opt(candidate).await? {
            Some(secret)
                if secret.metadata.annotations.as_ref().and_then(|a| a.get(SOURCE_ANNOTATION)) == Some(&source) =>
            {
                return Ok(Some(candidate.to_string()));
            }
            Some(_) => continue,
            None => return Ok(Some(candidate.to_string())),
        }
    }
    Ok(None)
}
