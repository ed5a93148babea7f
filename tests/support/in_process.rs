//! The webhook served from this process (benches): the runtime with its default settings, on the
//! certificate pair in `dir`, against the test control plane.

use std::net::SocketAddr;
use std::path::Path;

use olm_pullsecret_injector::runtime::{self, Config};

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Starts the runtime (webhook and reconciler) with `dir/tls.crt` and `dir/tls.key`; returns
/// once it accepts connections.
pub async fn serve(client: kube::Client, dir: &Path) -> SocketAddr {
    let config = Config { namespaces: namespace_rules(), ..Config::local(dir) };
    super::create_namespace_if_missing(&client, super::webhook::NAMESPACE).await;
    let running = runtime::start(client, config).await.expect("the runtime starts");
    running.webhook_addr
}

fn namespace_rules() -> olm_pullsecret_injector::resolve::NamespaceRules {
    olm_pullsecret_injector::resolve::NamespaceRules {
        own_namespace: super::webhook::NAMESPACE.into(),
        excluded_namespaces: vec![],
    }
}
