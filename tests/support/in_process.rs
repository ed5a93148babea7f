//! The webhook served from this process (benches): `serve` with its default settings, on the
//! certificate pair in `dir`, against the test control plane.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use olm_pullsecret_injector::cli::{AdminArgs, ServeArgs, ServerArgs, WebhookArgs};

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Starts `serve` (webhook and reconciler) with `dir/tls.crt` and `dir/tls.key`; returns once it
/// accepts connections.
pub async fn serve(client: kube::Client, dir: &Path) -> SocketAddr {
    let listen = free_addr();
    let args = ServeArgs {
        server: ServerArgs {
            listen,
            tls_cert_file: dir.join("tls.crt"),
            tls_key_file: dir.join("tls.key"),
            drain_delay: Duration::ZERO,
        },
        admin: AdminArgs { admin_listen: free_addr() },
        webhook: WebhookArgs {
            namespace: super::webhook::NAMESPACE.into(),
            exclude_namespace: vec![],
            on_copy_failure: olm_pullsecret_injector::admission::OnCopyFailure::Deny,
            deadline: Duration::from_secs(3),
        },
        reconciler: Default::default(),
    };
    super::create_namespace_if_missing(&client, super::webhook::NAMESPACE).await;
    tokio::spawn(olm_pullsecret_injector::cli::serve_with(client, args));
    while tokio::net::TcpStream::connect(listen).await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    listen
}
