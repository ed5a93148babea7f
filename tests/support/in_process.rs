//! The webhook served from this process (benches): the runtime with its default settings, on the
//! certificate pair in `dir`, against the test control plane.

use std::net::SocketAddr;
use std::path::Path;

use olm_pullsecret_injector::runtime::{self, Config};
use olm_pullsecret_injector::state::index::CatalogNamespaces;

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Starts the runtime (webhook and reconciler) with `dir/tls.crt` and `dir/tls.key`; returns
/// once it accepts connections.
pub async fn serve(client: kube::Client, dir: &Path) -> SocketAddr {
    let catalogs = CatalogNamespaces {
        global: super::olm::GLOBAL_CATALOGS.into(),
        private: vec![super::olm::SELF_HOSTED_CATALOGS.into()],
    };
    let config = Config { namespaces: namespace_rules(), catalogs, ..Config::local(dir) };
    for namespace in [super::webhook::NAMESPACE, super::olm::GLOBAL_CATALOGS, super::olm::SELF_HOSTED_CATALOGS] {
        super::create_namespace_if_missing(&client, namespace).await;
    }
    install_ledger(&client).await;
    let running = runtime::start(client, config).await.expect("the runtime starts");
    running.webhook_addr.expect("the default role serves the webhook")
}

fn namespace_rules() -> olm_pullsecret_injector::resolve::NamespaceRules {
    olm_pullsecret_injector::resolve::NamespaceRules {
        own_namespace: super::webhook::NAMESPACE.into(),
        ..Default::default()
    }
}

/// The ledger's CRD, as the chart installs it, once it is served.
pub async fn install_ledger(client: &kube::Client) {
    let crd: serde_json::Value = serde_json::from_str(olm_pullsecret_injector::commands::dev::LEDGER_CRD).unwrap();
    super::helm::apply(client, &crd, false).await.unwrap();
    let ledger = kube::Api::<olm_pullsecret_injector::inject::ledger::PullSecretCopy>::all(client.clone());
    super::eventually("the ledger of copies to be served", std::time::Duration::from_secs(20), || async {
        ledger.list(&Default::default()).await.ok().map(drop)
    })
    .await;
}
