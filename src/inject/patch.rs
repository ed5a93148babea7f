//! The JSON patch that adds pull secrets. It only ever adds: it never replaces, reorders or drops
//! an entry, so applying the webhook to its own output yields no patch.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation, TestOperation};
use serde_json::{Value, json};

use crate::INJECTED_ANNOTATION;

/// Where the list lives in the object being admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Pod,
    ServiceAccount,
}

impl Target {
    fn list_path(self) -> &'static [&'static str] {
        match self {
            Target::Pod => &["spec", "imagePullSecrets"],
            Target::ServiceAccount => &["imagePullSecrets"],
        }
    }
}

/// What the patch adds: its operations and the names they add.
#[derive(Debug, PartialEq)]
pub struct Addition {
    pub operations: json_patch::Patch,
    pub added: Vec<String>,
}

impl Addition {
    /// The patch as the AdmissionReview response carries it (before base64).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.operations).expect("a patch serializes")
    }
}

/// A JSON pointer from unescaped tokens (`/` and `~` in a token are escaped).
pub fn pointer<'t>(tokens: impl IntoIterator<Item = &'t str>) -> PointerBuf {
    PointerBuf::from_tokens(tokens)
}

pub fn add(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation { path, value })
}

pub fn remove(path: PointerBuf) -> PatchOperation {
    PatchOperation::Remove(RemoveOperation { path })
}

pub fn test(path: PointerBuf, value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation { path, value })
}

fn injected_annotation() -> PointerBuf {
    pointer(["metadata", "annotations", INJECTED_ANNOTATION])
}

/// Builds the patch that makes `wanted` present in `existing` (None: the field is absent or null).
/// For a ServiceAccount it also records the added names in the `injected` annotation, merged with
/// what the annotation already says, so that exactly these can be removed later.
pub fn build(
    target: Target,
    existing: Option<&[&str]>,
    wanted: &[String],
    annotations_present: bool,
    injected_before: Option<&str>,
) -> Option<Addition> {
    let mut added: Vec<String> = Vec::new();
    for name in wanted {
        let already = existing.is_some_and(|list| list.contains(&name.as_str()));
        if !already && !added.contains(name) {
            added.push(name.clone());
        }
    }
    if added.is_empty() {
        return None;
    }

    let path = target.list_path();
    let mut ops: Vec<PatchOperation> = match existing {
        None => {
            let entries: Vec<Value> = added.iter().map(|n| json!({ "name": n })).collect();
            vec![add(pointer(path.iter().copied()), Value::Array(entries))]
        }
        Some(_) => {
            added.iter().map(|n| add(pointer(path.iter().copied().chain(["-"])), json!({ "name": n }))).collect()
        }
    };

    if target == Target::ServiceAccount {
        let mut recorded: Vec<&str> = injected_before.map(split_names).unwrap_or_default();
        for name in &added {
            if !recorded.contains(&name.as_str()) {
                recorded.push(name);
            }
        }
        let value = recorded.join(",");
        ops.push(if annotations_present {
            add(injected_annotation(), Value::String(value))
        } else {
            add(pointer(["metadata", "annotations"]), json!({ INJECTED_ANNOTATION: value }))
        });
    }
    Some(Addition { operations: json_patch::Patch(ops), added })
}

/// The JSON patch that takes `remove` out of a ServiceAccount's `imagePullSecrets` (whose names
/// are `existing`), but only the names the `injected` annotation says we added, and drops them from
/// the annotation. Every removal first `test`s the entry's name and the annotation's value, so a
/// list that changed since it was read fails the patch instead of losing someone else's entry.
pub fn removal(existing: &[&str], injected: &str, remove: &[&str]) -> Option<json_patch::Patch> {
    let recorded = split_names(injected);
    let dropped: Vec<&str> = recorded.iter().copied().filter(|n| remove.contains(n)).collect();
    if dropped.is_empty() {
        return None;
    }
    let mut ops = Vec::new();
    // From the end, so earlier indices stay valid.
    for (i, name) in existing.iter().enumerate().rev() {
        if dropped.contains(name) {
            let index = i.to_string();
            ops.push(test(pointer(["imagePullSecrets", &index, "name"]), json!(name)));
            ops.push(PatchOperation::Remove(RemoveOperation { path: pointer(["imagePullSecrets", &index]) }));
        }
    }
    ops.push(test(injected_annotation(), json!(injected)));
    let left: Vec<&str> = recorded.into_iter().filter(|n| !dropped.contains(n)).collect();
    ops.push(if left.is_empty() {
        PatchOperation::Remove(RemoveOperation { path: injected_annotation() })
    } else {
        PatchOperation::Replace(ReplaceOperation { path: injected_annotation(), value: json!(left.join(",")) })
    });
    Some(json_patch::Patch(ops))
}

/// The names in a comma-separated annotation value.
pub fn split_names(value: &str) -> Vec<&str> {
    value.split(',').map(str::trim).filter(|n| !n.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(doc: &mut Value, patch: &json_patch::Patch) {
        json_patch::patch(doc, patch).unwrap();
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn absent_field_gets_one_add_of_the_whole_list() {
        let wanted = vec!["a".to_string(), "b".to_string()];
        let addition = build(Target::Pod, None, &wanted, false, None).unwrap();
        let ops: Value = serde_json::from_slice(&addition.to_json()).unwrap();
        assert_eq!(
            ops,
            json!([{ "op": "add", "path": "/spec/imagePullSecrets", "value": [{"name": "a"}, {"name": "b"}] }])
        );
        assert_eq!(addition.added, wanted);
    }

    #[test]
    fn present_field_is_appended_in_order_without_duplicates_and_is_idempotent() {
        let mut pod = json!({ "spec": { "imagePullSecrets": [{ "name": "own" }, { "name": "b" }] } });
        let wanted = vec!["a".to_string(), "b".to_string(), "a".to_string()];
        let addition = build(Target::Pod, Some(&["own", "b"]), &wanted, false, None).unwrap();
        let ops: Value = serde_json::from_slice(&addition.to_json()).unwrap();
        assert!(ops.as_array().unwrap().iter().all(|op| op["op"] == "add"));
        apply(&mut pod, &addition.operations);
        assert_eq!(names(&pod["spec"]["imagePullSecrets"]), ["own", "b", "a"]);
        assert_eq!(build(Target::Pod, Some(&["own", "b", "a"]), &wanted, false, None), None);
    }

    #[test]
    fn service_account_records_what_it_added_next_to_what_was_recorded() {
        let mut sa = json!({ "metadata": { "name": "op" }, "imagePullSecrets": [{ "name": "x" }] });
        let wanted = vec!["x".to_string(), "y".to_string()];
        let addition = build(Target::ServiceAccount, Some(&["x"]), &wanted, false, None).unwrap();
        apply(&mut sa, &addition.operations);
        assert_eq!(names(&sa["imagePullSecrets"]), ["x", "y"]);
        assert_eq!(sa["metadata"]["annotations"][INJECTED_ANNOTATION], "y");

        let mut sa = json!({ "metadata": { "annotations": { "keep": "1", INJECTED_ANNOTATION: "old" } } });
        let addition = build(Target::ServiceAccount, None, &wanted, true, Some("old")).unwrap();
        apply(&mut sa, &addition.operations);
        assert_eq!(names(&sa["imagePullSecrets"]), ["x", "y"]);
        assert_eq!(sa["metadata"]["annotations"][INJECTED_ANNOTATION], "old,x,y");
        assert_eq!(sa["metadata"]["annotations"]["keep"], "1");
    }

    #[test]
    fn removal_takes_out_only_what_we_recorded() {
        let mut sa = json!({
            "metadata": { "annotations": { "keep": "1", INJECTED_ANNOTATION: "ours,gone" } },
            "imagePullSecrets": [{ "name": "own" }, { "name": "ours" }, { "name": "theirs" }, { "name": "ours" }]
        });
        let existing = ["own", "ours", "theirs", "ours"];
        // "theirs" is not recorded as ours: never removed, whatever the caller asks.
        let patch = removal(&existing, "ours,gone", &["ours", "theirs"]).unwrap();
        apply(&mut sa, &patch);
        assert_eq!(names(&sa["imagePullSecrets"]), ["own", "theirs"]);
        assert_eq!(sa["metadata"]["annotations"][INJECTED_ANNOTATION], "gone");
        assert_eq!(sa["metadata"]["annotations"]["keep"], "1");

        let patch = removal(&["own", "theirs"], "gone", &["gone"]).unwrap();
        apply(&mut sa, &patch);
        assert_eq!(names(&sa["imagePullSecrets"]), ["own", "theirs"]);
        assert!(sa["metadata"]["annotations"].get(INJECTED_ANNOTATION).is_none());

        assert_eq!(removal(&["own"], "ours", &["own"]), None);
    }

    #[test]
    fn removal_fails_when_the_list_changed_since_it_was_read() {
        let mut sa = json!({
            "metadata": { "annotations": { INJECTED_ANNOTATION: "ours" } },
            "imagePullSecrets": [{ "name": "new-first" }, { "name": "ours" }]
        });
        let patch = removal(&["ours"], "ours", &["ours"]).unwrap();
        assert!(json_patch::patch(&mut sa, &patch).is_err());
        assert_eq!(names(&sa["imagePullSecrets"]), ["new-first", "ours"]);
    }

    #[test]
    fn splits_recorded_names() {
        assert_eq!(split_names(" a, ,b,"), ["a", "b"]);
        assert!(split_names("").is_empty());
    }
}
