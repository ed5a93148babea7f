//! `kubectl olm-pullsecret ...`: the same binary installed as `kubectl-olm_pullsecret` (a second
//! bin target) for administrators: `explain` with kubectl's flags and exit codes a script can use,
//! `cleanup`, and shell completion.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{CommandFactory, Parser, Subcommand};

use super::{CatalogArgs, ScopeArgs, cleanup, explain};

#[derive(Parser, Debug)]
#[command(name = "kubectl-olm_pullsecret", bin_name = "kubectl olm-pullsecret", version, about)]
pub struct Plugin {
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: the current one).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace of `pod/<name>` or `sa/<name>` (default: the context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Why a Pod or ServiceAccount has (or lacks) its pull secrets. Exit code 0: it has every
    /// secret it needs (or needs none); 1: something is missing; 2: an error.
    Explain(PluginExplain),
    /// Take back every copy and ServiceAccount entry the project made (after an uninstall).
    Cleanup(cleanup::CleanupArgs),
    /// A completion script for the shell.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct PluginExplain {
    /// `pod/<name>` or `sa/<name>` (in `-n`), or `pod/<namespace>/<name>`.
    target: String,
    #[arg(short = 'o', long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// The webhook's release namespace (never mutated).
    #[arg(long, env = "PSI_WEBHOOK_NAMESPACE", default_value = crate::runtime::DEFAULT_NAMESPACE)]
    webhook_namespace: String,
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    catalogs: CatalogArgs,
}

/// Runs the plugin; usage errors exit 2 (clap's), so do failures.
pub fn main() -> ExitCode {
    let plugin = Plugin::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return failed(e.into()),
    };
    runtime.block_on(run(plugin)).unwrap_or_else(failed)
}

fn failed(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(2)
}

async fn run(plugin: Plugin) -> anyhow::Result<ExitCode> {
    let client = match &plugin.command {
        PluginCommand::Completion { shell } => {
            clap_complete::generate(*shell, &mut Plugin::command(), "kubectl-olm_pullsecret", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        _ => client(plugin.kubeconfig, plugin.context).await?,
    };
    match plugin.command {
        PluginCommand::Explain(args) => {
            let namespace = plugin.namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let target = qualified(&args.target, &namespace)?;
            let rules = args.scope.rules(args.webhook_namespace);
            let report = explain::explain(client, &target, rules, args.catalogs.into()).await?;
            match args.output.as_str() {
                "json" => println!("{}", serde_json::to_string_pretty(&report)?),
                _ => report.print(),
            }
            Ok(if report.missing_something() { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
        PluginCommand::Cleanup(args) => cleanup::run(client, args).await.map(|()| ExitCode::SUCCESS),
        PluginCommand::Completion { .. } => unreachable!("answered above"),
    }
}

/// A client for `kubeconfig` (or the usual places) and `context`.
async fn client(kubeconfig: Option<PathBuf>, context: Option<String>) -> anyhow::Result<kube::Client> {
    let options = kube::config::KubeConfigOptions { context, ..Default::default() };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(&path).with_context(|| format!("reading {path:?}"))?;
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        None => kube::Config::from_kubeconfig(&options).await?,
    };
    crate::api_client::from_config(config).context("connecting to the Kubernetes API")
}

/// `kind/name` in `namespace`, or `kind/namespace/name` as given.
fn qualified(target: &str, namespace: &str) -> anyhow::Result<String> {
    match target.split('/').count() {
        2 => {
            let (kind, name) = target.split_once('/').expect("two parts");
            Ok(format!("{kind}/{namespace}/{name}"))
        }
        3 => Ok(target.to_string()),
        _ => bail!("expected pod/<name>, sa/<name> or pod/<namespace>/<name>, got {target:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_the_namespace_of_n_unless_they_name_one() {
        assert_eq!(qualified("pod/web", "team").unwrap(), "pod/team/web");
        assert_eq!(qualified("sa/other/app", "team").unwrap(), "sa/other/app");
        assert!(qualified("web", "team").is_err());
    }

    #[test]
    fn kubectl_flags_parse_before_and_after_the_command() {
        let plugin =
            Plugin::try_parse_from(["kubectl-olm_pullsecret", "-n", "team", "explain", "pod/web", "--context", "prod"])
                .unwrap();
        assert_eq!((plugin.namespace.as_deref(), plugin.context.as_deref()), (Some("team"), Some("prod")));
        assert!(Plugin::try_parse_from(["kubectl-olm_pullsecret", "completion", "fish"]).is_ok());
        Plugin::command().debug_assert();
    }
}
