//! The HTTPS listener: TLS via tokio-rustls, HTTP/1.1 with keep-alive via hyper, and a graceful
//! stop that finishes in-flight requests and closes idle connections.
//!
//! Any pod in the cluster can reach this port, so every connection is bounded: a TLS handshake
//! and a request head must each arrive within their timeouts (the head timeout also ends an idle
//! keep-alive connection), and connections beyond `max_connections` are closed as soon as they
//! are accepted. Request bodies and reviews in flight are bounded by the webhook's router.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// In-flight requests get this long to finish once shutdown starts.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on what one client can hold of the server.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub handshake_timeout: Duration,
    /// For a request's head, and for the next request on an idle keep-alive connection.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            // The API server keeps a few connections per replica; idle attackers time out.
            max_connections: 4096,
        }
    }
}

pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            crate::telemetry::metrics::connection_refused();
            debug!(%peer, "connection closed: at the connection limit");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    info!("stopped accepting; finishing in-flight requests");
    if tokio::time::timeout(FINISH_TIMEOUT, graceful.shutdown()).await.is_err() {
        warn!("in-flight requests did not finish within {FINISH_TIMEOUT:?}");
    }
}
