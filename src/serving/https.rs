//! The listeners: HTTPS (TLS via tokio-rustls) for the webhook and plain HTTP for the admin port,
//! HTTP/1.1 with keep-alive via hyper, and a graceful stop that finishes in-flight requests and
//! closes idle connections.
//!
//! Any pod in the cluster may reach either port, so every connection is bounded: a TLS handshake
//! and a request head must each arrive within their timeouts (the head timeout also ends an idle
//! keep-alive connection), a write that makes no progress for the write timeout ends its
//! connection, a head is read into a buffer of at most `MAX_HEAD_BUFFER`, and
//! connections beyond `max_connections`, or beyond `max_connections_per_peer` from one address,
//! are closed as soon as they are accepted. Request bodies and reviews in flight are bounded by
//! the webhook's router.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::write_timeout::WriteTimeout;

/// In-flight requests get this long to finish once shutdown starts.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// hyper's read buffer per connection (its default is about 400 KiB): a request head, and a
/// body's chunk at a time. 4,096 connections trickling heads then hold at most 64 MiB.
const MAX_HEAD_BUFFER: usize = 16 * 1024;

/// Bounds on what one client can hold of the server.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub handshake_timeout: Duration,
    /// For a request's head, and for the next request on an idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// A write (an answer, a TLS record) that makes no progress for this long ends the
    /// connection: a peer that stops reading holds nothing longer.
    pub write_timeout: Duration,
    pub max_connections: usize,
    /// Connections from one address: one client (a pod, a node) cannot take all of them.
    pub max_connections_per_peer: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            // The API server keeps a few connections per replica; idle attackers time out.
            max_connections: 4096,
            // As many as reviews may be in flight: the API server opens one per concurrent call.
            max_connections_per_peer: 512,
        }
    }
}

impl ConnectionLimits {
    /// The admin port's: the kubelet's probes and a metrics scraper or two.
    pub fn admin() -> Self {
        ConnectionLimits { max_connections: 256, max_connections_per_peer: 64, ..ConnectionLimits::default() }
    }
}

/// Connections open per peer address; an entry goes with its last connection.
#[derive(Default)]
struct PerPeer(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its peer until dropped.
struct PeerSlot(Arc<PerPeer>, IpAddr);

impl PerPeer {
    fn take(self: &Arc<Self>, peer: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut open = self.0.lock().expect("per-peer counts");
        let count = open.entry(peer).or_insert(0);
        (*count < max).then(|| {
            *count += 1;
            PeerSlot(self.clone(), peer)
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = (self.0).0.lock().expect("per-peer counts");
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// The webhook's HTTPS listener.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, Some(TlsAcceptor::from(tls)), app, limits, shutdown).await
}

/// The admin port's plain-HTTP listener, with the same bounds.
pub async fn serve_plain(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, None, app, limits, shutdown).await
}

async fn serve(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let per_peer = Arc::new(PerPeer::default());
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
        let Some(slot) = per_peer.take(peer.ip(), limits.max_connections_per_peer) else {
            crate::telemetry::metrics::connection_refused();
            debug!(%peer, "connection closed: at the limit of connections from one address");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tcp = WriteTimeout::new(tcp, limits.write_timeout);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            let http = || {
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(limits.header_read_timeout)
                    .max_buf_size(MAX_HEAD_BUFFER)
                    .keep_alive(true);
                http
            };
            let served = match acceptor {
                None => watcher.watch(http().serve_connection(TokioIo::new(tcp), service)).await,
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return debug!(%peer, "TLS handshake timed out"),
                    };
                    watcher.watch(http().serve_connection(TokioIo::new(tls), service)).await
                }
            };
            if let Err(e) = served {
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
