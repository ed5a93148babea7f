//! Serving certificate and key from files, reloaded without a restart, and the client CA bundle
//! likewise. Secret and ConfigMap volumes change by an atomic symlink swap, so the files are
//! polled; new material is used only when it parses (a pair only when the key matches the
//! certificate), otherwise the old stays and an error is logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tracing::{error, info};

use crate::error::Error;

/// Reads material from files: it and a digest of the bytes it came from.
type Read<T> = fn(&[PathBuf]) -> Result<(T, [u8; 32]), Error>;

/// Material read from files: swapped in when the files change and what they hold is good,
/// kept otherwise (with an error logged).
#[derive(Debug)]
struct Reloaded<T> {
    what: &'static str,
    files: Vec<PathBuf>,
    read: Read<T>,
    current: ArcSwap<T>,
    /// Digest of the files the current material was loaded from.
    loaded_from: std::sync::Mutex<[u8; 32]>,
}

impl<T> Reloaded<T> {
    fn load(what: &'static str, files: Vec<PathBuf>, read: Read<T>) -> Result<Self, Error> {
        let (material, digest) = read(&files)?;
        Ok(Reloaded {
            what,
            files,
            read,
            current: ArcSwap::from_pointee(material),
            loaded_from: std::sync::Mutex::new(digest),
        })
    }

    fn reload(&self) {
        match (self.read)(&self.files) {
            Ok((material, digest)) => {
                let mut loaded = self.loaded_from.lock().expect("digest");
                if *loaded != digest {
                    self.current.store(Arc::new(material));
                    *loaded = digest;
                    info!(what = self.what, file = %self.files[0].display(), "reloaded");
                }
            }
            Err(e) => error!(what = self.what, error = %e, "new TLS material rejected; keeping the current one"),
        }
    }

    async fn poll(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            self.reload();
        }
    }
}

/// The serving certificate and key.
#[derive(Debug)]
pub struct CertReloader(Reloaded<CertifiedKey>);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_pair(files: &[PathBuf]) -> Result<(CertifiedKey, [u8; 32]), Error> {
    let (cert_file, key_file) = (&files[0], &files[1]);
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
        Ok(Arc::new(CertReloader(Reloaded::load("serving certificate", vec![cert_file, key_file], read_pair)?)))
    }

    /// Loads the files again if they changed; keeps the current pair when the new one is bad.
    pub fn reload(&self) {
        self.0.reload()
    }

    pub async fn watch(self: Arc<Self>, every: Duration) {
        self.0.poll(every).await
    }

    /// A server configuration that always serves the current pair, HTTP/1.1 only (what the API
    /// server speaks to webhooks); with `clients`, a client must present a certificate it accepts.
    pub fn server_config(self: &Arc<Self>, clients: Option<Arc<ClientVerifier>>) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = match clients {
            None => builder.with_no_client_auth(),
            Some(verifier) => builder.with_client_cert_verifier(verifier),
        };
        let mut config = builder.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Who may call: a client certificate that chains to the CA bundle of `--client-ca-file`
/// (reloaded when the file changes, as the serving pair is) and, with `--client-name`, names that
/// DNS name in its subjectAltName: a CA shared with other clients (the cluster's client CA signs
/// every kubelet's and user's certificate) is then not blanket trust.
#[derive(Debug)]
pub struct ClientVerifier {
    roots: Reloaded<Arc<dyn ClientCertVerifier>>,
    allowed_name: Option<ServerName<'static>>,
}

fn read_roots(files: &[PathBuf]) -> Result<(Arc<dyn ClientCertVerifier>, [u8; 32]), Error> {
    let ca_file = &files[0];
    let pem = std::fs::read(ca_file).map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
    let digest: [u8; 32] = Sha256::digest(&pem).into();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
        roots.add(cert).map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
    }
    if roots.is_empty() {
        return Err(Error::Tls(format!("{}: no CA certificate", ca_file.display())));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Error::Tls(format!("{}: {e}", ca_file.display())))?;
    Ok((verifier, digest))
}

impl ClientVerifier {
    pub fn load(ca_file: PathBuf, allowed_name: Option<&str>) -> Result<Arc<Self>, Error> {
        let allowed_name = allowed_name
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|e| Error::Tls(format!("--client-name {name}: {e}")))
            })
            .transpose()?;
        let roots = Reloaded::load("client CA", vec![ca_file], read_roots)?;
        Ok(Arc::new(ClientVerifier { roots, allowed_name }))
    }

    /// Loads the bundle again if it changed; keeps the current one when the new one is bad.
    pub fn reload(&self) {
        self.roots.reload()
    }

    pub async fn watch(self: Arc<Self>, every: Duration) {
        self.roots.poll(every).await
    }
}

impl ClientCertVerifier for ClientVerifier {
    /// No hints: they would borrow from a bundle that may be swapped; the API server sends the
    /// one certificate it is configured with either way.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.roots.current.load().verify_client_cert(end_entity, intermediates, now)?;
        if let Some(name) = &self.allowed_name {
            let cert = webpki::EndEntityCert::try_from(end_entity)
                .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
            cert.verify_is_valid_for_subject_name(name)
                .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))?;
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.current.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.current.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.roots.current.load().supported_verify_schemes()
    }
}

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn write_pair(dir: &Path, cert: &str, key: &str) {
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
    }

    fn serving_der(reloader: &CertReloader) -> Vec<u8> {
        reloader.0.current.load().cert[0].to_vec()
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

    /// A client certificate for `dns_name` and the PEM of the CA that signed it.
    fn client(dns_name: &str) -> (CertificateDer<'static>, String) {
        let certs = crate::commands::certs::generate(&[dns_name.to_string()], &[]).unwrap();
        (CertificateDer::from(pem_der(&certs.cert_pem)), certs.ca_pem)
    }

    fn accepts(verifier: &ClientVerifier, cert: &CertificateDer<'_>) -> bool {
        verifier.verify_client_cert(cert, &[], UnixTime::now()).is_ok()
    }

    #[test]
    fn a_new_client_ca_is_used_without_a_restart_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.crt");
        let (first, first_ca) = client("apiserver.example");
        let (second, second_ca) = client("apiserver.example");
        std::fs::write(&ca_file, &first_ca).unwrap();
        let verifier = ClientVerifier::load(ca_file.clone(), None).unwrap();
        assert!(accepts(&verifier, &first));
        assert!(!accepts(&verifier, &second));

        std::fs::write(&ca_file, &second_ca).unwrap();
        verifier.reload();
        assert!(accepts(&verifier, &second));
        assert!(!accepts(&verifier, &first), "the old CA is no longer trusted");

        // A half-written bundle keeps the current one.
        std::fs::write(&ca_file, &first_ca[..first_ca.len() / 2]).unwrap();
        verifier.reload();
        assert!(accepts(&verifier, &second));
        std::fs::write(&ca_file, "").unwrap();
        assert!(ClientVerifier::load(ca_file, None).is_err());
    }

    #[test]
    fn an_allowed_client_name_refuses_other_certificates_of_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.crt");
        let certs = crate::commands::certs::generate(&["apiserver.example".into()], &[]).unwrap();
        std::fs::write(&ca_file, &certs.ca_pem).unwrap();
        let apiserver = CertificateDer::from(pem_der(&certs.cert_pem));
        let verifier = ClientVerifier::load(ca_file.clone(), Some("apiserver.example")).unwrap();
        assert!(accepts(&verifier, &apiserver));
        let other = ClientVerifier::load(ca_file.clone(), Some("kubelet.example")).unwrap();
        assert!(!accepts(&other, &apiserver), "same CA, another name");
        assert!(ClientVerifier::load(ca_file, Some("not a name!")).is_err());
    }
}
