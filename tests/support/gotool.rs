//! Tools the tests need, built from their Go modules (a folder under `tests/` whose go.mod has a
//! `tool` directive), never downloaded as binaries. Each is built once into `target/<name>/` and
//! rebuilt only when that folder's go.mod, go.sum or a `.go` file changes.

use std::path::{Path, PathBuf};

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
    let ldflags = format!("-s -w {ldflags}");
    olm_pullsecret_injector::commands::dev::controlplane::build_go_tools(
        folder,
        &[package],
        &["-trimpath", "-ldflags", &ldflags],
    )
    .map(|dir| dir.join(folder))
    .map_err(|e| format!("{e:#}"))
}
