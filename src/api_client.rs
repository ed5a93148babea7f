//! The client of the Kubernetes API, for every command: kube's own layers (base URI, credentials
//! and their refresh, impersonation, retries of 429/503/504) over connections that speak HTTP/2
//! when the API server offers it, as client-go's do.
//!
//! Over HTTP/1.1 every request in flight needs a connection of its own, and the watches hold
//! theirs: a new namespace's first Pods, whose owner lookups all start in the same millisecond,
//! opened a dozen TLS connections at once, each a handshake on the API server's CPU when it is
//! busiest (the bursts bench: lookups of 45 ms instead of 2). Over HTTP/2 the lookups and the
//! watches share one connection, and pings find it dead (client-go's `ReadIdleTimeout`) instead
//! of its streams waiting on it.

use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

/// A ping after this long without a frame from the API server...
const PING_INTERVAL: Duration = Duration::from_secs(30);
/// ...that is not answered within this closes the connection (client-go: 30 s and 15 s).
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// The client for `config`.
pub fn from_config(config: kube::Config) -> Result<kube::Client, kube::Error> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let mut tls =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config.rustls_client_config()?).https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = name
            .clone()
            .try_into()
            .map_err(|e| kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e)))?;
        tls = tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    // kube's own timeouts on connecting, reading and writing, as its default client has them.
    let mut connector = TimeoutConnector::new(tls.enable_http1().enable_http2().wrap_connector(tcp));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = HyperClient::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_INTERVAL)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| RetryLayer::new(RetryPolicy::server_retry())))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(kube::Client::new(service, config.default_namespace))
}

/// The client for the configuration found where kube looks for it: in a Pod, its service
/// account; elsewhere `KUBECONFIG` or `~/.kube/config`.
pub async fn infer() -> Result<kube::Client, kube::Error> {
    from_config(kube::Config::infer().await.map_err(kube::Error::InferConfig)?)
}
