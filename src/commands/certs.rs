//! A development CA and a serving certificate signed by it, for `certs`, `dev` and the tests.
//! Production installs use the OpenShift service CA, cert-manager or the chart's own pair.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CertsArgs {
    /// Output directory for ca.crt, tls.crt and tls.key.
    #[arg(long, default_value = "certs")]
    pub dir: PathBuf,
    /// DNS names of the serving certificate.
    #[arg(long = "dns-name", default_values_t = ["olm-pullsecret-injector.olm-pullsecret-injector.svc".to_string(), "localhost".to_string()])]
    pub dns_names: Vec<String>,
    /// IP addresses of the serving certificate.
    #[arg(long = "ip", default_values_t = [IpAddr::from([127, 0, 0, 1])])]
    pub ips: Vec<IpAddr>,
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    write(&args.dir, &generate(&args.dns_names, &args.ips)?)?;
    println!("wrote {}/ca.crt, tls.crt and tls.key", args.dir.display());
    Ok(())
}

pub struct DevCerts {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A fresh CA and a serving certificate for `dns_names` and `ips`.
pub fn generate(dns_names: &[String], ips: &[IpAddr]) -> Result<DevCerts, rcgen::Error> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "olm-pullsecret-injector dev CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;

    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(dns_names.to_vec())?;
    params.subject_alt_names.extend(ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
    params.distinguished_name.push(rcgen::DnType::CommonName, "olm-pullsecret-injector");
    let cert = params.signed_by(&key, &ca)?;
    Ok(DevCerts { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (mode 0600) into `dir`.
pub fn write(dir: &Path, certs: &DevCerts) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("ca.crt"), &certs.ca_pem)?;
    std::fs::write(dir.join("tls.crt"), &certs.cert_pem)?;
    let mut key =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(dir.join("tls.key"))?;
    std::io::Write::write_all(&mut key, certs.key_pem.as_bytes())
}
