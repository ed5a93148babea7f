//! `explain pod/<ns>/<name>` and `explain sa/<ns>/<name>`: against a live cluster, the chain the
//! webhook follows for an object, the catalogs and secrets that apply, and what exists and what
//! is missing. It asks the same resolver as the webhook, over the same caches.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::inject::copies::copies_of;
use crate::inject::ledger::PullSecretCopy;
use crate::resolve::owners::{ApiOwners, Owners};
use crate::resolve::{Kind, NamespaceRules, Provision, Resolver, Subject};
use crate::state::caches::Caches;
use crate::state::index::CatalogNamespaces;

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// `pod/<namespace>/<name>` or `sa/<namespace>/<name>`.
    pub target: String,
    /// Output format.
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    pub output: String,
    /// The namespaces `serve` leaves alone, as it is given them.
    #[command(flatten)]
    pub namespaces: super::NamespaceArgs,
    #[command(flatten)]
    pub catalogs: super::CatalogArgs,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub object: String,
    /// The namespace rule that leaves the object alone, if one does.
    pub skipped: Option<String>,
    /// The trusted paths from the object to a catalog with secrets.
    pub chains: Vec<String>,
    /// Paths that were followed and dropped, and why.
    pub dropped: Vec<String>,
    pub catalogs: Vec<String>,
    pub secrets: Vec<SecretState>,
    /// One sentence for an administrator.
    pub verdict: String,
}

impl Report {
    /// Whether a secret the object needs is missing from the namespace or from its list.
    pub fn missing_something(&self) -> bool {
        missing(&self.secrets).next().is_some()
    }

    /// The report as text, for a person.
    pub fn print(&self) {
        println!("{}", self.object);
        println!("  verdict:  {}", self.verdict);
        for chain in &self.chains {
            println!("  chain:    {chain}");
        }
        for dropped in &self.dropped {
            println!("  dropped:  {dropped}");
        }
        for s in &self.secrets {
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
    }
}

/// The secrets that exist at their source but not in the namespace, or are not listed.
fn missing(secrets: &[SecretState]) -> impl Iterator<Item = &SecretState> {
    secrets.iter().filter(|s| s.source_exists && !(s.exists_in_namespace && s.listed_in_object))
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
    let rules = NamespaceRules::from(args.namespaces);
    let report = explain(client, &args.target, rules, args.catalogs.into()).await?;
    match args.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => report.print(),
    }
    Ok(())
}

pub async fn explain(
    client: kube::Client,
    target: &str,
    rules: NamespaceRules,
    catalogs: CatalogNamespaces,
) -> anyhow::Result<Report> {
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
            (Kind::Pod, pod.metadata, listed)
        }
        "sa" | "serviceaccount" | "serviceaccounts" => {
            let sa = Api::<ServiceAccount>::namespaced(client.clone(), ns)
                .get(name)
                .await
                .with_context(|| format!("reading service account {ns}/{name}"))?;
            let listed = sa.image_pull_secrets.iter().flatten().map(|r| r.name.clone()).collect();
            (Kind::ServiceAccount, sa.metadata, listed)
        }
        other => bail!("unsupported kind {other:?}: use pod or sa"),
    };
    let listed: Vec<String> = listed;

    let caches = Caches::start(client.clone(), catalogs);
    tokio::time::timeout(std::time::Duration::from_secs(60), caches.wait_synced())
        .await
        .context("the watch caches did not sync within 60 s")?;
    let resolver = Resolver::new(rules, caches, Owners::new(ApiOwners(client.clone())));
    let subject = Subject::of(kind, ns, name, meta.owner_references.as_deref().unwrap_or_default());
    let object = format!("{} {ns}/{name}", kind.as_str());
    if let Some(skip) = resolver.skip(ns) {
        return Ok(Report {
            object,
            skipped: Some(skip.reason().to_string()),
            chains: Vec::new(),
            dropped: Vec::new(),
            catalogs: Vec::new(),
            secrets: Vec::new(),
            verdict: format!("not injected: {}", skip.reason()),
        });
    }
    let resolution = resolver.resolve(&subject).await?;

    // Our copies are found in the ledger, as the reconciler finds them.
    let copies_here: Vec<std::sync::Arc<PullSecretCopy>> = Api::<PullSecretCopy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing the ledger of copies")?
        .items
        .into_iter()
        .filter(|entry| entry.spec.namespace == ns)
        .map(std::sync::Arc::new)
        .collect();
    let secrets_here: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut secrets = Vec::new();
    for need in &resolution.needs {
        let source = need.source_ref();
        let name = match &need.provision {
            Provision::Unusable(_) => None,
            Provision::Original => Some(need.source_name.clone()),
            Provision::Copy(_) => copies_of(&copies_here, &source).next().map(str::to_string),
        };
        let exists_in_namespace = match &name {
            Some(n) => secrets_here.get_metadata_opt(n).await?.is_some(),
            None => false,
        };
        let listed_in_object = name.as_ref().is_some_and(|n| listed.contains(n));
        secrets.push(SecretState {
            source,
            source_exists: !matches!(need.provision, Provision::Unusable(_)),
            name,
            exists_in_namespace,
            listed_in_object,
        });
    }

    let missing: Vec<&str> = missing(&secrets).map(|s| s.source.as_str()).collect();
    let verdict = if resolution.found().is_empty() {
        "not injected: no trusted chain leads from this object to a catalog with pull secrets".to_string()
    } else if missing.is_empty() {
        "ok: it has every pull secret its catalogs provide".to_string()
    } else {
        format!("missing: {} (a Pod gets them when recreated; a ServiceAccount is backfilled)", missing.join(", "))
    };
    Ok(Report {
        object,
        skipped: None,
        catalogs: resolution.catalogs(),
        chains: resolution.chain_texts(),
        dropped: resolution.chains.dropped,
        secrets,
        verdict,
    })
}
