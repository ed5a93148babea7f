//! Everything a running process is configured with, as plain values: `cli` fills it from flags
//! and environment, `dev`, the tests and the benches build it directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::resolve::NamespaceRules;
use crate::serving::https::ConnectionLimits;
use crate::state::index::CatalogNamespaces;
use crate::webhook::http::RequestLimits;
use crate::webhook::{FailurePolicy, OnCopyFailure, Settings};

/// What a process runs. The chart runs the two parts as two Deployments with two identities:
/// the network-facing webhook needs none of the reconciler's rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The admission webhook (HTTPS) only.
    Webhook,
    /// The reconciler (one active holder of the Lease) only; no HTTPS listener.
    Reconciler,
    /// Both, in one process (`dev`, a single identity).
    All,
}

impl Role {
    pub fn serves_webhook(self) -> bool {
        self != Role::Reconciler
    }

    pub fn reconciles(self) -> bool {
        self != Role::Webhook
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub role: Role,
    /// HTTPS address for admission reviews (port 0: any free port).
    pub listen: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    pub admin_listen: SocketAddr,
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
    /// PEM CA bundle: when set, only clients with a certificate it signed (the API server) may
    /// connect.
    pub client_ca_file: Option<PathBuf>,
    /// With `client_ca_file`: the DNS name the client certificate must carry.
    pub client_name: Option<String>,
    /// Ready only once the chart's admission policy refuses an unguarded Secret for this
    /// process's identity (`policy_check`).
    pub check_admission_policy: bool,
    pub connections: ConnectionLimits,
    pub requests: RequestLimits,
    /// After shutdown begins, keep serving this long while readiness reports false.
    pub drain_delay: Duration,
    pub namespaces: NamespaceRules,
    /// Where catalogs count and source secrets are read.
    pub catalogs: CatalogNamespaces,
    pub admission: Settings,
    pub reconciler: ReconcilerConfig,
    /// This replica's name in the Lease and in the Events it publishes.
    pub identity: String,
}

#[derive(Clone, Debug)]
pub struct ReconcilerConfig {
    /// The Lease (in the webhook's own namespace) that picks the one replica reconciling.
    pub lease_name: String,
    pub lease_duration: Duration,
    pub cleanup_grace: Duration,
    pub heal_pods: bool,
}

pub const DEFAULT_NAMESPACE: &str = "olm-pullsecret-injector";

impl Default for Config {
    /// The defaults the flags document.
    fn default() -> Self {
        Config {
            role: Role::All,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            tls_cert_file: "/etc/webhook/certs/tls.crt".into(),
            tls_key_file: "/etc/webhook/certs/tls.key".into(),
            client_ca_file: None,
            client_name: None,
            check_admission_policy: true,
            connections: ConnectionLimits::default(),
            requests: RequestLimits::default(),
            drain_delay: Duration::from_secs(5),
            namespaces: NamespaceRules { own_namespace: DEFAULT_NAMESPACE.into(), ..NamespaceRules::default() },
            catalogs: CatalogNamespaces::default(),
            admission: Settings {
                failure_policy: FailurePolicy::Ignore,
                on_copy_failure: OnCopyFailure::Deny,
                deadline: Duration::from_secs(3),
                peers_verified: false,
            },
            reconciler: ReconcilerConfig {
                lease_name: "olm-pullsecret-injector".into(),
                lease_duration: Duration::from_secs(15),
                cleanup_grace: Duration::from_secs(600),
                heal_pods: false,
            },
            identity: default_identity(),
        }
    }
}

impl Config {
    /// The defaults with both ports on loopback, any free port, the pair in `cert_dir` and no
    /// drain delay: for `dev`, tests and benches.
    pub fn local(cert_dir: &std::path::Path) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Config {
            listen: loopback,
            admin_listen: loopback,
            tls_cert_file: cert_dir.join("tls.crt"),
            tls_key_file: cert_dir.join("tls.key"),
            drain_delay: Duration::ZERO,
            // `dev` runs as cluster-admin, whom the chart's policies do not bind.
            check_admission_policy: false,
            ..Config::default()
        }
    }
}

/// POD_NAME or the host name, with the process id: unique per replica and per restart.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "olm-pullsecret-injector".into());
    format!("{host}_{}", std::process::id())
}
