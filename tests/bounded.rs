//! Memory and API calls stay bounded under forged reviews (in process, over fixtures; a test
//! binary of its own so that its resident-set figures are its own).

mod support;

use std::time::Duration;

use olm_pullsecret_injector::state::caches::Fixture;
use olm_pullsecret_injector::webhook::OnCopyFailure;
use serde_json::{Value, json};
use support::fixtures::*;

/// The tests run one at a time: the resident set they measure is the whole process's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn fixture() -> Fixture {
    Fixture {
        catalogs: vec![catalog(MARKETPLACE, "private", &["creds"], json!({}))],
        subscriptions: vec![subscription("t", MARKETPLACE, "private", "op.v1", "op.v1")],
        csvs: vec![csv("t", "op.v1", &[("example.com", "Widget", "widgets")], &[])],
        operator_groups: vec![operator_group("t", &["t"])],
        namespaces: vec![namespace("t", json!({}), json!({}))],
        secrets: vec![pull_secret(MARKETPLACE, "creds")],
        ..Default::default()
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").parse().unwrap()))
        .unwrap()
}

fn service_account(name: &str, owner: &OwnerRef) -> Value {
    json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name, "namespace": "t",
        "ownerReferences": [{ "apiVersion": owner.api_version, "kind": owner.kind, "name": owner.name, "uid": owner.uid }] } })
}

use olm_pullsecret_injector::resolve::owners::OwnerRef;

/// 200 reviews whose owner names are 1 MiB each: nothing of the names is remembered beyond a
/// bounded reason, and nothing is looked up.
#[tokio::test]
async fn reviews_with_megabyte_owner_names_leave_memory_bounded() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = World::new(fixture());
    let router = world.router(OnCopyFailure::Deny);
    let before = rss_kib();
    for i in 0..200 {
        let name = format!("{i}-{}", "x".repeat(1024 * 1024));
        let owner = owner("apps/v1", "ReplicaSet", &name, &format!("uid-{i}"));
        let (status, answer) = post(&router, review("Pod", "CREATE", "t", pod(&[owner], None))).await;
        assert_eq!((status, answer["response"]["allowed"].as_bool()), (200, Some(true)));
    }
    let grown = rss_kib().saturating_sub(before);
    println!("resident set grew by {} KiB over 200 reviews with 1 MiB owner names", grown);
    assert!(grown < 32 * 1024, "grew by {grown} KiB: 200 MiB of names must not be kept");
    assert_eq!(world.owners.lookups(), 0, "a name no object can have is not looked up");
}

/// 300 dry-run Pods (dry runs pass the API server's checks as well), each with 16
/// ownerReferences naming an existing ReplicaSet with a 190 KiB UID of its own: no object has such
/// a UID, so nothing is looked up and nothing of it is kept (a UID that does not match is
/// otherwise remembered as a miss, under a key that contains it): the resident set grows by less
/// than 1 MiB per 1,000 reviews. Measured after 20 reviews, once the allocator holds what one
/// review needs.
#[tokio::test]
async fn reviews_with_oversized_owner_uids_make_no_lookup_and_keep_nothing() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = World::new(fixture());
    world.owners.insert("t", "ReplicaSet", "real", "r-1", vec![]);
    let router = world.router(OnCopyFailure::Deny);
    // Each review's UIDs are its own: `@` stands for the review's number.
    let owners: Vec<OwnerRef> =
        (0..16).map(|n| owner("apps/v1", "ReplicaSet", "real", &format!("@-{n}-{}", "u".repeat(190 * 1024)))).collect();
    let mut body: Value = serde_json::from_slice(&review("Pod", "CREATE", "t", pod(&owners, None))).unwrap();
    body["request"]["dryRun"] = json!(true);
    let template = serde_json::to_string(&body).unwrap();
    let dry_run = |i: usize| template.replace('@', &i.to_string()).into_bytes();
    let mut before = 0;
    for i in 0..320 {
        if i == 20 {
            before = rss_kib();
        }
        let (status, answer) = post(&router, dry_run(i)).await;
        assert_eq!((status, answer["response"]["allowed"].as_bool()), (200, Some(true)));
    }
    let grown = rss_kib().saturating_sub(before);
    println!("resident set grew by {grown} KiB over 300 dry-run reviews with 16 owner UIDs of 190 KiB");
    assert_eq!(world.owners.lookups(), 0, "a UID no object can have is not looked up");
    assert!(grown < 1024 * 300 / 1000, "grew by {grown} KiB: 900 MiB of UIDs must not be kept");
}

/// 1,000 ServiceAccounts, each owned by one of 10 made-up ReplicaSets: one lookup per made-up
/// owner, which is two reads (the API server's cache does not have it, so etcd is asked too: the
/// cache may lag a create), and with each a read of the Deployment its name points at
/// (`made-up`, fetched alongside from the cache; a guess that finds nothing is not remembered, so
/// that it cannot hide a Deployment created next).
#[tokio::test]
async fn made_up_owners_cost_one_lookup_each() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = World::new(fixture());
    let router = world.router(OnCopyFailure::Deny);
    for i in 0..1000 {
        let owner = owner("apps/v1", "ReplicaSet", &format!("made-up-{}", i % 10), &format!("uid-{}", i % 10));
        let (_, answer) =
            post(&router, review("ServiceAccount", "CREATE", "t", service_account(&format!("sa-{i}"), &owner))).await;
        assert_eq!(answer["response"]["allowed"], true);
    }
    println!("1,000 reviews naming 10 made-up owners: {} lookups", world.owners.lookups());
    assert_eq!(world.owners.lookups(), 30);
}

/// 50 Pods of one new ReplicaSet arrive together (each lookup takes 50 ms): one lookup per owner
/// on the chain, and one copy.
#[tokio::test]
async fn fifty_pods_of_a_new_replica_set_make_one_lookup_per_owner() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = World::new(fixture());
    world.owners.set_latency(Duration::from_millis(50));
    world.owners.insert("t", "Widget", "w", "w-1", vec![]);
    world.owners.insert("t", "Deployment", "web", "d-1", vec![owner("example.com/v1", "Widget", "w", "w-1")]);
    world.owners.insert("t", "ReplicaSet", "web-1", "r-1", vec![owner("apps/v1", "Deployment", "web", "d-1")]);
    let router = world.router(OnCopyFailure::Deny);
    let rs = owner("apps/v1", "ReplicaSet", "web-1", "r-1");
    let reviews = (0..50).map(|_| {
        let (router, body) = (router.clone(), review("Pod", "CREATE", "t", pod(std::slice::from_ref(&rs), None)));
        tokio::spawn(async move { post(&router, body).await })
    });
    for answer in futures::future::join_all(reviews).await {
        assert!(patch_of(&answer.unwrap().1).is_some());
    }
    assert_eq!(world.owners.lookups(), 3, "ReplicaSet, Deployment, Widget once each");
    assert_eq!(world.api.secret_creates(), 1);
}

/// Dry runs are answered like real reviews and cost no more: repeated, they make no new call.
#[tokio::test]
async fn repeated_dry_runs_cost_nothing_more() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let world = World::new(fixture());
    world.owners.insert("t", "Widget", "w", "w-1", vec![]);
    let router = world.router(OnCopyFailure::Deny);
    let mut body: Value = serde_json::from_slice(&review(
        "Pod",
        "CREATE",
        "t",
        pod(&[owner("example.com/v1", "Widget", "w", "w-1")], None),
    ))
    .unwrap();
    body["request"]["dryRun"] = json!(true);
    for _ in 0..100 {
        let (_, answer) = post(&router, serde_json::to_vec(&body).unwrap()).await;
        assert!(patch_of(&answer).is_some());
    }
    assert_eq!(world.owners.lookups(), 1);
    assert_eq!(world.api.secret_creates(), 1, "one dry-run create for 100 dry runs");
    assert!(world.api.secret("t", "creds").is_none(), "a dry run makes nothing");
}

/// 10,000 reports that our copy was deleted, altered or released, as any peer can forge them
/// without a client CA: one ledger write for the copy (the reconciler probes it before it acts),
/// and one more, gathered, when the interval ends.
#[tokio::test]
async fn ten_thousand_forged_secret_reviews_make_one_ledger_write_per_copy() {
    let _alone = ONE_AT_A_TIME.lock().await;
    use olm_pullsecret_injector::webhook::observe::MARK_INTERVAL;
    let world = World::new(fixture());
    let router = world.router(OnCopyFailure::Deny);
    let (_, answer) = post(&router, review("Pod", "CREATE", "t", pod(&[csv_owner("t", "op.v1")], None))).await;
    assert!(patch_of(&answer).is_some());
    let copy = world.api.secret("t", "creds").unwrap();
    let mut altered = copy.clone();
    altered["data"] = json!({ ".dockerconfigjson": "Z3Vlc3M=" });
    let mut released = copy.clone();
    released["metadata"]["labels"] = json!({});
    let reports =
        [secret_review(&copy, None), secret_review(&copy, Some(&altered)), secret_review(&copy, Some(&released))];
    let ledger_writes =
        || world.api.requests().iter().filter(|r| r.starts_with("PATCH") && r.contains("/pullsecretcopies/")).count();
    let unverified = || {
        let metrics = olm_pullsecret_injector::telemetry::metrics::encode();
        let line = "pullsecret_injector_unverified_reviews_total ";
        metrics.lines().find_map(|l| l.strip_prefix(line).map(|n| n.parse::<u64>().unwrap())).unwrap()
    };
    let (before, unverified_before) = (ledger_writes(), unverified());
    let started = std::time::Instant::now();
    for i in 0..10_000 {
        let (status, answer) = post(&router, reports[i % 3].clone()).await;
        assert_eq!((status, &answer["response"]["allowed"]), (200, &json!(true)));
    }
    let took = started.elapsed();
    println!("10,000 forged Secret reviews in {took:?}: {} ledger writes", ledger_writes() - before);
    assert!(took < MARK_INTERVAL, "the reviews must fit in one interval for this count");
    assert_eq!(ledger_writes() - before, 1, "one write for the copy");
    assert!(unverified() - unverified_before >= 10_000, "each review of an unverified peer is counted");
    support::eventually("the gathered write", MARK_INTERVAL + Duration::from_secs(5), || async {
        (ledger_writes() - before == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ledger_writes() - before, 2, "one gathered write for 9,999 reports");
}
