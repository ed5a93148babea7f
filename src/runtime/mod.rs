//! One running process, wired from a [`Config`]: watch caches, the resolver, the webhook, the
//! reconciler and its lease, the admin port and the HTTPS listener, with one readiness that turns
//! true once every part is ready and one shutdown signal that every part obeys. `serve`, `dev`,
//! the tests and the benches all start it here.

mod config;
pub mod policy_check;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

pub use config::{Config, DEFAULT_NAMESPACE, ReconcilerConfig, Role, default_identity};

use crate::context::Context;
use crate::error::Error;
use crate::reconciler::lease::{self, LeaseSettings};
use crate::reconciler::{self, Reconciler};
use crate::resolve::owners::{ApiOwners, Owners};
use crate::serving::lifecycle::{Readiness, Shutdown};
use crate::serving::tls::{CertReloader, ClientVerifier};
use crate::state::caches::Caches;
use crate::webhook::{DecisionRecord, Webhook};

/// How often the certificate files are checked for a new pair.
const TLS_POLL: Duration = Duration::from_secs(2);

/// A started process.
pub struct Running {
    /// The HTTPS address, when the process serves the webhook.
    pub webhook_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    shutdown: Shutdown,
    webhook: Option<Arc<Webhook>>,
    serving: JoinHandle<()>,
    election: Option<JoinHandle<()>>,
    admin_server: JoinHandle<()>,
}

/// A listener on `addr` and the address it got (port 0: any free port).
async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let error = |source| Error::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// Starts every part of `config.role`. The admin port answers at once (not ready); the HTTPS
/// listener is bound and served once the watch caches have synced, so that no review is answered
/// from empty caches.
pub async fn start(client: kube::Client, config: Config) -> Result<Running, Error> {
    let readiness = Readiness::default();
    let shutdown = Shutdown::default();
    let role = config.role;
    // A bad pair fails the start at once, not after the caches have synced.
    let tls = match role.serves_webhook() {
        true => Some(CertReloader::load(config.tls_cert_file.clone(), config.tls_key_file.clone())?),
        false => None,
    };

    let (admin, admin_addr) = bind("the admin port", config.admin_listen).await?;
    info!(addr = %admin_addr, ?role, "admin server listening");
    let admin_router = crate::serving::admin::router(readiness.clone());
    // The admin port outlives the drain (readiness must read false meanwhile): `stopped` ends it.
    let admin_server = tokio::spawn(async move {
        let limits = crate::serving::https::ConnectionLimits::admin();
        crate::serving::https::serve_plain(admin, admin_router, limits, std::future::pending()).await;
    });

    if config.check_admission_policy {
        let (client, namespace) = (client.clone(), config.namespaces.own_namespace.clone());
        tokio::spawn(until(
            shutdown.clone(),
            policy_check::hold_readiness_until_in_force(client, namespace, readiness.clone()),
        ));
    }
    let caches_synced = readiness.pending("watch caches");
    let caches = Caches::start(client.clone(), config.catalogs.clone());
    let owners = Owners::new(ApiOwners(client.clone()));
    let ctx = Context::new(client.clone(), caches.clone(), owners, config.namespaces.clone(), &config.identity);
    // Every part follows the ledger: admission forgets copies deleted behind its back.
    let ledger = reconciler::follow_ledger(&ctx);

    let election = role.reconciles().then(|| {
        let synced = readiness.pending("reconciler caches");
        let options = reconciler::Options {
            cleanup_grace: config.reconciler.cleanup_grace,
            heal_pods: config.reconciler.heal_pods,
        };
        let reconciler = Reconciler::start(ctx.clone(), options, ledger);
        let (leading_tx, leading) = watch::channel(None);
        tokio::spawn(reconciler.run(leading, synced));
        let lease = LeaseSettings {
            namespace: config.namespaces.own_namespace.clone(),
            name: config.reconciler.lease_name.clone(),
            identity: config.identity.clone(),
            duration: config.reconciler.lease_duration,
        };
        tokio::spawn(lease::run(client, lease, leading_tx, {
            let shutdown = shutdown.clone();
            async move { shutdown.begun().await }
        }))
    });
    let listening = role.serves_webhook().then(|| readiness.pending("https listener"));

    caches.wait_synced().await;
    caches_synced.ready();

    let drain = {
        let (shutdown, readiness, drain_delay) = (shutdown.clone(), readiness.clone(), config.drain_delay);
        async move {
            shutdown.begun().await;
            info!(?drain_delay, "shutdown requested: readiness off, draining");
            readiness.start_draining();
            tokio::time::sleep(drain_delay).await;
        }
    };
    let (webhook, webhook_addr, serving) = match (listening, tls) {
        (Some(listening), Some(tls)) => {
            tokio::spawn(until(shutdown.clone(), tls.clone().watch(TLS_POLL)));
            let (listener, addr) = bind("--listen", config.listen).await?;
            info!(%addr, "webhook listening");
            listening.ready();
            let webhook = Arc::new(Webhook::new(ctx, config.admission.clone()));
            let router = crate::router(webhook.clone(), config.requests.clone());
            let clients = match config.client_ca_file.clone() {
                Some(ca_file) => {
                    let clients = ClientVerifier::load(ca_file, config.client_name.as_deref())?;
                    tokio::spawn(until(shutdown.clone(), clients.clone().watch(TLS_POLL)));
                    Some(clients)
                }
                None => {
                    warn!(
                        "no client CA (--client-ca-file): reviews are taken from any peer that reaches the port; each is \
                         counted in pullsecret_injector_unverified_reviews_total"
                    );
                    None
                }
            };
            let tls = tls.server_config(clients);
            let serving = crate::serving::https::serve_tls(listener, tls, router, config.connections.clone(), drain);
            (Some(webhook), Some(addr), tokio::spawn(serving))
        }
        // The reconciler alone has nothing to drain but its readiness.
        _ => (None, None, tokio::spawn(drain)),
    };
    Ok(Running { webhook_addr, admin_addr, shutdown, webhook, serving, election, admin_server })
}

/// Runs `task` until shutdown begins.
async fn until(shutdown: Shutdown, task: impl Future<Output = ()>) {
    tokio::select! {
        () = task => {}
        () = shutdown.begun() => {}
    }
}

impl Running {
    /// The one signal: readiness turns false, the lease is released, the HTTPS listener drains.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Every decision from now on, as logged (when the process serves the webhook).
    pub fn decisions(&self) -> Option<broadcast::Receiver<Arc<DecisionRecord>>> {
        self.webhook.as_ref().map(|w| w.follow_decisions())
    }

    /// Resolves once the process has stopped: in-flight reviews finished, the lease released.
    pub async fn stopped(self) {
        let _ = self.serving.await;
        if let Some(election) = self.election {
            let _ = tokio::time::timeout(Duration::from_secs(2), election).await;
        }
        self.admin_server.abort();
        info!("stopped");
    }
}
