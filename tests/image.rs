//! The project's image, as an administrator's cluster would run it: built from `Containerfile`
//! by `hack/build-image` without a daemon (buildah, vfs storage of its own) for the platforms
//! `PLATFORMS` names (linux/amd64 unless set; `hack/release-check` adds linux/arm64), each
//! platform's config and files checked (nothing but the binary and licenses), its layers
//! unpacked into a root filesystem and its entrypoint started there (chrooted, as the image's
//! user; arm64 through qemu's user-mode emulator) as both processes of a replica against the
//! local control plane, with the chart's RBAC: registered, it patches the Pods of a real
//! Deployment.

mod support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::olm::*;
use support::webhook::{self, Entrypoint};
use support::{ControlPlane, eventually};

const BINARY: &str = "usr/local/bin/olm-pullsecret-injector";
const LICENSE: &str = "licenses/LICENSE";
const THIRD_PARTY: &str = "licenses/THIRD-PARTY-LICENSES";

/// A manifest list written as an OCI layout (`buildah manifest push --all ... oci:DIR`).
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

    /// The image for `architecture` in the manifest list the layout holds.
    fn manifest(&self, architecture: &str) -> Value {
        let top: Value = serde_json::from_slice(&std::fs::read(self.0.join("index.json")).unwrap()).unwrap();
        assert_eq!(top["manifests"].as_array().unwrap().len(), 1, "one manifest list: {top}");
        let list = self.json(&top["manifests"][0]["digest"]);
        let platforms: Vec<&Value> = list["manifests"].as_array().unwrap().iter().map(|m| &m["platform"]).collect();
        let expected: Vec<Value> =
            architectures().iter().map(|a| json!({ "architecture": a, "os": "linux" })).collect();
        assert_eq!(platforms, expected.iter().collect::<Vec<_>>());
        let entry =
            list["manifests"].as_array().unwrap().iter().find(|m| m["platform"]["architecture"] == architecture);
        self.json(&entry.unwrap()["digest"])
    }

    /// Each layer's tar stream, uncompressed.
    fn layers(&self, architecture: &str) -> Vec<Vec<u8>> {
        let manifest = self.manifest(architecture);
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

    fn compressed_size(&self, architecture: &str) -> u64 {
        self.manifest(architecture)["layers"].as_array().unwrap().iter().map(|l| l["size"].as_u64().unwrap()).sum()
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

/// The platforms to build and run, as `hack/build-image` reads them. `cargo test` (and so CI)
/// builds linux/amd64 alone: a second platform is a second release build of the crate, which
/// the release check (`hack/release-check`) adds.
fn platforms() -> String {
    std::env::var("PLATFORMS").unwrap_or_else(|_| "linux/amd64".into())
}

fn architectures() -> Vec<String> {
    platforms()
        .split_whitespace()
        .map(|p| p.strip_prefix("linux/").unwrap_or_else(|| panic!("not a linux platform: {p}")).to_string())
        .collect()
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
        .env("PLATFORMS", platforms())
        .env("BUILDAH_ARGS", storage)
        .status()
        .expect("run hack/build-image");
    assert!(status.success(), "hack/build-image failed: {status}");
    println!("image built in {:.1}s (the binary included)", started.elapsed().as_secs_f64());
    Layout(layout)
}

/// The checks of one platform's image: config, files, licenses. Returns its config and layers.
fn inspect(image: &Layout, architecture: &str) -> (Value, Vec<Vec<u8>>) {
    // The config: numeric non-root user in group 0, the binary as entrypoint, the OCI labels.
    let config = image.json(&image.manifest(architecture)["config"]["digest"]);
    assert_eq!((&config["architecture"], &config["os"]), (&json!(architecture), &json!("linux")));
    let config = config["config"].clone();
    assert_eq!(config["User"], "65532:0");
    assert_eq!(config["Entrypoint"], json!([format!("/{BINARY}")]));
    assert_eq!(config["Cmd"], json!(["serve"]));
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(labels["org.opencontainers.image.licenses"], env!("CARGO_PKG_LICENSE"));
    assert_eq!(labels["org.opencontainers.image.title"], "olm-pullsecret-injector");
    assert_eq!(labels["org.opencontainers.image.source"], env!("CARGO_PKG_REPOSITORY"));
    assert_eq!(labels["org.opencontainers.image.revision"].as_str().unwrap().len(), 40, "{labels}");

    // The files: the binary and the licenses, nothing else (no shell, no libraries), owned by
    // root, readable (and the binary executable) by any UID in group 0, writable by nobody.
    let layers = image.layers(architecture);
    let files = files(&layers);
    assert_eq!(files.keys().collect::<Vec<_>>(), [LICENSE, THIRD_PARTY, BINARY], "nothing but the binary and licenses");
    for (path, file) in &files {
        assert_eq!(file.owner, (0, 0), "{path} is root's");
        assert_eq!(file.mode & 0o222, 0, "{path} is writable: {:o}", file.mode);
        assert_eq!(file.mode & 0o044, 0o044, "{path} is not readable by group and others: {:o}", file.mode);
    }
    assert_eq!(files[BINARY].mode & 0o011, 0o011, "executable by group and others");
    let machine = u16::from_le_bytes([files[BINARY].data[18], files[BINARY].data[19]]);
    assert_eq!(machine, if architecture == "amd64" { 62 } else { 183 }, "an ELF binary for {architecture}");
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
    // What is linked besides crates: the allocator's vendored C sources, Rust's standard library
    // and musl, each with its license.
    for heading in ["The Rust standard library ", "musl libc, linked statically "] {
        assert!(lines.windows(2).any(|pair| pair[0] == "=".repeat(78) && pair[1].starts_with(heading)), "{heading}");
    }
    for text in ["--- c_src/mimalloc/v2/LICENSE", "Copyright: 2005-2020 Rich Felker", "Permission is hereby granted"] {
        assert!(lines.iter().any(|line| line.starts_with(text)), "{text} in {THIRD_PARTY}");
    }
    println!(
        "image for {architecture}: {:.1} MiB compressed, binary {:.1} MiB",
        image.compressed_size(architecture) as f64 / 1048576.0,
        files[BINARY].data.len() as f64 / 1048576.0
    );
    (config, layers)
}

/// Starts a replica from the image's entrypoint inside `rootfs` (its layers unpacked there), as
/// the image's user, prefixed by `emulator` (a static qemu put into the root filesystem) if any;
/// checks that it runs as that user in those files, and registers it.
async fn start_replica(
    client: &kube::Client,
    config: &Value,
    rootfs: &Path,
    emulator: Option<&str>,
) -> webhook::WebhookProcess {
    let replica_dir = rootfs.join("run/replica");
    std::fs::create_dir_all(&replica_dir).unwrap();
    let certs =
        olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()]).unwrap();
    olm_pullsecret_injector::commands::certs::write(&replica_dir, &certs).unwrap();
    // As the kubelet projects the chart's Secret volume: root's files, mode 0644.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(replica_dir.join("tls.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (uid, gid) = config["User"].as_str().unwrap().split_once(':').unwrap();
    let mut command: Vec<String> = emulator.map(|path| path.to_string()).into_iter().collect();
    command.extend(config["Entrypoint"].as_array().unwrap().iter().map(|arg| arg.as_str().unwrap().to_string()));
    let entrypoint =
        Entrypoint { command, root: rootfs.to_path_buf(), user: Some((uid.parse().unwrap(), gid.parse().unwrap())) };
    let certificate = (replica_dir.join("tls.crt"), replica_dir.join("tls.key"));
    let name = rootfs.file_name().unwrap().to_string_lossy();
    let replica = webhook::start_from(
        ControlPlane::with_olm(),
        &entrypoint,
        &name,
        &replica_dir,
        (&certificate.0, &certificate.1, &certs.ca_pem),
        &["--drain-delay", "0s"],
    );
    let pid = replica.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with(&format!("Uid:\t{uid}\t"))), "runs as {uid}:\n{status}");
    assert_eq!(std::fs::read_link(format!("/proc/{pid}/root")).unwrap(), rootfs, "runs in the image's files");
    webhook::register_with(client, &replica, "Fail").await;
    replica
}

/// A real Deployment of an operand in `tenant`: its Pods are patched and the copy is made.
async fn operand_deployment_gets_its_copy(client: &kube::Client, catalog: &Catalog, tenant: &str) {
    let owner = create_operand(client, WIDGET, tenant, "prod").await;
    create_deployment(client, tenant, "app", Some(owner), 2, json!({})).await;
    for pod in pods_of(client, tenant, "app", 2).await {
        assert_eq!(pull_secret_names(&pod), [catalog.secret.as_str()]);
    }
    let copies = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), tenant);
    assert!(copies.get_opt(&catalog.secret).await.unwrap().is_some(), "the copy is made");
}

#[tokio::test]
async fn the_image_holds_one_static_binary_and_runs_as_a_replica_that_patches_pods() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let image = build(&dir);
    let architectures = architectures();
    let images: Vec<_> = architectures.iter().map(|a| inspect(&image, a)).collect();

    let client = ControlPlane::with_olm().admin().await;
    webhook::grant_chart_rbac_with(&client, |_| {}).await;
    let (catalog, _, tenants) = private_operator_unseen(&client, &vec!["image"; architectures.len()]).await;

    // Unpacked, the root filesystem holds no loader or library: the binary runs there only if
    // it is static. Both processes of a replica start from the entrypoint, as the image's user.
    for ((architecture, (config, layers)), tenant) in architectures.iter().zip(&images).zip(&tenants) {
        let rootfs = dir.join(format!("rootfs-{architecture}"));
        unpack(layers, &rootfs);
        // Another architecture's binary runs under qemu's user-mode emulator (a static binary of
        // the test machine, copied into the root filesystem: the image has none).
        let emulator = (architecture != "amd64").then(|| {
            let qemu = format!("/qemu-{}-static", if architecture == "arm64" { "aarch64" } else { architecture });
            std::fs::copy(which(&qemu[1..]), rootfs.join(&qemu[1..])).unwrap();
            qemu
        });
        let replica = start_replica(&client, config, &rootfs, emulator.as_deref()).await;
        operand_deployment_gets_its_copy(&client, &catalog, tenant).await;
        replica.signal(libc::SIGTERM);
        eventually(&format!("the {architecture} replica to stop"), Duration::from_secs(20), || async {
            replica.exit_status()
        })
        .await;
    }
}

/// The full path of `program` on the PATH.
fn which(program: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("{program} is not installed (hack/install-image-tools installs it)"))
}
