//! End to end: two `serve` processes at once. Both answer admissions; only the Lease holder
//! reconciles, so a rotation is done once, not twice; killing the holder hands the reconciler
//! over within the lease duration; a process started after the catalog was deleted finds the
//! copies in the ledger and removes them.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::olm::*;
use support::webhook::{self, WebhookProcess};
use support::{ControlPlane, eventually};

const LEASE_SECONDS: u64 = 4;

fn count(process: &WebhookProcess, message: &str) -> usize {
    process.logs().lines().filter(|l| l.contains(message)).count()
}

/// Waits until `process` has logged the update of the copy in each of `tenants` (the line comes
/// after the copy's write and its ledger record), then checks it did so once in each, and at most
/// once in the operator's namespace: there an admission (OLM's) may refresh the copy first.
async fn updated_once_each(process: &WebhookProcess, tenants: &[String], operator_namespace: &str) {
    let updated_in = |ns: &str| process.logged("copy updated from its source", ns).len();
    eventually("the copies' update to be logged", Duration::from_secs(10), || async {
        tenants.iter().all(|t| updated_in(t) > 0).then_some(())
    })
    .await;
    for tenant in tenants {
        assert_eq!(updated_in(tenant), 1, "{tenant}:\n{}", process.logs());
    }
    assert!(updated_in(operator_namespace) <= 1, "{}", process.logs());
}

async fn holder(client: &kube::Client) -> Option<String> {
    let leases = Api::<Lease>::namespaced(client.clone(), webhook::NAMESPACE);
    leases.get_opt("olm-pullsecret-injector").await.unwrap()?.spec?.holder_identity
}

fn pid_of(identity: &str) -> u32 {
    identity.rsplit('_').next().unwrap().parse().unwrap()
}

async fn rotate(client: &kube::Client, catalog: &Catalog, token: &str, tenants: &[String]) -> Secret {
    let patch = json!({ "stringData": { ".dockerconfigjson": docker_config("registry.example", token) } });
    let sources = Api::<Secret>::namespaced(client.clone(), &catalog.namespace);
    let source = sources.patch(catalog.secret.as_str(), &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    for tenant in tenants {
        let copies = Api::<Secret>::namespaced(client.clone(), tenant);
        eventually(&format!("the copy in {tenant} to carry {token}"), Duration::from_secs(20), || async {
            (copies.get(catalog.secret.as_str()).await.ok()?.data == source.data).then_some(())
        })
        .await;
    }
    source
}

#[tokio::test]
async fn one_replica_reconciles_and_a_killed_holder_hands_over_within_the_lease_duration() {
    let cp = ControlPlane::with_olm();
    let client = cp.admin().await;
    webhook::grant_chart_rbac_with(&client, |_| {}).await;
    let lease = format!("{LEASE_SECONDS}s");
    let args = ["--drain-delay", "0s", "--lease-duration", &lease];
    let replicas = [webhook::start(cp, "replica-a", &args), webhook::start(cp, "replica-b", &args)];
    let first = eventually("one replica to hold the lease", Duration::from_secs(20), || holder(&client)).await;
    let (leader, standby) =
        if pid_of(&first) == replicas[0].pid() { (&replicas[0], &replicas[1]) } else { (&replicas[1], &replicas[0]) };
    assert_eq!(pid_of(&first), leader.pid());
    assert_eq!(count(leader, "acquired the lease"), 1);
    assert_eq!(count(standby, "acquired the lease"), 0);

    // Admissions go to the standby: both replicas serve the webhook.
    webhook::register_with(&client, standby, "Fail").await;
    let (catalog, op, tenants) = private_operator(&client, &["lead", "lead"]).await;
    operand_pods_with_copies(&client, &catalog, &tenants).await;
    // OLM's install made a copy in the operator's own namespace too (for its Pod and
    // ServiceAccounts): every copy rotates.
    let in_operator_namespace = Api::<Secret>::namespaced(client.clone(), &op.namespace);
    eventually("the copy in the operator's namespace", Duration::from_secs(30), || async {
        in_operator_namespace.get_opt(&catalog.secret).await.unwrap()
    })
    .await;
    let copied: Vec<String> = tenants.iter().cloned().chain([op.namespace.clone()]).collect();
    // OLM is done installing (an admission it causes may still refresh the operator
    // namespace's copy through the webhook before the reconciler does).
    settled(&client, &op).await;

    // A rotation is carried out by the leader alone, once per copy.
    rotate(&client, &catalog, "token-2", &copied).await;
    updated_once_each(leader, &tenants, &op.namespace).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(standby, "copy updated from its source"), 0);
    for process in &replicas {
        assert_eq!(count(process, "could not update a copy"), 0, "no conflicts:\n{}", process.logs());
        assert_eq!(count(process, "lost the lease"), 0);
    }

    // The holder dies without releasing the lease: the standby takes over once it expires.
    leader.signal(libc::SIGKILL);
    let killed = Instant::now();
    let standby_identity =
        eventually("the standby to take the lease", Duration::from_secs(3 * LEASE_SECONDS), || async {
            holder(&client).await.filter(|h| pid_of(h) == standby.pid())
        })
        .await;
    let handover = killed.elapsed();
    println!("handover after SIGKILL of the holder: {handover:?} (lease duration {LEASE_SECONDS}s)");
    // The standby counts a whole lease duration from when it saw the last renewal, and it looks
    // every tenth of the duration: it sees a renewal at most that late. Allow for one request.
    let look = Duration::from_secs(LEASE_SECONDS) / 10;
    assert!(
        handover <= Duration::from_secs(LEASE_SECONDS) + look + Duration::from_millis(500),
        "handover took {handover:?}"
    );
    assert!(!standby_identity.is_empty());

    // ... and reconciles from then on.
    rotate(&client, &catalog, "token-3", &copied).await;
    updated_once_each(standby, &tenants, &op.namespace).await;

    // Every replica stops; the catalog is deleted meanwhile. A replica started afterwards never
    // saw the catalog, and still finds its copies (in the ledger) and removes them.
    standby.signal(libc::SIGKILL);
    let catalogs = Api::<kube::api::DynamicObject>::namespaced_with(
        client.clone(),
        &catalog.namespace,
        &olm_resource("v1alpha1", "CatalogSource"),
    );
    catalogs.delete(&catalog.name, &Default::default()).await.unwrap();
    let now = kube::api::DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    for tenant in &tenants {
        // The operand Pods named the copies: copies a live Pod names are kept.
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), tenant);
        pods.delete("app", &now).await.unwrap();
    }
    let restarted =
        webhook::start(cp, "restarted", &["--drain-delay", "0s", "--lease-duration", &lease, "--cleanup-grace", "2s"]);
    for tenant in &tenants {
        let copies = Api::<Secret>::namespaced(client.clone(), tenant);
        eventually(&format!("the copy in {tenant} to be removed"), Duration::from_secs(30), || async {
            copies.get_opt(&catalog.secret).await.unwrap().is_none().then_some(())
        })
        .await;
    }
    // The ledger entry goes after its copy, and the log line after both.
    let ledger = Api::<olm_pullsecret_injector::inject::ledger::PullSecretCopy>::all(client.clone());
    eventually("the removed copies' ledger entries and log lines", Duration::from_secs(10), || async {
        let left = ledger.list(&Default::default()).await.unwrap().items;
        let left = left.iter().filter(|entry| tenants.contains(&entry.spec.namespace)).count();
        // The operator namespace's copy may go too (its Pod replaced while no webhook is called).
        let in_tenants: usize =
            tenants.iter().map(|t| restarted.logged("copy removed after the grace period", t).len()).sum();
        (left == 0 && in_tenants == tenants.len()).then_some(())
    })
    .await;
}
