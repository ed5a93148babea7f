//! The project's image, as an administrator's cluster would run it: built from `Containerfile`
//! by `hack/build-image` without a daemon (buildah, vfs storage of its own), its config and files
//! checked (nothing but the binary and licenses), its layers unpacked into a root filesystem and
//! its entrypoint started there (chrooted, as the image's user) as both processes of a replica
//! against the local control plane, with the chart's RBAC: registered, it patches the Pods of a
//! real Deployment.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};
use support::ControlPlane;
use support::olm::*;
use support::webhook::{self, Entrypoint};

const BINARY: &str = "usr/local/bin/olm-pullsecret-injector";
const LICENSE: &str = "licenses/LICENSE";
const THIRD_PARTY: &str = "licenses/THIRD-PARTY-LICENSES";

/// An image written as an OCI layout (`buildah push ... oci:DIR`).
struct Layout(PathBuf);

impl Layout {
    fn blob(&self, digest: &Value) -> Vec<u8> {
        let digest = digest.as_str().expect("a digest");
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        std::fs::read(self.0.join("blobs/sha256").join(hex)).unwrap()
    }

    fn json(&self, digest: &Value) -> Value {
        serde_json::from_slice(&self.blob(digest)).unwrap()
    }

    fn manifest(&self) -> Value {
        let index: Value = serde_json::from_slice(&std::fs::read(self.0.join("index.json")).unwrap()).unwrap();
        let manifests = index["manifests"].as_array().unwrap();
        assert_eq!(manifests.len(), 1, "one image: {index}");
        self.json(&manifests[0]["digest"])
    }

    /// Each layer's tar stream, uncompressed.
    fn layers(&self) -> Vec<Vec<u8>> {
        let manifest = self.manifest();
        let layers = manifest["layers"].as_array().unwrap();
        layers
            .iter()
            .map(|layer| {
                let blob = self.blob(&layer["digest"]);
                match layer["mediaType"].as_str().unwrap() {
                    "application/vnd.oci.image.layer.v1.tar+gzip" => {
                        let mut tar = Vec::new();
                        flate2::read::GzDecoder::new(&blob[..]).read_to_end(&mut tar).unwrap();
                        tar
                    }
                    "application/vnd.oci.image.layer.v1.tar" => blob,
                    other => panic!("unexpected layer type {other}"),
                }
            })
            .collect()
    }

    fn compressed_size(&self) -> u64 {
        self.manifest()["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).sum()
    }
}

/// A file of the image: its mode, owner and contents.
struct File {
    mode: u32,
    owner: (u64, u64),
    data: Vec<u8>,
}

/// Every entry of every layer but directories, by path; panics on any entry that is neither a
/// directory nor a regular file (a link to a shell would be one).
fn files(layers: &[Vec<u8>]) -> BTreeMap<String, File> {
    let mut files = BTreeMap::new();
    for layer in layers {
        for entry in tar::Archive::new(&layer[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path =
                entry.path().unwrap().to_string_lossy().trim_start_matches("./").trim_end_matches('/').to_string();
            let header = entry.header();
            let kind = header.entry_type();
            if kind.is_dir() {
                continue;
            }
            assert!(kind.is_file(), "{path} is a {kind:?}, not a regular file");
            let (mode, owner) = (header.mode().unwrap(), (header.uid().unwrap(), header.gid().unwrap()));
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, File { mode, owner, data });
        }
    }
    files
}

fn unpack(layers: &[Vec<u8>], rootfs: &Path) {
    for layer in layers {
        let mut archive = tar::Archive::new(&layer[..]);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.unpack(rootfs).unwrap();
    }
}

fn build(dir: &Path) -> Layout {
    let layout = dir.join("oci");
    let storage = format!(
        "--root {} --runroot {} --storage-driver vfs",
        dir.join("storage").display(),
        dir.join("run").display()
    );
    let started = Instant::now();
    let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/build-image"))
        .arg("olm-pullsecret-injector:e2e")
        .env("OCI_LAYOUT", &layout)
        .env("BUILDAH_ARGS", storage)
        .status()
        .expect("run hack/build-image");
    assert!(status.success(), "hack/build-image failed: {status}");
    println!("image built in {:.1}s (the binary included)", started.elapsed().as_secs_f64());
    Layout(layout)
}

#[tokio::test]
async fn the_image_holds_one_static_binary_and_runs_as_a_replica_that_patches_pods() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let image = build(&dir);

    // The config: numeric non-root user in group 0, the binary as entrypoint, the OCI labels.
    let config = image.json(&image.manifest()["config"]["digest"]);
    let config = &config["config"];
    assert_eq!(config["User"], "65532:0");
    assert_eq!(config["Entrypoint"], json!([format!("/{BINARY}")]));
    assert_eq!(config["Cmd"], json!(["serve"]));
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(labels["org.opencontainers.image.licenses"], env!("CARGO_PKG_LICENSE"));
    assert_eq!(labels["org.opencontainers.image.title"], "olm-pullsecret-injector");
    assert_eq!(labels["org.opencontainers.image.source"], env!("CARGO_PKG_REPOSITORY"));
    assert_eq!(labels["org.opencontainers.image.revision"].as_str().unwrap().len(), 40, "{labels}");

    // The files: the binary and the license, nothing else (no shell, no libraries), owned by
    // root, readable (and the binary executable) by any UID in group 0, writable by nobody.
    let layers = image.layers();
    let files = files(&layers);
    assert_eq!(files.keys().collect::<Vec<_>>(), [LICENSE, THIRD_PARTY, BINARY], "nothing but the binary and licenses");
    for (path, file) in &files {
        assert_eq!(file.owner, (0, 0), "{path} is root's");
        assert_eq!(file.mode & 0o222, 0, "{path} is writable: {:o}", file.mode);
        assert_eq!(file.mode & 0o044, 0o044, "{path} is not readable by group and others: {:o}", file.mode);
    }
    assert_eq!(files[BINARY].mode & 0o011, 0o011, "executable by group and others");
    assert_eq!(files[LICENSE].data, std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("LICENSE")).unwrap());
    // The licenses of what is linked in: the allocator, TLS, the runtime; not a build-time-only
    // crate (a proc-macro) nor a test dependency.
    let third_party = String::from_utf8(files[THIRD_PARTY].data.clone()).unwrap();
    let lines: Vec<&str> = third_party.lines().collect();
    let headings = lines.windows(2).filter(|pair| pair[0] == "=".repeat(78)).map(|pair| pair[1]);
    let crates: Vec<&str> = headings.map(|heading| heading.split(' ').next().unwrap()).collect();
    assert!(crates.len() > 100, "{} crates", crates.len());
    for linked in ["mimalloc", "ring", "rustls", "tokio", "kube-client", "serde_json"] {
        assert!(crates.contains(&linked), "{linked} in {THIRD_PARTY}");
    }
    for not_linked in ["serde_derive", "tar", "flate2", "tempfile"] {
        assert!(!crates.contains(&not_linked), "{not_linked} is not in the binary");
    }
    let binary = &files[BINARY].data;
    println!(
        "image: {:.1} MiB compressed, binary {:.1} MiB",
        image.compressed_size() as f64 / 1048576.0,
        binary.len() as f64 / 1048576.0
    );

    // Unpacked, the root filesystem holds no loader or library: the binary runs there only if
    // it is static. Both processes of a replica start from the entrypoint, as the image's user.
    let rootfs = dir.join("rootfs");
    unpack(&layers, &rootfs);
    let replica_dir = rootfs.join("run/replica");
    std::fs::create_dir_all(&replica_dir).unwrap();
    let certs =
        olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()]).unwrap();
    olm_pullsecret_injector::commands::certs::write(&replica_dir, &certs).unwrap();
    // As the kubelet projects the chart's Secret volume: root's files, mode 0644.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(replica_dir.join("tls.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (uid, gid) = config["User"].as_str().unwrap().split_once(':').unwrap();
    let entrypoint = Entrypoint {
        command: config["Entrypoint"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap().into()).collect(),
        root: rootfs.clone(),
        user: Some((uid.parse().unwrap(), gid.parse().unwrap())),
    };

    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    webhook::grant_chart_rbac_with(&client, |_| {}).await;
    let certificate = (replica_dir.join("tls.crt"), replica_dir.join("tls.key"));
    let replica = webhook::start_from(
        cp,
        &entrypoint,
        "image",
        &replica_dir,
        (&certificate.0, &certificate.1, &certs.ca_pem),
        &["--drain-delay", "0s"],
    );
    let pid = replica.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with(&format!("Uid:\t{uid}\t"))), "runs as {uid}:\n{status}");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/root")).unwrap(), rootfs, "runs in the image's files");
    webhook::register_with(&client, &replica, "Fail").await;

    // A real Deployment of an operand: its Pods are patched and the copy is made.
    let (catalog, _, tenants) = private_operator(&client, &["image"]).await;
    let tenant = &tenants[0];
    let owner = create_operand(&client, WIDGET, tenant, "prod").await;
    create_deployment(&client, tenant, "app", Some(owner), 2, json!({})).await;
    for pod in pods_of(&client, tenant, "app", 2).await {
        assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()], "{}", replica.logs());
    }
    let copies = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), tenant);
    assert!(copies.get_opt(&catalog.secret).await.unwrap().is_some(), "the copy is made");
}
