//! Certificate rotation as kubelet delivers it: the Secret volume is a directory whose files are
//! symlinks through `..data` to a timestamped directory, and an update writes a new timestamped
//! directory and renames a new `..data` symlink over the old one. The real binary serves from
//! the symlinked paths; a real TLS client checks which certificate it serves.

mod support;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use olm_pullsecret_injector::commands::certs::{DevCerts as Certs, generate};
use support::ControlPlane;
use support::webhook::{self, WebhookProcess};

/// A Secret volume as kubelet's atomic writer lays it out.
struct SecretVolume {
    dir: PathBuf,
    generation: u32,
}

impl SecretVolume {
    fn create(dir: &Path, cert_pem: &str, key_pem: &str) -> SecretVolume {
        std::fs::create_dir_all(dir).unwrap();
        let mut volume = SecretVolume { dir: dir.to_path_buf(), generation: 0 };
        volume.swap(cert_pem, key_pem);
        symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        symlink("..data/tls.key", dir.join("tls.key")).unwrap();
        volume
    }

    /// Writes a new timestamped directory, points `..data_tmp` at it and renames that over
    /// `..data` (one atomic step), then removes the previous directory, as kubelet does.
    fn swap(&mut self, cert_pem: &str, key_pem: &str) {
        self.generation += 1;
        let previous = std::fs::read_link(self.dir.join("..data")).ok();
        let name = format!("..2026_11_26_01_00_{:02}.{:09}", self.generation, std::process::id());
        let new_dir = self.dir.join(&name);
        std::fs::create_dir(&new_dir).unwrap();
        std::fs::write(new_dir.join("tls.crt"), cert_pem).unwrap();
        std::fs::write(new_dir.join("tls.key"), key_pem).unwrap();
        symlink(&name, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        if let Some(previous) = previous {
            std::fs::remove_dir_all(self.dir.join(previous)).unwrap();
        }
    }
}

fn der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().to_vec()
}

/// Connects over TLS (trusting every CA of the test) and returns the certificate served.
async fn served_certificate(port: u16, cas: &[&Certs]) -> Result<Vec<u8>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        roots.add(der(&ca.ca_pem).into()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let server_name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let tls = connector.connect(server_name, tcp).await.map_err(|e| e.to_string())?;
    let peer = tls.get_ref().1.peer_certificates().ok_or("no peer certificate")?;
    Ok(peer[0].to_vec())
}

async fn wait_until_served(webhook: &WebhookProcess, certs: &Certs, cas: &[&Certs], within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if served_certificate(webhook.port, cas).await.as_deref() == Ok(der(&certs.cert_pem).as_slice()) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the new certificate was not served within {within:?}:\n{}",
            webhook.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Longer than two polls of the reloader (every 2 s): a bad pair has been seen and refused.
const TWO_POLLS: Duration = Duration::from_millis(4500);

#[tokio::test]
async fn a_swapped_secret_volume_is_served_within_seconds_and_a_bad_pair_is_refused() {
    let cp = ControlPlane::shared();
    let admin = cp.admin().await;
    webhook::grant_chart_rbac_with(&admin, |_| {}).await;

    let localhost = [std::net::Ipv4Addr::LOCALHOST.into()];
    let [first, second, third, fourth] = [(); 4].map(|_| generate(&[], &localhost).unwrap());
    let cas = [&first, &second, &third, &fourth];
    let dir = webhook::process_dir("rotating-webhook");
    let mut volume = SecretVolume::create(&dir.join("certs"), &first.cert_pem, &first.key_pem);
    let (cert_file, key_file) = (dir.join("certs/tls.crt"), dir.join("certs/tls.key"));
    let ca = first.ca_pem.clone();
    let webhook = tokio::task::spawn_blocking(move || {
        webhook::start_with_cert_files(cp, "rotating-webhook", &cert_file, &key_file, &ca, &["--drain-delay", "0s"])
    })
    .await
    .unwrap();
    assert_eq!(served_certificate(webhook.port, &cas).await.unwrap(), der(&first.cert_pem));

    // kubelet's atomic swap: the new pair is served within 10 s, over a new connection.
    volume.swap(&second.cert_pem, &second.key_pem);
    let took = wait_until_served(&webhook, &second, &cas, Duration::from_secs(10)).await;
    eprintln!("rotation: the new certificate was served {took:?} after the ..data swap");

    // A certificate with another pair's key: refused, the current one stays.
    volume.swap(&third.cert_pem, &second.key_pem);
    tokio::time::sleep(TWO_POLLS).await;
    assert_eq!(served_certificate(webhook.port, &cas).await.unwrap(), der(&second.cert_pem), "mismatched pair");

    // A half-written key (an interrupted writer): refused as well.
    volume.swap(&third.cert_pem, &third.key_pem[..third.key_pem.len() / 2]);
    tokio::time::sleep(TWO_POLLS).await;
    assert_eq!(served_certificate(webhook.port, &cas).await.unwrap(), der(&second.cert_pem), "half-written key");
    // And a truncated certificate.
    volume.swap(&third.cert_pem[..third.cert_pem.len() / 2], &third.key_pem);
    tokio::time::sleep(TWO_POLLS).await;
    assert_eq!(served_certificate(webhook.port, &cas).await.unwrap(), der(&second.cert_pem), "half-written cert");
    let logs = webhook.logs();
    assert!(logs.contains("new TLS material rejected"), "the refusal is logged:\n{logs}");
    assert!(webhook.is_running());

    // The next good pair is taken again.
    volume.swap(&fourth.cert_pem, &fourth.key_pem);
    let took = wait_until_served(&webhook, &fourth, &cas, Duration::from_secs(10)).await;
    eprintln!("rotation after refused pairs: served {took:?} after the swap");
}
