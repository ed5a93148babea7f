//! `cleanup [--dry-run]`: takes back everything the project handed out, from its own bookkeeping
//! (the ledger and the `pullsecret-injector.io/injected` annotation), never by reading Secrets:
//! the names recorded on each ServiceAccount come off it (test-guarded JSON patch), then each
//! copy in the ledger is deleted (only while it is still our copy: the `test`-only probe and
//! UID/resourceVersion preconditions) with its entry. With `--dry-run` it lists what it would do.

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::INJECTED_ANNOTATION;
use crate::inject::copies::Copies;
use crate::inject::ledger::PullSecretCopy;
use crate::inject::patch;
use crate::state::events::Events;

#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    /// List what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// One thing cleanup takes back.
#[derive(Debug, PartialEq, Eq)]
pub enum Removal {
    /// Names we added to a ServiceAccount's `imagePullSecrets`.
    Entries { namespace: String, service_account: String, names: Vec<String> },
    /// A copy, by the ledger.
    Copy { namespace: String, name: String, source: String },
}

impl std::fmt::Display for Removal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Removal::Entries { namespace, service_account, names } => {
                write!(f, "serviceaccount {namespace}/{service_account}: imagePullSecrets -= {}", names.join(","))
            }
            Removal::Copy { namespace, name, source } => write!(f, "secret {namespace}/{name} (copy of {source})"),
        }
    }
}

/// What cleanup takes back, in the order it does it.
pub async fn plan(client: &kube::Client) -> anyhow::Result<Vec<Removal>> {
    let mut removals = Vec::new();
    let sas = Api::<ServiceAccount>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing service accounts")?;
    for sa in sas.items {
        let Some(injected) = sa.annotations().get(INJECTED_ANNOTATION) else { continue };
        let names: Vec<String> = patch::split_names(injected).into_iter().map(str::to_string).collect();
        removals.push(Removal::Entries {
            namespace: sa.namespace().unwrap_or_default(),
            service_account: sa.name_any(),
            names,
        });
    }
    let entries = Api::<PullSecretCopy>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing the ledger of copies")?;
    for entry in entries.items {
        removals.push(Removal::Copy {
            namespace: entry.spec.namespace,
            name: entry.spec.name,
            source: entry.spec.source,
        });
    }
    Ok(removals)
}

/// Carries out `removal`.
async fn apply(client: &kube::Client, copies: &Copies, removal: &Removal) -> anyhow::Result<()> {
    match removal {
        Removal::Entries { namespace, service_account, names } => {
            let api = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
            // Deleted since the plan: nothing of ours is left on it.
            let Some(sa) = api.get_opt(service_account).await? else { return Ok(()) };
            let Some(injected) = sa.annotations().get(INJECTED_ANNOTATION) else { return Ok(()) };
            let existing: Vec<&str> = sa.image_pull_secrets.iter().flatten().map(|r| r.name.as_str()).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            if let Some(removal) = patch::removal(&existing, injected, &names) {
                let params = PatchParams { field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() };
                api.patch(service_account, &params, &Patch::<()>::Json(removal)).await?;
            }
        }
        Removal::Copy { namespace, name, source } => copies.delete(namespace, name, source).await?,
    }
    Ok(())
}

/// Takes back (or with `--dry-run` lists) everything in the plan. An object it cannot take back
/// does not stop it: each is named on stderr, the rest is taken back, and the run fails at the
/// end, so a hook Job reports it and a script can retry.
pub async fn run(client: kube::Client, args: CleanupArgs) -> anyhow::Result<()> {
    let removals = plan(&client).await?;
    let copies = Copies::new(client.clone(), Events::new(client.clone(), "cleanup"));
    let mut failed = 0;
    for removal in &removals {
        if args.dry_run {
            println!("would remove {removal}");
            continue;
        }
        match apply(&client, &copies, removal).await {
            Ok(()) => println!("removed {removal}"),
            Err(error) => {
                failed += 1;
                eprintln!("could not remove {removal}: {error:#}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} could not be taken back (named above); the others were", removals.len());
    }
    Ok(())
}
