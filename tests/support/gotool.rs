//! Tools the tests need, built from their Go modules (a folder under `tests/` whose go.mod has a
//! `tool` directive), never downloaded as binaries. Each is built once into `target/<name>/` and
//! rebuilt only when that folder's go.mod, go.sum or a `.go` file changes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The version of `module` that `tests/<folder>/go.mod` requires, without its `v`.
pub fn required_version(folder: &str, module: &str) -> Result<String, String> {
    let go_mod =
        std::fs::read_to_string(repo().join("tests").join(folder).join("go.mod")).map_err(|e| e.to_string())?;
    go_mod
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(module)).then(|| words.next().map(|v| v.trim_start_matches('v').to_string()))?
        })
        .ok_or(format!("{module} is not required by tests/{folder}/go.mod"))
}

/// Builds `package` of the module in `tests/<folder>` as `target/<folder>/<folder>` (with
/// `ldflags`) unless a binary built from the same sources exists; returns its path.
pub fn build(folder: &str, package: &str, ldflags: &str) -> Result<PathBuf, String> {
    let source = repo().join("tests").join(folder);
    let out_dir = repo().join("target").join(folder);
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let binary = out_dir.join(folder);
    let stamp = out_dir.join(format!("{folder}.sources-sha256"));
    let digest = olm_pullsecret_injector::commands::dev::controlplane::go_sources_digest(&source, "")
        .map_err(|e| format!("reading tests/{folder}: {e}"))?;
    if binary.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&digest) {
        return Ok(binary);
    }
    let started = Instant::now();
    eprintln!("building {package} from tests/{folder} (the first build takes a few minutes)");
    // Several test binaries may build at once: each writes its own file and renames it.
    let partial = out_dir.join(format!("{folder}.partial-{}", std::process::id()));
    let status = Command::new("go")
        .args(["build", "-buildvcs=false", "-trimpath"])
        .arg(format!("-ldflags=-s -w {ldflags}"))
        .arg("-o")
        .arg(&partial)
        .arg(package)
        .env("GOFLAGS", "-mod=mod")
        .current_dir(&source)
        .status()
        .map_err(|e| format!("running `go` (Go 1.26 must be installed): {e}"))?;
    if !status.success() {
        return Err(format!("go build of {package} failed ({status})"));
    }
    std::fs::rename(&partial, &binary).map_err(|e| e.to_string())?;
    std::fs::write(&stamp, digest).map_err(|e| e.to_string())?;
    eprintln!("built tests/{folder} in {:.0?}", started.elapsed());
    Ok(binary)
}
