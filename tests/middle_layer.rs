//! The middle layer (no control plane): the resolver and the webhook's router driven in process
//! over caches filled from fixture CatalogSources, Subscriptions, CSVs and OperatorGroups, owners
//! from an in-memory map and copies written to an in-memory API. Each test takes milliseconds;
//! the end-to-end tests prove the same behaviour against the real API server.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use olm_pullsecret_injector::resolve::owners::OwnerRef;
use olm_pullsecret_injector::resolve::{Kind, Provision, Resolution, Skip, Subject};
use olm_pullsecret_injector::state::caches::Fixture;
use olm_pullsecret_injector::telemetry::metrics::Outcome;
use olm_pullsecret_injector::webhook::observe::MARK_INTERVAL;
use olm_pullsecret_injector::webhook::{FailurePolicy, OnCopyFailure};
use serde_json::{Value, json};
use support::eventually;
use support::fixtures::*;

const WIDGET: (&str, &str, &str) = ("example.com", "Widget", "widgets");

/// A private catalog in the marketplace with the pull secret `creds`; an operator installed from
/// it in `ops` for `ops` and `tenant`, owning Widgets; and in `tenant` the operand chain
/// Widget/prod <- Deployment/web <- ReplicaSet/web-1.
fn fixture() -> Fixture {
    Fixture {
        catalogs: vec![catalog(MARKETPLACE, "private", &["creds"], json!({}))],
        subscriptions: vec![subscription("ops", MARKETPLACE, "private", "op.v1", "op.v1")],
        csvs: vec![csv("ops", "op.v1", &[WIDGET], &["op-sa"])],
        operator_groups: vec![operator_group("ops", &["ops", "tenant"])],
        namespaces: ["ops", "tenant", "other", MARKETPLACE]
            .iter()
            .map(|n| namespace(n, json!({}), json!({})))
            .collect(),
        secrets: vec![pull_secret(MARKETPLACE, "creds")],
        ..Default::default()
    }
}

fn widget(name: &str, uid: &str) -> OwnerRef {
    owner("example.com/v1", "Widget", name, uid)
}

fn replica_set(name: &str, uid: &str) -> OwnerRef {
    owner("apps/v1", "ReplicaSet", name, uid)
}

fn deployment(name: &str, uid: &str) -> OwnerRef {
    owner("apps/v1", "Deployment", name, uid)
}

/// The fixture world with the operand chain's owners in `tenant`.
fn world() -> World {
    let world = World::new(fixture());
    world.owners.insert("tenant", "Widget", "prod", "w-1", vec![]);
    world.owners.insert("tenant", "Deployment", "web", "d-1", vec![widget("prod", "w-1")]);
    world.owners.insert("tenant", "ReplicaSet", "web-1", "r-1", vec![deployment("web", "d-1")]);
    world
}

async fn resolve(world: &World, kind: Kind, ns: &str, name: &str, owners: Vec<OwnerRef>) -> Resolution {
    let subject = Subject { kind, namespace: ns, name, owner_references: owners };
    world.ctx.resolver.resolve(&subject).await.unwrap()
}

fn dropped(resolution: &Resolution) -> String {
    resolution.chains.dropped.join("; ")
}

fn names(patch: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for op in patch.as_array().unwrap() {
        match &op["value"] {
            Value::Array(list) => out.extend(list.iter().map(|e| e["name"].as_str().unwrap().to_string())),
            Value::Object(entry) if entry.contains_key("name") => out.push(entry["name"].as_str().unwrap().to_string()),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn an_operand_pod_gets_a_copy_through_the_router_and_the_decision_names_its_chain() {
    let world = world();
    let webhook = world.webhook(OnCopyFailure::Deny);
    let mut decisions = webhook.follow_decisions();
    let router = olm_pullsecret_injector::router(webhook, Default::default());
    let (status, answer) =
        post(&router, review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None))).await;
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["uid"], "uid-Pod-tenant");
    assert_eq!(
        patch_of(&answer).unwrap(),
        json!([{ "op": "add", "path": "/spec/imagePullSecrets", "value": [{ "name": "creds" }] }])
    );
    let copy = world.api.secret("tenant", "creds").expect("the copy was created");
    assert_eq!(copy["metadata"]["labels"]["app.kubernetes.io/managed-by"], "olm-pullsecret-injector");
    assert_eq!(copy["metadata"]["annotations"]["pullsecret-injector.io/source"], "openshift-marketplace/creds");
    let entry = world.api.ledger_entry("tenant", "creds").expect("the copy is in the ledger");
    assert_eq!(entry["spec"]["source"], "openshift-marketplace/creds");
    assert_eq!(entry["spec"]["contentHash"], copy["metadata"]["annotations"]["pullsecret-injector.io/content-hash"]);

    let decision = decisions.recv().await.unwrap();
    assert_eq!(decision.outcome, Outcome::Patched);
    assert_eq!(
        decision.chain,
        [
            "Pod<-ReplicaSet/web-1<-Deployment/web<-Widget/prod<-CSV/op.v1<-Subscription/sub-private<-CatalogSource/openshift-marketplace/private"
        ]
    );
    assert_eq!(decision.secrets, ["creds"]);
}

/// A new ReplicaSet's first Pod: the Deployment its name points at is fetched alongside it, so
/// the chain costs two round trips (ReplicaSet and Deployment together, then the Widget), not
/// three. The guess believes nothing: a ReplicaSet named unlike its Deployment still resolves
/// through its verified reference, at the cost of one GET for the name it pointed at.
#[tokio::test(start_paused = true)]
async fn a_new_replica_sets_deployment_is_fetched_alongside_it() {
    let world = world();
    world.owners.set_latency(std::time::Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    let resolution = resolve(&world, Kind::Pod, "tenant", "", vec![replica_set("web-1", "r-1")]).await;
    let elapsed = started.elapsed();
    assert_eq!(resolution.chains.found.len(), 1, "{}", dropped(&resolution));
    assert!(elapsed.as_millis() < 150, "two round trips, not three: {elapsed:?}");
    assert_eq!(world.owners.lookups(), 3, "ReplicaSet, Deployment, Widget: none twice");

    world.owners.insert("tenant", "ReplicaSet", "solo-2", "r-2", vec![deployment("web", "d-1")]);
    let resolution = resolve(&world, Kind::Pod, "tenant", "", vec![replica_set("solo-2", "r-2")]).await;
    assert_eq!(resolution.chains.found.len(), 1, "{}", dropped(&resolution));
    assert_eq!(world.owners.lookups(), 5, "the ReplicaSet, and Deployment/solo, which does not exist");
}

/// Owner lookups stalled past the deadline (an overloaded API server, or forged reviews ahead in
/// the queue): the review is answered as the configured failure policy says. Ignore admits the
/// Pod without a patch and says why in a warning, the decision log and a metric; Fail refuses it,
/// retryably.
#[tokio::test(start_paused = true)]
async fn a_review_not_decided_in_time_follows_the_failure_policy() {
    let world = world();
    world.owners.set_latency(std::time::Duration::from_secs(10));
    let undecided = |policy: &str| {
        let metrics = olm_pullsecret_injector::telemetry::metrics::encode();
        let line = format!("pullsecret_injector_reviews_undecided_total{{failure_policy=\"{policy}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(&line).map(|n| n.parse::<u64>().unwrap())).unwrap()
    };
    let before = undecided("Ignore");
    let webhook = world.webhook_with(FailurePolicy::Ignore, OnCopyFailure::Deny);
    let mut decisions = webhook.follow_decisions();
    let router = olm_pullsecret_injector::router(webhook, Default::default());
    let review = || review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None));
    let (status, answer) = post(&router, review()).await;
    assert_eq!((status, &answer["response"]["allowed"]), (200, &json!(true)), "{answer}");
    assert!(patch_of(&answer).is_none());
    let warning = answer["response"]["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("could not decide within 2s") && warning.contains("failurePolicy Ignore"), "{answer}");
    assert_eq!(decisions.recv().await.unwrap().outcome, Outcome::Error);
    assert_eq!(undecided("Ignore"), before + 1);

    let router = olm_pullsecret_injector::router(
        world.webhook_with(FailurePolicy::Fail, OnCopyFailure::Allow),
        Default::default(),
    );
    let (_, answer) = post(&router, review()).await;
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert_eq!(answer["response"]["status"]["code"], 503);
}

/// Owners are read from the API server's watch cache; one the cache does not have yet (it lags a
/// create) is read again from etcd and found, so a Pod of a ReplicaSet created a moment ago still
/// resolves. The Deployment fetched alongside is only a guess: it is not read from etcd until
/// the verified ReplicaSet names it.
#[tokio::test]
async fn an_owner_the_api_servers_cache_does_not_have_yet_is_read_from_etcd() {
    let world = world();
    world.owners.insert_lagging("tenant", "Deployment", "fresh", "d-2", vec![widget("prod", "w-1")]);
    world.owners.insert_lagging("tenant", "ReplicaSet", "fresh-1", "r-2", vec![deployment("fresh", "d-2")]);
    let resolution = resolve(&world, Kind::Pod, "tenant", "", vec![replica_set("fresh-1", "r-2")]).await;
    assert_eq!(resolution.chains.found.len(), 1, "{}", dropped(&resolution));
    assert_eq!(
        world.owners.lookups(),
        6,
        "ReplicaSet from the cache and from etcd, the Deployment guessed from the cache, then looked up \
         from the cache and etcd, the Widget from the cache"
    );
}

#[tokio::test]
async fn a_warm_review_makes_no_lookup_and_no_write() {
    let world = world();
    let router = world.router(OnCopyFailure::Deny);
    let body = review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None));
    post(&router, body.clone()).await;
    let (lookups, requests) = (world.owners.lookups(), world.api.requests().len());
    assert_eq!(lookups, 3, "ReplicaSet, Deployment, Widget: one lookup each");
    for _ in 0..10 {
        let (_, answer) = post(&router, body.clone()).await;
        assert!(patch_of(&answer).is_some());
    }
    assert_eq!(world.owners.lookups(), lookups);
    assert_eq!(world.api.requests().len(), requests, "{:?}", world.api.requests());

    // A Pod that already lists the copy (our own output, reinvoked) gets no patch.
    let (_, answer) =
        post(&router, review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], Some(&["own", "creds"]))))
            .await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(patch_of(&answer).is_none(), "{answer}");
}

#[tokio::test]
async fn an_owner_whose_uid_does_not_match_is_not_believed() {
    let world = world();
    let forged = resolve(&world, Kind::Pod, "tenant", "", vec![replica_set("web-1", "forged")]).await;
    assert!(forged.found().is_empty());
    assert!(dropped(&forged).contains("ReplicaSet/web-1: owner not found with that UID"), "{}", dropped(&forged));
    // Read from etcd too, and remembered briefly: a tenant repeating it costs no further GET.
    let lookups = world.owners.lookups();
    resolve(&world, Kind::Pod, "tenant", "", vec![replica_set("web-1", "forged")]).await;
    assert_eq!(world.owners.lookups(), lookups, "a UID found wanting is not looked up again at once");
    let forged_csv = resolve(
        &world,
        Kind::Pod,
        "ops",
        "",
        vec![owner("operators.coreos.com/v1alpha1", "ClusterServiceVersion", "op.v1", "forged")],
    )
    .await;
    assert!(dropped(&forged_csv).contains("UID does not match the CSV"), "{}", dropped(&forged_csv));

    let router = world.router(OnCopyFailure::Deny);
    let (_, answer) =
        post(&router, review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "forged")], None))).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(patch_of(&answer).is_none());
    assert_eq!(world.api.secret_creates(), 0, "nothing copied for a forged owner");
}

#[tokio::test]
async fn an_ownership_cycle_ends_the_path() {
    let world = world();
    world.owners.insert("tenant", "ReplicaSet", "a", "ra", vec![deployment("b", "db")]);
    world.owners.insert("tenant", "Deployment", "b", "db", vec![replica_set("a", "ra")]);
    let resolution = resolve(&world, Kind::Pod, "tenant", "", vec![replica_set("a", "ra")]).await;
    assert!(resolution.found().is_empty());
    assert!(dropped(&resolution).contains("ownership cycle"), "{}", dropped(&resolution));
}

#[tokio::test]
async fn chains_deeper_than_the_limit_are_dropped() {
    let world = world();
    // rs-0 <- rs-1 <- ... <- rs-9 <- Widget/prod: ten owners above the Pod.
    for i in 0..10 {
        let above =
            if i == 9 { widget("prod", "w-1") } else { replica_set(&format!("rs-{}", i + 1), &format!("u-{}", i + 1)) };
        world.owners.insert("tenant", "ReplicaSet", &format!("rs-{i}"), &format!("u-{i}"), vec![above]);
    }
    let resolution = resolve(&world, Kind::Pod, "tenant", "", vec![replica_set("rs-0", "u-0")]).await;
    assert!(resolution.found().is_empty());
    assert!(dropped(&resolution).contains("deeper than 8"), "{}", dropped(&resolution));

    // Within the limit the same kind of chain resolves.
    let short = resolve(&world, Kind::Pod, "tenant", "", vec![replica_set("rs-5", "u-5")]).await;
    assert_eq!(short.catalogs(), ["openshift-marketplace/private"]);
}

#[tokio::test]
async fn a_custom_resource_of_an_operator_that_does_not_reach_the_namespace_gives_nothing() {
    let world = world();
    world.owners.insert("other", "Widget", "prod", "w-9", vec![]);
    let resolution = resolve(&world, Kind::Pod, "other", "", vec![widget("prod", "w-9")]).await;
    assert!(resolution.found().is_empty());
    assert!(
        dropped(&resolution).contains("no operator owning Widget reaches namespace other"),
        "{}",
        dropped(&resolution)
    );
    assert_eq!(world.owners.lookups(), 0, "an out-of-scope kind is not even looked up");
    assert_eq!(world.ctx.resolver.skip("other"), Some(Skip::NotReached));
}

#[tokio::test]
async fn a_service_account_named_by_the_install_strategy_gets_the_secret_and_the_record() {
    let world = world();
    let router = world.router(OnCopyFailure::Deny);
    let sa =
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "op-sa", "namespace": "ops" } });
    let (_, answer) = post(&router, review("ServiceAccount", "CREATE", "ops", sa)).await;
    let patch = patch_of(&answer).expect("patched");
    assert_eq!(names(&patch), ["creds"]);
    assert_eq!(patch[1]["value"]["pullsecret-injector.io/injected"], "creds", "{patch}");
    let resolution = resolve(&world, Kind::ServiceAccount, "ops", "op-sa", vec![]).await;
    assert_eq!(
        resolution.chain_texts(),
        [
            "ServiceAccount/op-sa<-CSV/op.v1(install strategy)<-Subscription/sub-private<-CatalogSource/openshift-marketplace/private"
        ]
    );

    let unnamed = resolve(&world, Kind::ServiceAccount, "ops", "default", vec![]).await;
    assert!(unnamed.found().is_empty());
}

#[tokio::test]
async fn the_catalogs_namespace_selector_decides_where_its_secrets_go() {
    let mut fixture = fixture();
    fixture.catalogs = vec![catalog(
        MARKETPLACE,
        "private",
        &["creds"],
        json!({ "pullsecret-injector.io/namespace-selector": "tier=prod" }),
    )];
    fixture.namespaces.push(namespace("tenant", json!({ "tier": "dev" }), json!({})));
    let mut world = World::new(fixture);
    world.owners.insert("tenant", "Widget", "prod", "w-1", vec![]);
    let dev = resolve(&world, Kind::Pod, "tenant", "", vec![widget("prod", "w-1")]).await;
    assert!(dev.found().is_empty());
    assert!(dropped(&dev).contains("namespace not selected by the catalog"), "{}", dropped(&dev));

    world.feed.apply(namespace("tenant", json!({ "tier": "prod" }), json!({})));
    let prod = resolve(&world, Kind::Pod, "tenant", "", vec![widget("prod", "w-1")]).await;
    assert_eq!(prod.catalogs(), ["openshift-marketplace/private"]);
}

#[tokio::test]
async fn copied_csvs_are_never_anchors() {
    let mut fixture = fixture();
    fixture.csvs.push(copied_csv("tenant", "op.v1", "ops"));
    let world = World::new(fixture);
    let resolution = resolve(&world, Kind::Pod, "tenant", "", vec![csv_owner("tenant", "op.v1")]).await;
    assert!(resolution.found().is_empty());
    assert!(dropped(&resolution).contains("no such CSV"), "{}", dropped(&resolution));
}

/// An upgrade as OLM runs it: `installedCSV` and `currentCSV` name v2 as soon as v2 exists,
/// while v1 (which v2 `replaces`) keeps running its Deployment until v2 succeeds. Both lead to
/// the catalog; a version the namespace does not have does not.
#[tokio::test]
async fn both_csvs_of_an_upgrade_lead_to_the_catalog() {
    let mut fixture = fixture();
    fixture.subscriptions = vec![subscription("ops", MARKETPLACE, "private", "op.v2", "op.v2")];
    let mut v2 = csv("ops", "op.v2", &[WIDGET], &[]);
    v2.spec.replaces = Some("op.v1".into());
    fixture.csvs.push(v2);
    let mut world = World::new(fixture);
    for version in ["op.v1", "op.v2"] {
        let resolution = resolve(&world, Kind::Pod, "ops", "", vec![csv_owner("ops", version)]).await;
        assert_eq!(resolution.catalogs(), ["openshift-marketplace/private"], "{version}");
        assert!(matches!(resolution.needs[0].provision, Provision::Copy(_)));
    }
    let unknown = resolve(&world, Kind::Pod, "ops", "", vec![csv_owner("ops", "op.v3")]).await;
    assert!(dropped(&unknown).contains("no such CSV"));

    // A CSV outside the Subscription's `replaces` chain is named as such.
    world.feed.apply(csv("ops", "stray.v1", &[], &[]));
    let stray = resolve(&world, Kind::Pod, "ops", "", vec![csv_owner("ops", "stray.v1")]).await;
    assert!(stray.found().is_empty());
    assert!(dropped(&stray).contains("CSV/stray.v1: no Subscription names this CSV"), "{}", dropped(&stray));
}

/// OLM sets `currentCSV`, creates the CSV and right after it the operator's ServiceAccount (owned
/// by the CSV), before the webhook's watch may have delivered the CSV: the CSV is verified by a
/// GET and the ServiceAccount gets its secret at admission, not from the backfill later. A CSV
/// that does not exist with that UID is not believed.
#[tokio::test]
async fn a_service_account_whose_csv_the_watch_has_not_delivered_is_decided_at_admission() {
    let mut fixture = fixture();
    // A first install: no CSV of the operator in the caches yet.
    fixture.csvs.clear();
    fixture.subscriptions = vec![subscription("ops", MARKETPLACE, "private", "op.v2", "op.v2")];
    let world = World::new(fixture);
    let router = world.router(OnCopyFailure::Deny);
    let owned_by = |uid: &str| {
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "op-v2", "namespace": "ops",
            "ownerReferences": [{ "apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
                "name": "op.v2", "uid": uid }] } })
    };
    // The CSV exists in the API server; the fixture's watch has not delivered it.
    world.owners.insert("ops", "ClusterServiceVersion", "op.v2", &csv_uid("ops", "op.v2"), vec![]);
    assert!(world.feed.caches().index().csv("ops", "op.v2").is_none());
    let (_, answer) =
        post(&router, review("ServiceAccount", "CREATE", "ops", owned_by(&csv_uid("ops", "op.v2")))).await;
    assert_eq!(names(&patch_of(&answer).expect("patched at admission")), ["creds"]);
    let (_, wrong_uid) = post(&router, review("ServiceAccount", "CREATE", "ops", owned_by("made-up"))).await;
    assert!(patch_of(&wrong_uid).is_none(), "a reference with another UID is not believed");
}

/// OLM hands the operator's Deployment from v1 to v2 in place: same UID, the CSV owner reference
/// replaced, v1 deleted. The owner cache still holds the Deployment as it was; a path that ends
/// at the gone v1 looks the Deployment up again instead of waiting out the cache.
#[tokio::test]
async fn a_deployment_handed_to_the_next_csv_is_looked_up_again() {
    let mut world = world();
    world.owners.insert("ops", "Deployment", "op", "d-op", vec![csv_owner("ops", "op.v1")]);
    world.owners.insert("ops", "ReplicaSet", "op-1", "r-op", vec![deployment("op", "d-op")]);
    let subject = || vec![replica_set("op-1", "r-op")];
    let before = resolve(&world, Kind::Pod, "ops", "", subject()).await;
    assert_eq!(before.catalogs(), ["openshift-marketplace/private"]);

    world.feed.apply(subscription("ops", MARKETPLACE, "private", "op.v2", "op.v2"));
    world.feed.apply(csv("ops", "op.v2", &[WIDGET], &["op-sa"]));
    world.owners.insert("ops", "Deployment", "op", "d-op", vec![csv_owner("ops", "op.v2")]);
    world.feed.delete(csv("ops", "op.v1", &[WIDGET], &["op-sa"]));
    let lookups = world.owners.lookups();
    let after = resolve(&world, Kind::Pod, "ops", "", subject()).await;
    assert_eq!(after.catalogs(), ["openshift-marketplace/private"], "{}", dropped(&after));
    assert_eq!(
        after.found()[0].chain,
        "Pod<-ReplicaSet/op-1<-Deployment/op<-CSV/op.v2<-Subscription/sub-private<-CatalogSource/openshift-marketplace/private"
    );
    assert_eq!(
        world.owners.lookups() - lookups,
        3,
        "the gone v1 (the API server's cache, then etcd) and the Deployment, read again once"
    );
}

#[tokio::test]
async fn an_all_namespaces_operator_reaches_every_namespace_but_the_platforms() {
    let mut fixture = fixture();
    fixture.subscriptions.push(subscription("openshift-operators", MARKETPLACE, "private", "global.v1", "global.v1"));
    fixture.csvs.push(csv("openshift-operators", "global.v1", &[("global.example.com", "Gizmo", "gizmos")], &[]));
    fixture.operator_groups.push(operator_group("openshift-operators", &[""]));
    fixture.namespaces.push(namespace("opted-out", json!({}), json!({ "pullsecret-injector.io/inject": "false" })));
    let world = World::new(fixture);
    world.owners.insert("anywhere", "Gizmo", "g", "g-1", vec![]);
    let router = world.router(OnCopyFailure::Deny);
    let gizmo = owner("global.example.com/v1", "Gizmo", "g", "g-1");
    let (_, answer) = post(&router, review("Pod", "CREATE", "anywhere", pod(std::slice::from_ref(&gizmo), None))).await;
    assert_eq!(names(&patch_of(&answer).unwrap()), ["creds"]);

    let resolver = &world.ctx.resolver;
    assert_eq!(resolver.skip("openshift-operators"), None, "the home of all-namespaces operators");
    assert_eq!(resolver.skip("kube-system"), Some(Skip::KubeNamespace));
    assert_eq!(resolver.skip("openshift-monitoring"), Some(Skip::OpenshiftNamespace));
    assert_eq!(resolver.skip("openshift-included"), None, "an openshift-* namespace chosen by --include-namespace");
    assert_eq!(resolver.skip(OWN_NAMESPACE), Some(Skip::OwnNamespace));
    assert_eq!(resolver.skip("excluded"), Some(Skip::ExcludedNamespace));
    assert_eq!(resolver.skip("opted-out"), Some(Skip::OptedOut));
    let (_, answer) = post(&router, review("Pod", "CREATE", "opted-out", pod(&[gizmo], None))).await;
    assert!(patch_of(&answer).is_none());
}

#[tokio::test]
async fn a_pod_whose_copy_fails_is_denied_or_admitted_as_configured() {
    let world = world();
    world.api.failing.store(true, Ordering::SeqCst);
    let body = review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None));
    let (status, denied) = post(&world.router(OnCopyFailure::Deny), body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(denied["response"]["allowed"], false);
    assert_eq!(denied["response"]["status"]["code"], 503);
    let message = denied["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("retry") && message.contains("pull secret openshift-marketplace/creds"), "{message}");
    assert!(!message.contains("the API server is failing"), "the API server's words stay in the log: {message}");
    assert!(world.api.ledger_entry("tenant", "creds").is_none(), "the entry made with the copy is taken back");

    let (_, allowed) = post(&world.router(OnCopyFailure::Allow), body).await;
    assert_eq!(allowed["response"]["allowed"], true);
    assert!(patch_of(&allowed).is_none());

    // A ServiceAccount is admitted as it is: the reconciler backfills it.
    let sa =
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "op-sa", "namespace": "ops" } });
    let (_, sa_answer) = post(&world.router(OnCopyFailure::Deny), review("ServiceAccount", "CREATE", "ops", sa)).await;
    assert_eq!(sa_answer["response"]["allowed"], true);
    assert!(patch_of(&sa_answer).is_none());

    // Once the API works again, the next review (not a remembered failure) gets its copy.
    world.api.failing.store(false, Ordering::SeqCst);
    let (_, answer) = post(
        &world.router(OnCopyFailure::Deny),
        review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None)),
    )
    .await;
    assert_eq!(names(&patch_of(&answer).unwrap()), ["creds"]);
}

#[tokio::test]
async fn a_cache_change_invalidates_remembered_decisions() {
    let mut world = world();
    let router = world.router(OnCopyFailure::Deny);
    let body = review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None));
    let (_, before) = post(&router, body.clone()).await;
    assert_eq!(names(&patch_of(&before).unwrap()), ["creds"]);

    world.feed.apply(pull_secret(MARKETPLACE, "more"));
    world.feed.apply(catalog(MARKETPLACE, "private", &["creds", "more"], json!({})));
    let (_, after) = post(&router, body.clone()).await;
    assert_eq!(names(&patch_of(&after).unwrap()), ["creds", "more"]);

    // The operator's catalog turned injection off: the same review now gets nothing.
    world.feed.apply(catalog(
        MARKETPLACE,
        "private",
        &["creds", "more"],
        json!({ "pullsecret-injector.io/inject": "false" }),
    ));
    let (_, off) = post(&router, body).await;
    assert!(patch_of(&off).is_none(), "{off}");
}

#[tokio::test]
async fn concurrent_reviews_of_one_namespace_make_one_copy() {
    let world = world();
    let router = world.router(OnCopyFailure::Deny);
    let reviews = (0..16).map(|i| {
        let router = router.clone();
        // Distinct ReplicaSets of the same Deployment: no shared memo entry.
        let rs = format!("web-{i}");
        world.owners.insert("tenant", "ReplicaSet", &rs, &format!("r-{i}"), vec![deployment("web", "d-1")]);
        let body = review("Pod", "CREATE", "tenant", pod(&[replica_set(&rs, &format!("r-{i}"))], None));
        tokio::spawn(async move { post(&router, body).await })
    });
    for answer in futures::future::join_all(reviews).await {
        assert_eq!(names(&patch_of(&answer.unwrap().1).unwrap()), ["creds"]);
    }
    assert_eq!(world.api.secret_creates(), 1, "{:?}", world.api.requests());
}

#[tokio::test]
async fn a_name_the_tenant_holds_is_left_alone_and_the_copy_takes_the_hashed_name() {
    let world = world();
    world.api.tenant_secret("tenant", "creds");
    let router = world.router(OnCopyFailure::Deny);
    let (_, answer) = post(&router, review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None))).await;
    let hashed = olm_pullsecret_injector::inject::copies::fallback_name(MARKETPLACE, "creds");
    assert_eq!(names(&patch_of(&answer).unwrap()), std::slice::from_ref(&hashed));
    assert_eq!(world.api.secret("tenant", "creds").unwrap()["type"], "Opaque", "the tenant's secret is untouched");
    assert!(world.api.secret("tenant", &hashed).is_some());
    assert!(world.api.ledger_entry("tenant", "creds").is_none(), "the entry made with the first try is taken back");
    assert_eq!(world.api.ledger_entry("tenant", &hashed).unwrap()["spec"]["name"], hashed.as_str());
}

/// A new copy and its ledger entry are written at once, and the entry is created, not applied:
/// an entry already there (another source's copy under the same name) is never overwritten, nor
/// taken back with the failed try.
#[tokio::test]
async fn a_new_copys_entry_never_overwrites_another_sources() {
    let world = world();
    let router = world.router(OnCopyFailure::Deny);
    let (_, answer) = post(&router, review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None))).await;
    assert_eq!(names(&patch_of(&answer).unwrap()), ["creds"]);
    let ledger_writes =
        |requests: Vec<String>| requests.into_iter().filter(|r| r.contains("/pullsecretcopies")).collect::<Vec<_>>();
    assert_eq!(
        ledger_writes(world.api.requests()),
        ["POST /apis/pullsecret-injector.io/v1alpha1/pullsecretcopies"],
        "one write for the entry of a new copy"
    );

    // Another catalog namespace's `creds` wants the same name in the same namespace.
    let entry_before = world.api.ledger_entry("tenant", "creds").unwrap();
    let mut other = pull_secret("other-catalogs", "creds");
    other.metadata.uid = Some("uid-other".into());
    let made = world.ctx.copies.ensure("tenant", &other, false).await.unwrap();
    let hashed = olm_pullsecret_injector::inject::copies::fallback_name("other-catalogs", "creds");
    assert_eq!(made.name(), hashed);
    assert_eq!(world.api.ledger_entry("tenant", "creds").unwrap(), entry_before, "the first copy's entry is kept");
    assert_eq!(world.api.ledger_entry("tenant", &hashed).unwrap()["spec"]["source"], "other-catalogs/creds");
}

#[tokio::test]
async fn a_dry_run_is_answered_alike_and_creates_nothing() {
    let world = world();
    let router = world.router(OnCopyFailure::Deny);
    let mut body: Value =
        serde_json::from_slice(&review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None))).unwrap();
    body["request"]["dryRun"] = json!(true);
    let (_, answer) = post(&router, serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(names(&patch_of(&answer).unwrap()), ["creds"]);
    assert!(world.api.secret("tenant", "creds").is_none());
    // Not remembered: the real admission that follows creates the copy.
    body["request"]["dryRun"] = json!(false);
    post(&router, serde_json::to_vec(&body).unwrap()).await;
    assert!(world.api.secret("tenant", "creds").is_some());
}

#[tokio::test]
async fn the_catalogs_own_namespace_gets_the_original_and_no_copy() {
    let mut fixture = fixture();
    fixture.catalogs.push(catalog("ops", "local", &["local-creds"], json!({})));
    fixture.catalog_namespaces.private = vec!["ops".into()];
    fixture.subscriptions = vec![subscription("ops", "ops", "local", "op.v1", "op.v1")];
    fixture.secrets.push(pull_secret("ops", "local-creds"));
    let world = World::new(fixture);
    let resolution = resolve(&world, Kind::Pod, "ops", "", vec![csv_owner("ops", "op.v1")]).await;
    assert!(matches!(resolution.needs[0].provision, Provision::Original));
    let router = world.router(OnCopyFailure::Deny);
    let (_, answer) = post(&router, review("Pod", "CREATE", "ops", pod(&[csv_owner("ops", "op.v1")], None))).await;
    assert_eq!(names(&patch_of(&answer).unwrap()), ["local-creds"]);
    assert_eq!(world.api.secret_creates(), 0);
}

#[tokio::test]
async fn a_missing_or_wrongly_typed_source_is_warned_about_and_never_listed() {
    let mut fixture = fixture();
    fixture.catalogs = vec![catalog(MARKETPLACE, "private", &["creds", "absent"], json!({}))];
    let mut opaque = pull_secret(MARKETPLACE, "opaque");
    opaque.type_ = Some("Opaque".into());
    fixture.secrets.push(opaque);
    fixture.catalogs[0].spec.secrets.push("opaque".into());
    let world = World::new(fixture);
    world.owners.insert("tenant", "Widget", "prod", "w-1", vec![]);
    let router = world.router(OnCopyFailure::Deny);
    let (_, answer) = post(&router, review("Pod", "CREATE", "tenant", pod(&[widget("prod", "w-1")], None))).await;
    assert_eq!(names(&patch_of(&answer).unwrap()), ["creds"]);
    let warnings = answer["response"]["warnings"].to_string();
    assert!(warnings.contains("absent of the catalog is missing or not a pull secret"), "{warnings}");
    assert!(warnings.contains("opaque of the catalog is missing or not a pull secret"), "{warnings}");
}

#[tokio::test]
async fn an_owner_the_webhook_may_not_read_drops_its_path_and_never_denies() {
    let world = world();
    world.owners.forbid("Widget");
    // Deployment/both is owned by a Widget (not readable) and by the operator's CSV's Widget-free
    // path: a CSV in the same namespace.
    world.owners.insert("ops", "Widget", "w", "w-2", vec![]);
    world.owners.insert("ops", "Deployment", "both", "d-2", vec![widget("w", "w-2"), csv_owner("ops", "op.v1")]);
    world.owners.insert("ops", "Deployment", "only", "d-3", vec![widget("w", "w-2")]);
    let router = world.router(OnCopyFailure::Deny);

    let both = pod(&[deployment("both", "d-2")], None);
    let (_, answer) = post(&router, review("Pod", "CREATE", "ops", both)).await;
    assert_eq!(names(&patch_of(&answer).expect("patched through the CSV path")), ["creds"]);

    let only = pod(&[deployment("only", "d-3")], None);
    let (_, answer) = post(&router, review("Pod", "CREATE", "ops", only)).await;
    assert_eq!(answer["response"]["allowed"], true, "a refused lookup never denies: {answer}");
    assert!(patch_of(&answer).is_none());
    let resolution = resolve(&world, Kind::Pod, "ops", "", vec![deployment("only", "d-3")]).await;
    assert!(
        dropped(&resolution).contains("Widget/w: not allowed to get widgets.example.com"),
        "{}",
        dropped(&resolution)
    );
    let metrics = olm_pullsecret_injector::telemetry::metrics::encode();
    assert!(
        metrics.contains(r#"pullsecret_injector_owner_lookups_forbidden_total{resource="widgets.example.com"}"#),
        "{metrics}"
    );
}

/// A namespace admin may edit a Subscription's spec (OLM's aggregate-olm-edit), and OLM follows
/// it: repointed at another global catalog (a renamed mirror), the CSV links to that one, which
/// the admin could have subscribed to anyway; pointed at another team's catalog, which OLM does
/// not resolve from for this namespace, it links to nothing, and says why.
#[tokio::test]
async fn a_repointed_subscription_links_only_where_olm_resolves() {
    let mut fixture = fixture();
    fixture.catalogs.push(catalog("other-team", "theirs", &["their-creds"], json!({})));
    fixture.secrets.push(pull_secret("other-team", "their-creds"));
    fixture.catalog_namespaces.private = vec!["other-team".into()];
    fixture.catalogs.push(catalog(MARKETPLACE, "mirror", &["creds"], json!({})));
    let mut world = World::new(fixture);
    let subject = vec![csv_owner("ops", "op.v1")];
    assert_eq!(
        resolve(&world, Kind::Pod, "ops", "", subject.clone()).await.catalogs(),
        ["openshift-marketplace/private"]
    );
    // The edit keeps the Subscription's name and OLM-written status.
    let repointed = |catalog_ns: &str, catalog: &str| {
        let mut edited = subscription("ops", catalog_ns, catalog, "op.v1", "op.v1");
        edited.metadata.name = Some("sub-private".into());
        edited
    };
    world.feed.apply(repointed(MARKETPLACE, "mirror"));
    let mirrored = resolve(&world, Kind::Pod, "ops", "", subject.clone()).await;
    assert_eq!(mirrored.catalogs(), ["openshift-marketplace/mirror"]);
    assert_eq!(mirrored.needs.len(), 1, "the same secret, from the renamed catalog");

    world.feed.apply(repointed("other-team", "theirs"));
    let resolution = resolve(&world, Kind::Pod, "ops", "", subject.clone()).await;
    assert!(resolution.found().is_empty() && resolution.needs.is_empty(), "{:?}", resolution.catalogs());
    assert!(
        dropped(&resolution)
            .contains("Subscription/sub-private names catalog other-team/theirs, which OLM does not resolve from"),
        "{}",
        dropped(&resolution)
    );
    // Deleted (and no link remembered yet), nothing names the CSV.
    world.feed.delete(repointed("other-team", "theirs"));
    let resolution = resolve(&world, Kind::Pod, "ops", "", subject).await;
    assert!(dropped(&resolution).contains("no Subscription in namespace ops"), "{}", dropped(&resolution));
}

/// The Subscription deleted while its CSV runs: the link the reconciler wrote down holds, and
/// the chain says it is remembered; without it, nothing names the CSV.
#[tokio::test]
async fn a_deleted_subscriptions_remembered_link_holds() {
    let mut fixture = fixture();
    fixture.links = vec![link("ops", "op.v1", MARKETPLACE, "private")];
    let mut world = World::new(fixture);
    world.feed.delete(subscription("ops", MARKETPLACE, "private", "op.v1", "op.v1"));
    let resolution = resolve(&world, Kind::Pod, "ops", "", vec![csv_owner("ops", "op.v1")]).await;
    assert_eq!(resolution.catalogs(), ["openshift-marketplace/private"], "{}", dropped(&resolution));
    assert_eq!(
        resolution.chain_texts(),
        ["Pod<-CSV/op.v1<-Subscription/sub-private(remembered)<-CatalogSource/openshift-marketplace/private"]
    );
    world.feed.delete(link("ops", "op.v1", MARKETPLACE, "private"));
    let resolution = resolve(&world, Kind::Pod, "ops", "", vec![csv_owner("ops", "op.v1")]).await;
    assert!(resolution.found().is_empty());
    assert!(dropped(&resolution).contains("no Subscription in namespace ops"), "{}", dropped(&resolution));
}

/// OLM resolves a Subscription only from its own namespace and the global catalog namespace:
/// another tenant's private catalog serves nobody else, and a catalog
/// outside the configured catalog namespaces serves nobody.
#[tokio::test]
async fn a_catalog_serves_only_where_olm_would_resolve_from_it() {
    let mut fixture = fixture();
    fixture.catalog_namespaces.private = vec!["other".into()];
    fixture.catalogs.push(catalog("other", "theirs", &["their-creds"], json!({})));
    fixture.secrets.push(pull_secret("other", "their-creds"));
    fixture.catalogs.push(catalog("unlisted", "stray", &["stray-creds"], json!({})));
    fixture.secrets.push(pull_secret("unlisted", "stray-creds"));
    let mut world = World::new(fixture);
    let subject = vec![csv_owner("ops", "op.v1")];

    // The Subscription says "other/theirs": not a catalog OLM resolves Subscriptions of `ops` from.
    world.feed.apply(subscription("ops", "other", "theirs", "op.v1", "op.v1"));
    world.feed.delete(subscription("ops", MARKETPLACE, "private", "op.v1", "op.v1"));
    let resolution = resolve(&world, Kind::Pod, "ops", "", subject.clone()).await;
    assert!(resolution.found().is_empty(), "{:?}", resolution.catalogs());

    // The same catalog serves a Subscription in its own namespace.
    world.feed.apply(subscription("other", "other", "theirs", "op.v1", "op.v1"));
    world.feed.apply(csv("other", "op.v1", &[], &[]));
    let own = resolve(&world, Kind::Pod, "other", "", vec![csv_owner("other", "op.v1")]).await;
    assert_eq!(own.catalogs(), ["other/theirs"]);

    // A catalog outside the catalog namespaces serves nobody, not even its own namespace.
    world.feed.apply(subscription("unlisted", "unlisted", "stray", "op.v1", "op.v1"));
    world.feed.apply(csv("unlisted", "op.v1", &[], &[]));
    let stray = resolve(&world, Kind::Pod, "unlisted", "", vec![csv_owner("unlisted", "op.v1")]).await;
    assert!(stray.found().is_empty(), "{:?}", stray.catalogs());
    let ignored = world.feed.caches().index().ignored().to_vec();
    assert_eq!(ignored.len(), 1);
    assert_eq!((ignored[0].namespace.as_str(), ignored[0].name.as_str()), ("unlisted", "stray"));
}

/// What a tenant does to a copy reaches the webhook through the copies registration: it is never
/// refused, the ledger entry is marked (once per interval per copy), and the next admission after
/// the mark makes a deleted copy again instead of listing a name that no longer exists.
#[tokio::test]
async fn a_copy_deleted_or_altered_by_a_tenant_is_marked_and_made_again() {
    let world = world();
    let router = world.router(OnCopyFailure::Deny);
    let pod_review = || review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None));
    post(&router, pod_review()).await;
    assert_eq!(world.api.secret_creates(), 1);
    let observed = || {
        world.api.ledger_entry("tenant", "creds").unwrap()["metadata"]["annotations"]["pullsecret-injector.io/observed"]
            .clone()
    };

    // Altered: its data is not its source's.
    let copy = world.api.secret("tenant", "creds").unwrap();
    let mut altered = copy.clone();
    altered["data"] = json!({ ".dockerconfigjson": "Z3Vlc3M=" });
    let (status, answer) = post(&router, secret_review(&copy, Some(&altered))).await;
    assert_eq!((status, &answer["response"]["allowed"]), (200, &json!(true)), "{answer}");
    assert!(answer["response"].get("patch").is_none());
    assert_eq!(observed(), "altered");

    // An update that keeps it true (our own rotation) is not an observation.
    let (_, answer) = post(&router, secret_review(&copy, Some(&copy))).await;
    assert_eq!(answer["response"]["allowed"], true);

    // Deleted within the interval of the first mark: allowed, the Pods' answers are kept until
    // the interval's one gathered write, then the next Pod gets a copy that exists.
    let deleted = world.api.delete_secret("tenant", "creds").unwrap();
    let (_, answer) = post(&router, secret_review(&deleted, None)).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(observed(), "altered", "not written within the interval");
    eventually("the gathered mark", MARK_INTERVAL + Duration::from_secs(5), || async {
        (observed() == "deleted").then_some(())
    })
    .await;
    let (_, answer) = post(&router, pod_review()).await;
    assert_eq!(names(&patch_of(&answer).unwrap()), ["creds"]);
    assert_eq!(world.api.secret_creates(), 2, "made again, not listed from memory");
    assert!(world.api.secret("tenant", "creds").is_some());

    // Not our copy (no label): nothing is marked.
    let tenants = json!({ "metadata": { "namespace": "tenant", "name": "own" }, "type": "Opaque" });
    let (_, answer) = post(&router, secret_review(&tenants, None)).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(world.api.ledger_entry("tenant", "own").is_none());
}

/// Taking an observation off a ledger entry takes off only the one that was dealt with: one the
/// webhook wrote meanwhile (the tenant changed the copy again) stays for the next pass.
#[tokio::test]
async fn a_newer_observation_of_a_copy_is_never_lost() {
    use olm_pullsecret_injector::inject::ledger::Observed;
    let world = world();
    let router = world.router(OnCopyFailure::Deny);
    post(&router, review("Pod", "CREATE", "tenant", pod(&[replica_set("web-1", "r-1")], None))).await;
    let ledger = world.ctx.copies.ledger();
    let observed = || {
        world.api.ledger_entry("tenant", "creds").unwrap()["metadata"]["annotations"]["pullsecret-injector.io/observed"]
            .clone()
    };
    ledger.mark("tenant", "creds", Observed::Deleted).await.unwrap();
    // The copy is made again, and meanwhile the tenant alters it.
    ledger.mark("tenant", "creds", Observed::Altered).await.unwrap();
    ledger.unmark("tenant", "creds", Observed::Deleted).await.unwrap();
    assert_eq!(observed(), "altered", "the newer observation stays");
    ledger.unmark("tenant", "creds", Observed::Altered).await.unwrap();
    assert_eq!(observed(), Value::Null);
}
