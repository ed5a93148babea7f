//! The modules depend on each other in one direction only: commands on the runtime, the runtime on
//! the webhook and the reconciler, those on the resolver, and so on down. A `crate::<module>` path
//! in a module's (non-test) code is a dependency; this test fails on any cycle between the
//! top-level modules of `src/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Top-level module → the top-level modules its code names through `crate::`.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.iter().next().unwrap().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may reach anywhere.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for (at, _) in code.match_indices("crate::") {
            let name: String = code[at + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if !name.is_empty() && name != top && name != "router" {
                edges.entry(top.clone()).or_default().insert(name);
            }
        }
    }
    edges
}

fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str, seen: &mut BTreeSet<String>) -> bool {
    edges
        .get(from)
        .into_iter()
        .flatten()
        .any(|next| next == to || (seen.insert(next.clone()) && reaches(edges, next, to, seen)))
}

#[test]
fn no_module_depends_on_one_that_depends_on_it() {
    let edges = dependencies();
    assert!(edges.contains_key("runtime") && edges.contains_key("webhook"), "the scan found the modules: {edges:?}");
    for (module, uses) in &edges {
        for used in uses {
            assert!(
                !reaches(&edges, used, module, &mut BTreeSet::new()),
                "import cycle: {module} uses {used}, which leads back to {module}\n{edges:#?}"
            );
        }
    }
    // The direction the layout promises.
    for (upper, lower) in
        [("commands", "runtime"), ("runtime", "webhook"), ("webhook", "resolve"), ("inject", "resolve")]
    {
        assert!(reaches(&edges, upper, lower, &mut BTreeSet::new()), "{upper} builds on {lower}");
        assert!(!reaches(&edges, lower, upper, &mut BTreeSet::new()), "{lower} must not use {upper}");
    }
}
