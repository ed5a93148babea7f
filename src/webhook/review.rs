//! AdmissionReview in and out. The request is parsed borrowed and only for the fields a decision
//! uses; the response is written directly, with the patch base64-encoded as the API expects.

use std::borrow::Cow;

use base64::Engine;
use serde::Deserialize;

use crate::error::ReviewError;

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "apiVersion")]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

/// The parts of `AdmissionReview.request` a decision reads.
#[derive(Deserialize, Debug)]
pub struct Request<'a> {
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: GroupVersionKind<'a>,
    #[serde(borrow)]
    pub operation: Cow<'a, str>,
    #[serde(borrow, default)]
    pub namespace: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, rename = "dryRun")]
    pub dry_run: Option<bool>,
    #[serde(borrow, default)]
    pub object: Option<Object<'a>>,
}

#[derive(Deserialize, Debug)]
pub struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    pub group: Cow<'a, str>,
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

/// A Pod or a ServiceAccount, reduced to what the webhook reads.
#[derive(Deserialize, Debug, Default)]
pub struct Object<'a> {
    #[serde(borrow, default)]
    pub metadata: Metadata<'a>,
    /// Pod: `spec.imagePullSecrets`.
    #[serde(borrow, default)]
    pub spec: Option<PodSpec<'a>>,
    /// ServiceAccount: `imagePullSecrets`.
    #[serde(borrow, default, rename = "imagePullSecrets")]
    pub image_pull_secrets: Option<Vec<NameRef<'a>>>,
}

#[derive(Deserialize, Debug, Default)]
pub struct Metadata<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "generateName")]
    pub generate_name: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "ownerReferences")]
    pub owner_references: Vec<OwnerReference<'a>>,
    #[serde(borrow, default)]
    pub annotations: Option<Annotations<'a>>,
}

/// Only the one annotation the webhook itself writes is kept.
#[derive(Debug, Default)]
pub struct Annotations<'a> {
    pub present: bool,
    pub injected: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Annotations<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Annotations<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Annotations { present: true, injected: None };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == crate::INJECTED_ANNOTATION {
                        out.injected = Some(map.next_value()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Debug, Clone)]
pub struct OwnerReference<'a> {
    #[serde(borrow, rename = "apiVersion")]
    pub api_version: Cow<'a, str>,
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
}

#[derive(Deserialize, Debug, Default)]
pub struct PodSpec<'a> {
    #[serde(borrow, default, rename = "imagePullSecrets")]
    pub image_pull_secrets: Option<Vec<NameRef<'a>>>,
}

#[derive(Deserialize, Debug)]
pub struct NameRef<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
}

/// Kubernetes' own bounds on what a review names: a UID (the API server's are 36 bytes), a
/// namespace (a DNS label), an object name (a DNS subdomain), a group or kind, a version, an
/// operation. A review past one of them did not come from an API server.
const MAX_UID: usize = 128;
const MAX_LABEL: usize = 63;
const MAX_SUBDOMAIN: usize = 253;
const MAX_OPERATION: usize = 16;
/// Our annotation lists names we added: far fewer than this.
const MAX_INJECTED: usize = 16 * 1024;

/// Parses an AdmissionReview body. Anything that is not an admission.k8s.io/v1 AdmissionReview
/// with a request and a uid, or whose fields exceed what the API server sends, is rejected; the
/// caller answers HTTP 400. (ownerReferences are the API server's to validate after admission: an
/// unusable one is dropped where the owner chain is followed.)
pub fn parse(body: &[u8]) -> Result<Request<'_>, ReviewError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(ReviewError::Json)?;
    match envelope.api_version.as_deref() {
        Some(API_VERSION) => {}
        other => return Err(ReviewError::ApiVersion(other.unwrap_or("").to_string())),
    }
    if envelope.kind.as_deref() != Some("AdmissionReview") {
        return Err(ReviewError::Kind(envelope.kind.unwrap_or_default().into_owned()));
    }
    let request = envelope.request.ok_or(ReviewError::MissingRequest)?;
    if request.uid.is_empty() {
        return Err(ReviewError::MissingUid);
    }
    bound(&request)?;
    Ok(request)
}

fn bound(request: &Request<'_>) -> Result<(), ReviewError> {
    let check = |field: &'static str, value: Option<&str>, limit: usize| match value {
        Some(value) if value.len() > limit => Err(ReviewError::TooLong { field, limit }),
        _ => Ok(()),
    };
    check("request.uid", Some(&request.uid), MAX_UID)?;
    check("request.namespace", request.namespace.as_deref(), MAX_LABEL)?;
    check("request.name", request.name.as_deref(), MAX_SUBDOMAIN)?;
    check("request.operation", Some(&request.operation), MAX_OPERATION)?;
    check("request.kind.group", Some(&request.kind.group), MAX_SUBDOMAIN)?;
    check("request.kind.version", Some(&request.kind.version), MAX_LABEL)?;
    check("request.kind.kind", Some(&request.kind.kind), MAX_LABEL)?;
    let Some(object) = &request.object else { return Ok(()) };
    check("metadata.name", object.metadata.name.as_deref(), MAX_SUBDOMAIN)?;
    check("metadata.generateName", object.metadata.generate_name.as_deref(), MAX_SUBDOMAIN)?;
    let injected = object.metadata.annotations.as_ref().and_then(|a| a.injected.as_deref());
    check(crate::INJECTED_ANNOTATION, injected, MAX_INJECTED)?;
    for name in request.image_pull_secrets().into_iter().flatten() {
        check("imagePullSecrets[].name", Some(name), MAX_SUBDOMAIN)?;
    }
    Ok(())
}

impl Request<'_> {
    /// The names in the object's `imagePullSecrets`, and whether the field is present at all.
    pub fn image_pull_secrets(&self) -> Option<Vec<&str>> {
        let object = self.object.as_ref()?;
        let list = match self.kind.kind.as_ref() {
            "Pod" => object.spec.as_ref()?.image_pull_secrets.as_ref()?,
            _ => object.image_pull_secrets.as_ref()?,
        };
        Some(list.iter().filter_map(|r| r.name.as_deref()).collect())
    }

    /// The object's name, or its generateName prefix for objects not yet named.
    pub fn display_name(&self) -> &str {
        let meta = self.object.as_ref().map(|o| &o.metadata);
        self.name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or_else(|| meta.and_then(|m| m.name.as_deref()))
            .or_else(|| meta.and_then(|m| m.generate_name.as_deref()))
            .unwrap_or("")
    }
}

/// The answer to one review, written as JSON without building a value tree.
pub enum Verdict<'p> {
    Allow { patch: Option<&'p [u8]>, warnings: &'p [String] },
    Deny { code: u16, message: &'p str },
}

pub fn respond(uid: &str, verdict: &Verdict) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#);
    // serde_json escapes the uid exactly as JSON requires.
    serde_json::to_writer(&mut out, uid).expect("writing to a Vec cannot fail");
    match verdict {
        Verdict::Allow { patch, warnings } => {
            out.extend_from_slice(br#","allowed":true"#);
            if let Some(patch) = patch {
                out.extend_from_slice(br#","patchType":"JSONPatch","patch":""#);
                let encoded = base64::engine::general_purpose::STANDARD.encode(patch);
                out.extend_from_slice(encoded.as_bytes());
                out.push(b'"');
            }
            if !warnings.is_empty() {
                out.extend_from_slice(br#","warnings":"#);
                serde_json::to_writer(&mut out, warnings).expect("writing to a Vec cannot fail");
            }
        }
        Verdict::Deny { code, message } => {
            out.extend_from_slice(br#","allowed":false,"status":{"code":"#);
            out.extend_from_slice(code.to_string().as_bytes());
            out.extend_from_slice(br#","message":"#);
            serde_json::to_writer(&mut out, message).expect("writing to a Vec cannot fail");
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn review(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request})).unwrap()
    }

    #[test]
    fn parses_the_fields_a_decision_uses_and_nothing_else() {
        let body = review(json!({
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": "team-a", "dryRun": true,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "metadata": {"generateName": "web-7c9-", "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7c9", "uid": "rs-uid", "controller": true}
                ], "annotations": {"a": "b", "pullsecret-injector.io/injected": "x"}},
                "spec": {"containers": [{"name": "c", "image": "i"}], "imagePullSecrets": [{"name": "own"}]}
            }
        }));
        let req = parse(&body).unwrap();
        assert_eq!(req.uid, "u-1");
        assert_eq!(req.kind.kind, "Pod");
        assert_eq!(req.dry_run, Some(true));
        assert_eq!(req.display_name(), "web-7c9-");
        assert_eq!(req.image_pull_secrets(), Some(vec!["own"]));
        let meta = &req.object.as_ref().unwrap().metadata;
        assert_eq!(meta.owner_references[0].uid, "rs-uid");
        assert_eq!(meta.annotations.as_ref().unwrap().injected.as_deref(), Some("x"));
    }

    #[test]
    fn absent_and_null_pull_secrets_are_both_absent() {
        for spec in [json!({}), json!({"imagePullSecrets": null})] {
            let body = review(json!({"uid": "u", "kind": {"version": "v1", "kind": "Pod"}, "operation": "CREATE",
                "object": {"metadata": {}, "spec": spec}}));
            assert_eq!(parse(&body).unwrap().image_pull_secrets(), None);
        }
    }

    #[test]
    fn rejects_what_is_not_a_v1_review_with_a_request() {
        assert!(matches!(parse(b"not json"), Err(ReviewError::Json(_))));
        let request = json!({"uid": "u", "kind": {"version": "v1", "kind": "Pod"}, "operation": "CREATE"});
        let wrong_version =
            json!({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": request});
        assert!(matches!(parse(wrong_version.to_string().as_bytes()), Err(ReviewError::ApiVersion(_))));
        let no_request = json!({"apiVersion": API_VERSION, "kind": "AdmissionReview"});
        assert!(matches!(parse(no_request.to_string().as_bytes()), Err(ReviewError::MissingRequest)));
        let empty_uid = review(json!({"uid": "", "kind": {"version": "v1", "kind": "Pod"}, "operation": "CREATE"}));
        assert!(matches!(parse(&empty_uid), Err(ReviewError::MissingUid)));
    }

    #[test]
    fn fields_longer_than_kubernetes_allows_are_refused() {
        let long = |n: usize| "x".repeat(n);
        let base = || {
            json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
                "namespace": "t", "name": "p", "object": {"metadata": {"name": "p"}, "spec": {"imagePullSecrets": [{"name": "s"}]}}})
        };
        assert!(parse(&review(base())).is_ok());
        type Set = fn(&mut Value, String);
        let cases: [(&str, Set); 8] = [
            ("request.uid", |r, v| r["uid"] = json!(v)),
            ("request.namespace", |r, v| r["namespace"] = json!(v)),
            ("request.name", |r, v| r["name"] = json!(v)),
            ("request.kind.kind", |r, v| r["kind"]["kind"] = json!(v)),
            ("request.kind.group", |r, v| r["kind"]["group"] = json!(v)),
            ("metadata.name", |r, v| r["object"]["metadata"]["name"] = json!(v)),
            ("metadata.generateName", |r, v| r["object"]["metadata"]["generateName"] = json!(v)),
            ("imagePullSecrets[].name", |r, v| r["object"]["spec"]["imagePullSecrets"][0]["name"] = json!(v)),
        ];
        for (field, set) in cases {
            let mut request = base();
            set(&mut request, long(1024 * 1024));
            match parse(&review(request)) {
                Err(ReviewError::TooLong { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        // At Kubernetes' own limits, accepted.
        let mut request = base();
        request["namespace"] = json!(long(63));
        request["object"]["metadata"]["name"] = json!(long(253));
        assert!(parse(&review(request)).is_ok());
    }

    #[test]
    fn responses_are_valid_json_that_echo_the_uid() {
        let patch = br#"[{"op":"add","path":"/spec/imagePullSecrets","value":[{"name":"a"}]}]"#;
        let allowed: Value =
            serde_json::from_slice(&respond("u\"1", &Verdict::Allow { patch: Some(patch), warnings: &["w".into()] }))
                .unwrap();
        assert_eq!(allowed["response"]["uid"], "u\"1");
        assert_eq!(allowed["response"]["patchType"], "JSONPatch");
        let decoded =
            base64::engine::general_purpose::STANDARD.decode(allowed["response"]["patch"].as_str().unwrap()).unwrap();
        assert_eq!(decoded, patch);
        assert_eq!(allowed["response"]["warnings"], json!(["w"]));

        let denied: Value =
            serde_json::from_slice(&respond("u2", &Verdict::Deny { code: 503, message: "try \"again\"" })).unwrap();
        assert_eq!(denied["response"]["allowed"], false);
        assert_eq!(denied["response"]["status"]["code"], 503);
        assert_eq!(denied["kind"], "AdmissionReview");
    }
}
