//! Command line: turns flags (every one also read from an environment variable) into a
//! [`Config`] or a command's arguments, and runs the command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tracing::warn;

use crate::commands;
use crate::runtime::{self, Config, ReconcilerConfig, Role};
use crate::webhook::{FailurePolicy, OnCopyFailure, Settings};

#[derive(Parser, Debug)]
#[command(name = "olm-pullsecret-injector", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "PSI_LOG_FORMAT", default_value = "json", global = true, value_parser = ["json", "text"])]
    pub log_format: String,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the admission webhook.
    Serve(Box<ServeArgs>),
    /// Start the local control plane with the webhook registered and a sample operator.
    Dev(commands::dev::DevArgs),
    /// Write a development CA and serving certificate (keys are git-ignored).
    Certs(commands::certs::CertsArgs),
    /// Explain, against a live cluster, why a Pod or ServiceAccount has (or lacks) pull secrets.
    Explain(commands::explain::ExplainArgs),
    /// Take back every copy and ServiceAccount entry the project made (after an uninstall).
    Cleanup(commands::cleanup::CleanupArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub admin: AdminArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub reconciler: ReconcilerArgs,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// What this process runs: the admission webhook, the reconciler (one active holder of the
    /// Lease), or both. The chart runs them apart, each with its own identity.
    #[arg(long, env = "PSI_ROLE", default_value = "all", value_parser = parse_role)]
    pub role: Role,
    /// HTTPS address for admission reviews.
    #[arg(long, env = "PSI_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain, reloaded when it changes.
    #[arg(long, env = "PSI_TLS_CERT_FILE", default_value = "/etc/webhook/certs/tls.crt")]
    pub tls_cert_file: PathBuf,
    /// PEM private key, reloaded when it changes.
    #[arg(long, env = "PSI_TLS_KEY_FILE", default_value = "/etc/webhook/certs/tls.key")]
    pub tls_key_file: PathBuf,
    /// PEM CA bundle of the API server's client certificate: when set, callers without a
    /// certificate it signed are refused during the TLS handshake.
    #[arg(long, env = "PSI_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// With --client-ca-file: also require this DNS name in the client certificate's
    /// subjectAltName, so that a CA shared with other clients is not blanket trust.
    #[arg(long, env = "PSI_CLIENT_NAME", requires = "client_ca_file")]
    pub client_name: Option<String>,
    /// MiB of request bodies held at once (each reserved before it is read; past it a fast
    /// 503). Default: a quarter of the process's cgroup memory limit, between 8 and 256 MiB.
    #[arg(long, env = "PSI_BODY_BUDGET_MIB")]
    pub body_budget_mib: Option<usize>,
    /// Report ready only once the chart's ValidatingAdmissionPolicy refuses, for this process's
    /// identity, a dry-run Secret it must not write (off only with the chart's
    /// admissionPolicy.enabled=false and acceptUnguardedSecretWrites=true).
    #[arg(long, env = "PSI_CHECK_ADMISSION_POLICY", default_value_t = true, action = clap::ArgAction::Set)]
    pub check_admission_policy: bool,
    /// After SIGTERM, keep serving this long while readiness reports false.
    #[arg(long, env = "PSI_DRAIN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,
}

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "PSI_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
}

#[derive(Args, Debug)]
pub struct WebhookArgs {
    #[command(flatten)]
    pub namespaces: commands::NamespaceArgs,
    /// The webhook configuration's failurePolicy (the chart passes the same value): a review not
    /// decided within --deadline is answered as it says (Ignore: admitted without a patch; Fail:
    /// a Pod denied, retryably).
    #[arg(long, env = "PSI_FAILURE_POLICY", default_value = "Ignore", value_parser = parse_failure_policy)]
    pub failure_policy: FailurePolicy,
    /// What to do with a Pod whose secrets could not be copied: deny (retryable 503) or allow.
    #[arg(long, env = "PSI_ON_COPY_FAILURE", default_value = "deny", value_parser = parse_on_copy_failure)]
    pub on_copy_failure: OnCopyFailure,
    /// Internal deadline per review; keep it below the webhook's timeoutSeconds.
    #[arg(long, env = "PSI_DEADLINE", default_value = "3s", value_parser = parse_duration)]
    pub deadline: Duration,
    #[command(flatten)]
    pub catalogs: commands::CatalogArgs,
}

#[derive(Args, Debug)]
pub struct ReconcilerArgs {
    /// The Lease (in --namespace) that picks the one replica running the reconciler.
    #[arg(long, env = "PSI_LEASE_NAME", default_value = "olm-pullsecret-injector")]
    pub lease_name: String,
    /// How long a lease holder that stopped renewing keeps it.
    #[arg(long, env = "PSI_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long a copy whose source is no longer offered to its namespace stays before it is
    /// deleted (and its names taken off service accounts).
    #[arg(long, env = "PSI_CLEANUP_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub cleanup_grace: Duration,
    /// Delete controller-owned Pods that were admitted without the secrets they need, so their
    /// controller recreates them through the webhook.
    #[arg(long, env = "PSI_HEAL_PODS")]
    pub heal_pods: bool,
    /// This replica's name in the Lease (default: POD_NAME or the host name, with the process id).
    #[arg(long, env = "PSI_IDENTITY")]
    pub identity: Option<String>,
}

impl ServeArgs {
    pub fn into_config(self) -> Config {
        let peers_verified = self.server.client_ca_file.is_some();
        Config {
            role: self.server.role,
            listen: self.server.listen,
            admin_listen: self.admin.admin_listen,
            tls_cert_file: self.server.tls_cert_file,
            tls_key_file: self.server.tls_key_file,
            client_ca_file: self.server.client_ca_file,
            client_name: self.server.client_name,
            check_admission_policy: self.server.check_admission_policy,
            connections: Default::default(),
            requests: crate::webhook::http::RequestLimits {
                body_budget_bytes: match self.server.body_budget_mib {
                    Some(mib) => mib.saturating_mul(1024 * 1024),
                    None => crate::webhook::http::body_budget_from_memory_limit(),
                },
                ..Default::default()
            },
            drain_delay: self.server.drain_delay,
            namespaces: self.webhook.namespaces.into(),
            catalogs: self.webhook.catalogs.into(),
            admission: Settings {
                failure_policy: self.webhook.failure_policy,
                on_copy_failure: self.webhook.on_copy_failure,
                deadline: self.webhook.deadline,
                peers_verified,
            },
            reconciler: ReconcilerConfig {
                lease_name: self.reconciler.lease_name,
                lease_duration: self.reconciler.lease_duration,
                cleanup_grace: self.reconciler.cleanup_grace,
                heal_pods: self.reconciler.heal_pods,
            },
            identity: self.reconciler.identity.unwrap_or_else(runtime::default_identity),
        }
    }
}

/// `500ms`, `3s`, `10m` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("invalid duration {text:?}"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in {text:?} (use ms, s, m or h)")),
    })
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "webhook" => Ok(Role::Webhook),
        "reconciler" => Ok(Role::Reconciler),
        "all" => Ok(Role::All),
        _ => Err(format!("{text:?}: use webhook, reconciler or all")),
    }
}

fn parse_failure_policy(text: &str) -> Result<FailurePolicy, String> {
    match text {
        "Ignore" => Ok(FailurePolicy::Ignore),
        "Fail" => Ok(FailurePolicy::Fail),
        _ => Err(format!("{text:?}: use Ignore or Fail")),
    }
}

fn parse_on_copy_failure(text: &str) -> Result<OnCopyFailure, String> {
    match text {
        "deny" => Ok(OnCopyFailure::Deny),
        "allow" => Ok(OnCopyFailure::Allow),
        _ => Err(format!("{text:?}: use deny or allow")),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let client = crate::api_client::infer().await.context("connecting to the Kubernetes API")?;
            serve(client, args.into_config()).await
        }
        Command::Dev(args) => commands::dev::run(args).await,
        Command::Explain(args) => {
            let client = crate::api_client::infer().await.context("connecting to the Kubernetes API")?;
            commands::explain::run(client, args).await
        }
        Command::Cleanup(args) => {
            let client = crate::api_client::infer().await.context("connecting to the Kubernetes API")?;
            commands::cleanup::run(client, args).await
        }
        Command::Certs(args) => commands::certs::run(args),
    }
}

/// Runs the process until SIGTERM or SIGINT, then drains; a second signal aborts at once.
async fn serve(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let running = tokio::select! {
        running = runtime::start(client, config) => running?,
        () = wait_for_signal() => return Ok(()),
    };
    let shutdown = running.shutdown().clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.begin();
        wait_for_signal().await;
        warn!("second signal: aborting");
        std::process::exit(130);
    });
    running.stopped().await;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_flags_give_the_runtime_defaults() {
        let Command::Serve(args) = Cli::parse_from(["psi", "serve"]).command else { unreachable!() };
        let (parsed, default) = (args.into_config(), Config::default());
        assert_eq!(
            format!("{:?}", Config { identity: String::new(), ..parsed }),
            format!("{:?}", Config { identity: String::new(), ..default })
        );
    }

    #[test]
    fn durations_and_failure_modes_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert!(parse_duration("5d").is_err());
        assert_eq!(parse_on_copy_failure("allow"), Ok(OnCopyFailure::Allow));
        assert!(parse_on_copy_failure("maybe").is_err());
        assert_eq!(parse_failure_policy("Fail"), Ok(FailurePolicy::Fail));
        assert!(parse_failure_policy("ignore").is_err(), "spelled as in the webhook configuration");
        assert_eq!(parse_role("reconciler"), Ok(Role::Reconciler));
        assert!(parse_role("both").is_err());
    }

    #[test]
    fn only_openshift_namespaces_can_be_included() {
        let parsed = Cli::try_parse_from(["psi", "serve", "--include-namespace", "openshift-gitops,openshift-logging"]);
        let Command::Serve(args) = parsed.unwrap().command else { unreachable!() };
        assert_eq!(args.into_config().namespaces.included_namespaces, ["openshift-gitops", "openshift-logging"]);
        assert!(Cli::try_parse_from(["psi", "serve", "--include-namespace", "kube-system"]).is_err());
    }
}
