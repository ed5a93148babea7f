//! The README's command blocks, run as a user types them: read out of README.md (so an edit that
//! breaks one fails here), run by `sh -c` as child processes with only `PATH` and `HOME` of the
//! environment, from the repository's root (or a folder laid out like it).

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Api;
use support::helm::{self, Helm};
use support::{ControlPlane, create_namespace_if_missing, eventually};

const RELEASE: &str = "olm-pullsecret-injector";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The fenced blocks of `language` in the README section whose heading is `heading` (up to the
/// next heading of the same or a higher level).
fn blocks(heading: &str, language: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut lines = readme.lines().skip_while(|l| *l != heading).skip(1);
    let (mut found, mut block, mut inside) = (Vec::new(), None::<String>, false);
    for line in lines.by_ref() {
        let fence = line.starts_with("```");
        if !inside && !fence && line.starts_with('#') && line.chars().take_while(|c| *c == '#').count() <= level {
            break;
        }
        match (fence, inside) {
            (true, false) => {
                inside = true;
                block = (line.trim_start_matches('`') == language).then(String::new);
            }
            (true, true) => {
                inside = false;
                found.extend(block.take());
            }
            (false, true) => {
                if let Some(block) = block.as_mut() {
                    block.push_str(line);
                    block.push('\n');
                }
            }
            (false, false) => {}
        }
    }
    assert!(!found.is_empty(), "README section {heading:?} has no ```{language} block");
    found
}

/// The commands of a block: its lines, with `\`-continued lines joined.
fn commands(block: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in block.lines() {
        let current = out.last_mut().expect("one command at least");
        match line.strip_suffix('\\') {
            Some(continued) => current.push_str(continued),
            None => {
                current.push_str(line);
                out.push(String::new());
            }
        }
    }
    out.retain(|c| !c.trim().is_empty());
    out
}

/// `sh -c script` in `dir` with only PATH (with `extra_path` in front) and HOME of this
/// environment, plus `env`: none of what cargo or this harness set for themselves.
fn as_typed(script: &str, dir: &Path, extra_path: Option<&Path>, env: &[(&str, &Path)]) -> Command {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(extra) = extra_path {
        path = std::env::join_paths(std::iter::once(extra.to_path_buf()).chain(std::env::split_paths(&path)))
            .expect("PATH");
    }
    let mut command = Command::new("sh");
    command.arg("-c").arg(script).current_dir(dir).env_clear().env("PATH", path);
    if let Some(home) = std::env::var_os("HOME") {
        command.env("HOME", home);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Runs a block to its end; panics with its output unless it exits 0. Returns its stdout.
fn run_ok(what: &str, mut command: Command) -> String {
    let started = Instant::now();
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} exited with {}\n--- stdout\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{what}: {:.1?}", started.elapsed());
    stdout
}

/// A child in a process group of its own (as a shell runs a foreground job), killed with its
/// whole group if the test ends before it does.
struct Job {
    child: Child,
    group: i32,
}

impl Job {
    fn start(mut command: Command) -> Job {
        let child = command.process_group(0).spawn().expect("spawn sh");
        let group = child.id() as i32;
        Job { child, group }
    }

    /// Ctrl-C in a terminal: SIGINT to the foreground process group.
    fn interrupt(&self) {
        // SAFETY: kill(2) with a process group id and a signal number has no memory effects.
        assert_eq!(unsafe { libc::kill(-self.group, libc::SIGINT) }, 0, "SIGINT to the process group");
    }

    /// Whether any process of the group is left.
    fn group_alive(&self) -> bool {
        // SAFETY: as above; signal 0 only checks that the group exists.
        unsafe { libc::kill(-self.group, 0) == 0 }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(-self.group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Processes (other than this one) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let own = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == own || !name.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

/// The quick start: `cargo run -- dev` prints the operand Pod's injected pull secrets, the
/// decision with its chain and the kubeconfig line; the look-around block runs the plugin's
/// `explain` against it; Ctrl-C ends it with exit code 0 and no process left behind.
#[test]
fn the_quick_start_runs_as_typed() {
    let quick_start = blocks("## Quick start", "sh");
    let [dev_block, look_around, test_block] = quick_start.as_slice() else {
        panic!("the quick start has the dev, look-around and test blocks: {quick_start:#?}");
    };
    assert_eq!(test_block.trim(), "cargo test", "CI runs the test block: .ci/run");
    let dev_dir = repo().join(".dev");

    let log = tempfile::NamedTempFile::new_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // As an interactive shell runs it: the command is the foreground job (the shell `exec`s it
    // here), and Ctrl-C reaches that job's process group, not the shell.
    assert_eq!(commands(dev_block).len(), 1, "the quick start is one command: {dev_block}");
    let mut command = as_typed(&format!("exec {dev_block}"), repo(), None, &[]);
    command.stdout(Stdio::piped()).stderr(log.reopen().unwrap());
    let started = Instant::now();
    let mut job = Job::start(command);
    let stdout = job.child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let failed = |why: &str, printed: &[String]| -> ! {
        let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
        let tail: Vec<&str> = stderr.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "`{}`: {why}\n--- stdout\n{}\n--- stderr (tail)\n{}",
            dev_block.trim(),
            printed.join("\n"),
            tail.join("\n")
        )
    };

    // A cold machine builds the control plane first (minutes); a warm one starts in seconds.
    let mut printed = Vec::new();
    let deadline = started + Duration::from_secs(20 * 60);
    while printed.last().is_none_or(|l: &String| l != "Stop with Ctrl-C.") {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => printed.push(line),
            Err(_) => failed("ended or went quiet before it printed `Stop with Ctrl-C.`", &printed),
        }
    }
    eprintln!("`{}` ready in {:.1?}", dev_block.trim(), started.elapsed());
    let report: Vec<&str> = printed.iter().map(String::as_str).filter(|l| !l.starts_with('{')).collect();
    let line_after = |prefix: &str| -> String {
        report
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap_or_else(|| failed(&format!("printed no line `{prefix}...`"), &printed))
            .trim()
            .to_string()
    };

    let admitted = line_after("The operand Pod demo-tenant/");
    let (pod, secrets) = admitted.split_once(" was admitted with imagePullSecrets: ").unwrap_or_default();
    assert!(pod.starts_with("demo-app-"), "the operand Pod: {admitted}");
    assert_eq!(secrets, r#"["private-registry"]"#, "the operand Pod's injected imagePullSecrets");
    assert_eq!(line_after("The webhook's decision for it"), "(patched):");
    let chain = line_after("chain:");
    assert!(
        chain.starts_with("Pod<-ReplicaSet/demo-app-")
            && chain.ends_with(
                "<-Deployment/demo-app<-Demo/prod<-CSV/demo-operator.v1.0.0<-Subscription/demo-operator\
                 <-CatalogSource/openshift-marketplace/private-catalog"
            ),
        "the decision's chain: {chain}"
    );
    assert_eq!(line_after("secrets:"), "private-registry");
    let kubeconfig = dev_dir.join("controlplane/kubeconfig");
    assert_eq!(line_after("Look around:"), format!("export KUBECONFIG={}", kubeconfig.display()));
    assert!(kubeconfig.is_file(), "the kubeconfig dev printed exists");

    // The look-around block is what dev printed, with the Pod's name filled in.
    let look_around = look_around.replace("<the operand Pod's name>", pod);
    let typed: Vec<String> = look_around.lines().map(|l| l.replace("$PWD", &repo().display().to_string())).collect();
    assert_eq!(typed[0], line_after("Look around:"), "the README's export line is the one dev prints");
    assert_eq!(typed[1], line_after("Explain it:"), "the README's explain line is the one dev prints");
    let explained = run_ok("the quick start's explain block", as_typed(&look_around, repo(), None, &[]));
    assert!(
        explained.contains("CatalogSource/openshift-marketplace/private-catalog")
            && explained.contains("private-registry"),
        "explain names the catalog and the secret:\n{explained}"
    );

    // Ctrl-C: exit code 0, then no process of the job (the control plane included) is left.
    job.interrupt();
    let stopping = Instant::now();
    let status = loop {
        if let Some(status) = job.child.try_wait().unwrap() {
            break status;
        }
        if stopping.elapsed() > Duration::from_secs(60) {
            failed("still running 60 s after SIGINT", &printed);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "after SIGINT `{}` exited with {status}", dev_block.trim());
    eventually_sync("no process of the quick start left", Duration::from_secs(15), || {
        !job.group_alive() && processes_mentioning(&dev_dir.display().to_string()).is_empty()
    });
    eprintln!("stopped {:.1?} after SIGINT", stopping.elapsed());
}

fn eventually_sync(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not after {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// "Install": the values file as written, then each certificate mode's `helm install` as
/// typed against the control plane; the self-signed pair replaced by the upgrade of "Upgrade";
/// the release removed by the `helm uninstall` of "Uninstall".
#[tokio::test]
async fn the_install_upgrade_and_uninstall_commands_run_as_typed() {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    let helm_dir = Helm::shared().binary().parent().unwrap().to_path_buf();
    // What the README says must exist first: the catalog namespace of the values file, and for
    // cert-manager its CRDs.
    create_namespace_if_missing(&client, "openshift-marketplace").await;
    helm::install_foreign_crds(&client).await;

    // A folder laid out like the repository, with the README's values file in it.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::os::unix::fs::symlink(repo().join("charts"), work.path().join("charts")).unwrap();
    let values = blocks("## Install", "yaml").remove(0);
    assert!(values.starts_with("# my-values.yaml\n"), "the Install section's values file: {values}");
    std::fs::write(work.path().join("my-values.yaml"), &values).unwrap();
    let kubeconfig = cp.kubeconfig();
    let helm_cmd = |script: &str| as_typed(script, work.path(), Some(&helm_dir), &[("KUBECONFIG", &kubeconfig)]);

    let installs: Vec<String> =
        blocks("## Install", "sh").into_iter().filter(|b| b.starts_with("helm install ")).collect();
    assert_eq!(installs.len(), 3, "one `helm install` per certificate mode: {installs:#?}");
    let uninstall = blocks("## Uninstall", "sh").remove(0);
    assert!(uninstall.starts_with("helm uninstall "), "the Uninstall section's first block: {uninstall}");
    let upgrade: String = blocks("## Upgrade", "sh")
        .iter()
        .flat_map(|b| commands(b))
        .find(|c| c.starts_with("helm upgrade ") && !c.contains('['))
        .expect("the Upgrade section's `helm upgrade` that replaces the self-signed pair");

    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let deployments = Api::<Deployment>::namespaced(client.clone(), RELEASE);
    let secrets = Api::<Secret>::namespaced(client.clone(), RELEASE);
    let cluster_roles = Api::<ClusterRole>::all(client.clone());
    let aggregated = format!("{RELEASE}-operand-owners");
    for install in &installs {
        // What "Uninstall" says to delete: the aggregated role the ClusterRole aggregation
        // controller may have applied again after the previous uninstall.
        if cluster_roles.get_opt(&aggregated).await.unwrap().is_some_and(|r| r.metadata.labels.is_none()) {
            cluster_roles.delete(&aggregated, &Default::default()).await.unwrap();
        }
        let out = run_ok(&format!("`{}`", install.trim()), helm_cmd(install));
        assert!(out.contains("STATUS: deployed"), "helm install:\n{out}");
        assert!(configs.get_opt(RELEASE).await.unwrap().is_some(), "the webhook configuration is installed");
        assert!(deployments.get_opt(RELEASE).await.unwrap().is_some(), "the webhook's Deployment is installed");
        let tls = format!("{RELEASE}-tls");
        if !install.contains("--set certificates.mode=") {
            // Self-signed: delete the pair and upgrade, as "Upgrade" says, for a new CA.
            let ca = |s: Secret| s.data.unwrap_or_default().remove("ca.crt").expect("ca.crt");
            let before = ca(secrets.get(&tls).await.unwrap());
            secrets.delete(&tls, &Default::default()).await.unwrap();
            run_ok(&format!("`{upgrade}`"), helm_cmd(&upgrade));
            assert_ne!(ca(secrets.get(&tls).await.unwrap()), before, "the upgrade generated a new CA");
        }
        run_ok(&format!("`{}`", uninstall.trim()), helm_cmd(&uninstall));
        eventually("the release's objects gone", Duration::from_secs(30), || async {
            let gone = configs.get_opt(RELEASE).await.unwrap().is_none()
                && deployments.get_opt(RELEASE).await.unwrap().is_none();
            gone.then_some(())
        })
        .await;
    }
}
