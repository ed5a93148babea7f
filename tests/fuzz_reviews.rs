//! Mutated AdmissionReviews through the real router, in process: whatever the body,
//! the answer is 200 with a review that echoes the uid, or 400 with a JSON error; never a panic,
//! never a 5xx. The caches are synced from fixtures in which the seeds' namespace is reached by
//! an operator, so reviews that still parse go through the resolver, the owner lookups and the
//! copies (to the in-memory API), not only the fast path.

mod support;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use olm_pullsecret_injector::state::caches::Fixture;
use olm_pullsecret_injector::webhook::OnCopyFailure;
use serde_json::{Value, json};
use support::fixtures::*;
use tower::ServiceExt;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-", "namespace": "t",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "r-1", "controller": true}],
        "annotations": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "X", "value": "\u{e9}\"\\"}]}],
                 "imagePullSecrets": [{"name": "own"}]}});
    let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "namespace": "t",
        "annotations": {"pullsecret-injector.io/injected": "x,y"}}, "imagePullSecrets": [{"name": "x"}]});
    let review = |kind: &str, resource: &str, operation: &str, object: &Value| {
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "6f2c-uid", "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource}, "namespace": "t",
            "operation": operation, "userInfo": {"username": "u"}, "object": object, "oldObject": object,
            "dryRun": false}}))
        .unwrap()
    };
    vec![
        review("Pod", "pods", "CREATE", &pod),
        review("ServiceAccount", "serviceaccounts", "UPDATE", &sa),
        review("ConfigMap", "configmaps", "DELETE", &json!(null)),
    ]
}

const STRUCTURAL: &[u8] = b"{}[]\":,\\ 0-9eE.tfn\x00\xff\xc3";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut body = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(body.len().max(1));
        match rng.below(6) {
            0 => body.truncate(at),
            1 if at < body.len() => body[at] = STRUCTURAL[rng.below(STRUCTURAL.len())],
            2 if at < body.len() => body[at] = rng.next() as u8,
            3 => {
                let end = (at + rng.below(64)).min(body.len());
                let copy = body[at..end].to_vec();
                let to = rng.below(body.len().max(1));
                body.splice(to..to, copy);
            }
            4 => {
                let depth = rng.below(300);
                let nested: Vec<u8> =
                    std::iter::repeat_n(b'[', depth).chain(std::iter::repeat_n(b']', depth)).collect();
                body.splice(at.min(body.len())..at.min(body.len()), nested);
            }
            _ => {
                let end = (at + rng.below(32)).min(body.len());
                body.drain(at.min(end)..end);
            }
        }
    }
    body
}

#[tokio::test]
async fn mutated_reviews_get_200_or_400_never_a_panic_or_5xx() {
    // An operator from a catalog with a secret is installed in the seeds' namespace `t`; the
    // seed Pod's ReplicaSet is owned by its CSV, the seed ServiceAccount named by it.
    let world = World::new(Fixture {
        catalogs: vec![catalog(MARKETPLACE, "private", &["creds"], json!({}))],
        subscriptions: vec![subscription("t", MARKETPLACE, "private", "op.v1", "op.v1")],
        csvs: vec![csv("t", "op.v1", &[], &["sa"])],
        operator_groups: vec![operator_group("t", &["t"])],
        namespaces: vec![namespace("t", json!({}), json!({}))],
        secrets: vec![pull_secret(MARKETPLACE, "creds")],
        ..Default::default()
    });
    world.owners.insert("t", "ReplicaSet", "web-1", "r-1", vec![csv_owner("t", "op.v1")]);
    let router = world.router(OnCopyFailure::Deny);
    let mut patched = 0;

    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let seeds = seeds();
    let (mut ok, mut bad) = (0, 0);
    for i in 0..40_000 {
        let body = match seeds.get(i) {
            Some(seed) => seed.clone(),
            None => {
                let seed = &seeds[rng.below(seeds.len())];
                mutate(&mut rng, seed)
            }
        };
        let request =
            Request::post("/mutate").header("content-type", "application/json").body(Body::from(body.clone()));
        let response = router.clone().oneshot(request.unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("status {status}, body not JSON ({e}) for input {:?}", String::from_utf8_lossy(&body))
        });
        match status {
            200 => {
                ok += 1;
                assert_eq!(answer["kind"], "AdmissionReview");
                // Skipped fields are not decoded (a lone surrogate escape in one is still
                // answered), so the uid sent is read the way the webhook reads it.
                let sent = olm_pullsecret_injector::webhook::review::parse(&body).unwrap();
                assert_eq!(answer["response"]["uid"], sent.uid.as_ref());
                if answer["response"]["patch"].is_string() {
                    patched += 1;
                }
            }
            400 => {
                bad += 1;
                assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");
            }
            other => panic!("status {other} for input {:?}: {answer}", String::from_utf8_lossy(&body)),
        }
    }
    println!("{ok} answered ({patched} patched), {bad} refused with 400");
    assert!(ok > 100 && bad > 100, "the mutations must reach both outcomes: {ok} ok, {bad} bad");
    assert!(patched > 100, "reviews must reach the resolver and be patched: {patched}");
    assert_eq!(world.api.secret_creates(), 1, "one copy however many reviews");
}
