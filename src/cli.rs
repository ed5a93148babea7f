//! Command line: every flag also reads an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing::{info, warn};

use crate::admin::Readiness;
use crate::admission::{OnCopyFailure, Settings, Webhook};
use crate::caches::Caches;
use crate::copies::Copies;
use crate::events::Events;
use crate::lease::LeaseSettings;
use crate::owners::Owners;
use crate::reconciler::{self, Reconciler};
use crate::tls::CertReloader;
use tokio::sync::watch;

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
    Dev(crate::dev::DevArgs),
    /// Write a development CA and serving certificate (keys are git-ignored).
    Certs(CertsArgs),
    /// Explain, against a live cluster, why a Pod or ServiceAccount has (or lacks) pull secrets.
    Explain(crate::explain::ExplainArgs),
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Output directory for ca.crt, tls.crt and tls.key.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// DNS names of the serving certificate.
    #[arg(long = "dns-name", default_values_t = ["olm-pullsecret-injector.olm-pullsecret-injector.svc".to_string(), "localhost".to_string()])]
    pub dns_names: Vec<String>,
    /// IP addresses of the serving certificate.
    #[arg(long = "ip", default_values_t = [std::net::IpAddr::from([127, 0, 0, 1])])]
    pub ips: Vec<std::net::IpAddr>,
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
    /// HTTPS address for admission reviews.
    #[arg(long, env = "PSI_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain, reloaded when it changes.
    #[arg(long, env = "PSI_TLS_CERT_FILE", default_value = "/etc/webhook/certs/tls.crt")]
    pub tls_cert_file: PathBuf,
    /// PEM private key, reloaded when it changes.
    #[arg(long, env = "PSI_TLS_KEY_FILE", default_value = "/etc/webhook/certs/tls.key")]
    pub tls_key_file: PathBuf,
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
    /// The webhook's own namespace (never mutated).
    #[arg(long, env = "POD_NAMESPACE", default_value = "olm-pullsecret-injector")]
    pub namespace: String,
    /// Further namespaces to leave alone (repeat or comma-separate).
    #[arg(long, env = "PSI_EXCLUDE_NAMESPACE", value_delimiter = ',')]
    pub exclude_namespace: Vec<String>,
    /// What to do with a Pod whose secrets could not be copied.
    #[arg(long, env = "PSI_ON_COPY_FAILURE", value_enum, default_value = "deny")]
    pub on_copy_failure: OnCopyFailure,
    /// Internal deadline per review; keep it below the webhook's timeoutSeconds.
    #[arg(long, env = "PSI_DEADLINE", default_value = "3s", value_parser = parse_duration)]
    pub deadline: Duration,
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

impl Default for ReconcilerArgs {
    /// What the flags default to (and their environment variables say), for `dev` and benches.
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            reconciler: ReconcilerArgs,
        }
        Defaults::parse_from(["defaults"]).reconciler
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

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
            serve_with(client, *args).await
        }
        Command::Dev(args) => crate::dev::run(args).await,
        Command::Explain(args) => {
            let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
            crate::explain::run(client, args).await
        }
        Command::Certs(args) => {
            let certs = crate::certs::generate(&args.dns_names, &args.ips)?;
            crate::certs::write(&args.dir, &certs)?;
            println!("wrote {}/ca.crt, tls.crt and tls.key", args.dir.display());
            Ok(())
        }
    }
}

/// Runs the webhook until SIGTERM/SIGINT: admin port at once, HTTPS once the caches synced.
pub async fn serve_with(client: kube::Client, args: ServeArgs) -> anyhow::Result<()> {
    let tls = CertReloader::load(args.server.tls_cert_file.clone(), args.server.tls_key_file.clone())?;
    tokio::spawn(tls.clone().watch(Duration::from_secs(2)));

    let caches = Caches::start(client.clone());
    let readiness = Arc::new(Readiness { caches: caches.clone(), draining: Default::default() });
    let admin = tokio::net::TcpListener::bind(args.admin.admin_listen).await.context("binding --admin-listen")?;
    info!(addr = %admin.local_addr()?, "admin server listening");
    let readiness_for_drain = readiness.clone();
    tokio::spawn(async move { axum::serve(admin, crate::admin::router(readiness)).await });

    caches.wait_synced().await;
    let settings = Settings {
        own_namespace: args.webhook.namespace,
        excluded_namespaces: args.webhook.exclude_namespace,
        on_copy_failure: args.webhook.on_copy_failure,
        deadline: args.webhook.deadline,
    };
    let identity = args.reconciler.identity.unwrap_or_else(default_identity);
    let events = Events::new(client.clone(), &identity);
    let owners = Arc::new(Owners::new(client.clone()));
    let copies = Arc::new(Copies::new(client.clone(), events.clone()));
    let webhook = Arc::new(Webhook::new(settings.clone(), caches.clone(), owners.clone(), copies.clone()));

    let options =
        reconciler::Options { cleanup_grace: args.reconciler.cleanup_grace, heal_pods: args.reconciler.heal_pods };
    let lease = LeaseSettings {
        namespace: settings.own_namespace.clone(),
        name: args.reconciler.lease_name,
        identity,
        duration: args.reconciler.lease_duration,
    };
    let reconciler = Reconciler::start(settings, options, client.clone(), caches, owners, copies, events);
    let (leading_tx, leading) = watch::channel(false);
    tokio::spawn(reconciler.run(leading));
    let (stopping_tx, mut stopping) = watch::channel(false);
    let election = tokio::spawn(crate::lease::run(client, lease, leading_tx, async move {
        let _ = stopping.wait_for(|s| *s).await;
    }));

    let listener = tokio::net::TcpListener::bind(args.server.listen).await.context("binding --listen")?;
    info!(addr = %listener.local_addr()?, "webhook listening");

    let drain_delay = args.server.drain_delay;
    let shutdown = async move {
        wait_for_signal().await;
        info!(?drain_delay, "shutdown requested: readiness off, draining");
        readiness_for_drain.draining.store(true, Ordering::SeqCst);
        // Hand the reconciler over at once rather than after the lease expires.
        stopping_tx.send_replace(true);
        // A second signal aborts at once.
        tokio::spawn(async {
            wait_for_signal().await;
            warn!("second signal: aborting");
            std::process::exit(130);
        });
        tokio::time::sleep(drain_delay).await;
    };
    crate::server::serve_tls(listener, tls.server_config(), crate::router(webhook), shutdown).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), election).await;
    info!("stopped");
    Ok(())
}

fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "olm-pullsecret-injector".into());
    format!("{host}_{}", std::process::id())
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
