//! Serving certificate and key from files, reloaded without a restart. Secret volumes change by
//! an atomic symlink swap, so the files are polled; a new pair is used only when it parses and
//! the key matches the certificate, otherwise the old pair stays and an error is logged.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tracing::{error, info};

use crate::error::Error;

#[derive(Debug)]
pub struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: ArcSwap<CertifiedKey>,
    /// Digest of the files the current pair was loaded from.
    loaded_from: std::sync::Mutex<[u8; 32]>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pair(cert_file: &Path, key_file: &Path) -> Result<(CertifiedKey, [u8; 32]), Error> {
    let cert_pem = std::fs::read(cert_file).map_err(|e| Error::Tls(format!("{}: {e}", cert_file.display())))?;
    let key_pem = std::fs::read(key_file).map_err(|e| Error::Tls(format!("{}: {e}", key_file.display())))?;
    let digest: [u8; 32] = Sha256::new().chain_update(&cert_pem).chain_update(&key_pem).finalize().into();
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", cert_file.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!("{}: no certificate", cert_file.display())));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| Error::Tls(format!("{}: {e}", key_file.display())))?
        .ok_or_else(|| Error::Tls(format!("{}: no private key", key_file.display())))?;
    let key = provider().key_provider.load_private_key(key).map_err(|e| Error::Tls(e.to_string()))?;
    let pair = CertifiedKey::new(certs, key);
    pair.keys_match().map_err(|e| Error::Tls(format!("key does not match certificate: {e}")))?;
    Ok((pair, digest))
}

impl CertReloader {
    pub fn load(cert_file: PathBuf, key_file: PathBuf) -> Result<Arc<Self>, Error> {
        let (pair, digest) = read_pair(&cert_file, &key_file)?;
        Ok(Arc::new(CertReloader {
            cert_file,
            key_file,
            current: ArcSwap::from_pointee(pair),
            loaded_from: std::sync::Mutex::new(digest),
        }))
    }

    /// Loads the files again if they changed; keeps the current pair when the new one is bad.
    pub fn reload(&self) {
        match read_pair(&self.cert_file, &self.key_file) {
            Ok((pair, digest)) => {
                let mut loaded = self.loaded_from.lock().expect("digest");
                if *loaded != digest {
                    self.current.store(Arc::new(pair));
                    *loaded = digest;
                    info!(cert = %self.cert_file.display(), "serving certificate reloaded");
                }
            }
            Err(e) => error!(error = %e, "new TLS material rejected; keeping the current certificate"),
        }
    }

    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            self.reload();
        }
    }

    /// A server configuration that always serves the current pair, HTTP/1.1 only (what the API
    /// server speaks to webhooks); with `client_roots`, a client must present a certificate
    /// they signed.
    pub fn server_config(
        self: &Arc<Self>,
        client_roots: Option<Arc<rustls::RootCertStore>>,
    ) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = match client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .expect("a verifier over roots that parsed");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// The CA bundle that client certificates must chain to (`--client-ca-file`).
pub fn client_roots(ca_file: &Path) -> Result<Arc<rustls::RootCertStore>, Error> {
    let pem = std::fs::read(ca_file).map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
        roots.add(cert).map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!("{}: no CA certificate", ca_file.display())));
    }
    Ok(Arc::new(roots))
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, cert: &str, key: &str) {
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
    }

    fn serving_der(reloader: &CertReloader) -> Vec<u8> {
        reloader.current.load().cert[0].to_vec()
    }

    fn pem_der(pem: &str) -> Vec<u8> {
        rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().to_vec()
    }

    #[test]
    fn a_new_pair_is_served_and_a_mismatched_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let localhost = [std::net::Ipv4Addr::LOCALHOST.into()];
        let first = crate::commands::certs::generate(&[], &localhost).unwrap();
        write_pair(dir.path(), &first.cert_pem, &first.key_pem);
        let reloader = CertReloader::load(dir.path().join("tls.crt"), dir.path().join("tls.key")).unwrap();
        assert_eq!(serving_der(&reloader), pem_der(&first.cert_pem));

        let second = crate::commands::certs::generate(&[], &localhost).unwrap();
        write_pair(dir.path(), &second.cert_pem, &second.key_pem);
        reloader.reload();
        assert_eq!(serving_der(&reloader), pem_der(&second.cert_pem));

        // A certificate with somebody else's key, then a half-written key: both refused.
        let third = crate::commands::certs::generate(&[], &localhost).unwrap();
        write_pair(dir.path(), &third.cert_pem, &first.key_pem);
        reloader.reload();
        assert_eq!(serving_der(&reloader), pem_der(&second.cert_pem));
        write_pair(dir.path(), &third.cert_pem, &third.key_pem[..third.key_pem.len() / 2]);
        reloader.reload();
        assert_eq!(serving_der(&reloader), pem_der(&second.cert_pem));
        assert!(CertReloader::load(dir.path().join("tls.crt"), dir.path().join("missing.key")).is_err());
    }
}
