//! Bursts (issue 13): 50 Deployments × 4 replicas of an operand appear at once in a fresh
//! namespace, through the real control plane (its controller-manager makes the ReplicaSets and
//! Pods), with `serve` in this process registered as the webhook. The first review of each new
//! ReplicaSet misses every cache; the baseline, in the same run, is the other reviews of the
//! burst. Reports their p50/p99 (the webhook's own decision time, from its log), and the owner
//! GETs and copies the burst cost.
//!
//!     cargo bench --bench bursts               (DEPLOYMENTS=50 REPLICAS=4 by default)

#[path = "support/olm_imitation.rs"]
mod olm_imitation;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::ControlPlane;
use support::in_process::setting;
use support::olm::*;

const IN_FLIGHT: usize = 16;

fn main() -> anyhow::Result<()> {
    let (deployments, replicas) = (setting("DEPLOYMENTS", 50), setting("REPLICAS", 4));
    support::in_process::bench("bursts", |dir| async move { run(&dir, deployments, replicas).await })
}

fn metric(name: &str) -> f64 {
    olm_pullsecret_injector::telemetry::metrics::encode()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0)
}

async fn run(dir: &std::path::Path, deployments: usize, replicas: usize) -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    let (_, operator, mut tenants) = olm_imitation::private_operator_unseen(&client, &["burst"]).await;
    let tenant = tenants.remove(0);
    let owner = create_operand(&client, WIDGET, &tenant, "prod").await;

    let certs = olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()])?;
    olm_pullsecret_injector::commands::certs::write(dir, &certs)?;
    // The webhook has a client of its own, as in its own process: the bench's creates do not
    // hold its connections.
    let addr = support::in_process::serve(cp.admin().await, dir).await;
    let config =
        support::webhook::chart_webhook_configuration(&format!("https://{addr}/mutate"), &certs.ca_pem, "Fail");
    support::helm::apply(&client, &config, false).await.map_err(anyhow::Error::msg)?;
    // The API server loads the configuration asynchronously, and the caches must know the operator.
    wait_until_webhook_knows(&client, &operator).await;
    ledger_crd_settled(&client).await;

    let counts = || {
        (
            metric("pullsecret_injector_owner_cache_misses_total"),
            metric("pullsecret_injector_owner_reads_from_etcd_total"),
            metric("pullsecret_injector_copies_created_total"),
        )
    };
    let before = counts();
    let started = Instant::now();
    futures::stream::iter(0..deployments)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let (client, tenant, owner) = (client.clone(), tenant.clone(), owner.clone());
            async move {
                create_deployment(&client, &tenant, &format!("burst-{i}"), Some(owner), replicas as i32, json!({}))
                    .await
            }
        })
        .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &tenant);
    let want = deployments * replicas;
    loop {
        let made = pods.list(&ListParams::default()).await?.items;
        if made.len() >= want {
            let patched = made.iter().filter(|p| !pull_secret_names(p).is_empty()).count();
            anyhow::ensure!(patched == want, "{patched} of {want} Pods got the secret");
            break;
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(180), "only {} of {want} Pods", made.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "burst: {deployments} Deployments x {replicas} Pods admitted and patched in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let after = counts();
    let (lookups, from_etcd, copies) = (after.0 - before.0, after.1 - before.1, after.2 - before.2);

    // The decisions of the burst, from the log (written in batches: give it a moment).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = std::fs::read_to_string(dir.join("webhook.log"))?;
    let mut first: HashMap<String, f64> = HashMap::new();
    let mut rest = Vec::new();
    for line in log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        if line["message"] != "admission decision" || line["namespace"] != tenant.as_str() || line["kind"] != "Pod" {
            continue;
        }
        // Pods are named <replicaset>-<5 characters>; a review carries the generateName <replicaset>-.
        let replica_set = line["name"].as_str().unwrap_or("").trim_end_matches('-').to_string();
        let millis = line["duration_ms"].as_f64().unwrap_or(0.0);
        match first.get(&replica_set) {
            None => {
                first.insert(replica_set, millis);
            }
            Some(_) => rest.push(millis),
        }
    }
    let mut first: Vec<f64> = first.into_values().collect();
    first.sort_by(f64::total_cmp);
    rest.sort_by(f64::total_cmp);
    println!(
        "first review of each new ReplicaSet ({}): p50 {:.2} ms, p99 {:.2} ms (target p99 < 15 ms)",
        first.len(),
        percentile(&first, 0.5),
        percentile(&first, 0.99)
    );
    println!(
        "the other reviews of the burst, baseline ({}): p50 {:.2} ms, p99 {:.2} ms; first/baseline p99 {:.1}x",
        rest.len(),
        percentile(&rest, 0.5),
        percentile(&rest, 0.99),
        percentile(&first, 0.99) / percentile(&rest, 0.99).max(0.001)
    );
    println!(
        "API calls: {lookups} owner lookups for {deployments} ReplicaSets and Deployments (+1 operand), {} owner GETs \
         ({from_etcd} of them read again from etcd: the API server's cache did not have the owner yet), {copies} \
         copies created",
        lookups + from_etcd
    );
    support::webhook::unregister(&client).await;
    Ok(())
}

/// Waits until the ledger's CRD was established more than 2 s ago: the API server holds every
/// create of a custom resource for 2 s while its CRD is that new (apiextensions-apiserver's
/// `serveResource`, so that other API servers see it established too). `serve` has just
/// installed it here; a cluster installs it with the chart, long before a burst.
async fn ledger_crd_settled(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get("pullsecretcopies.pullsecret-injector.io")
        .await
        .expect("the ledger's CRD");
    let established = crd
        .status
        .and_then(|status| status.conditions)
        .into_iter()
        .flatten()
        .find(|condition| condition.type_ == "Established")
        .and_then(|condition| condition.last_transition_time)
        .expect("the ledger's CRD is established");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    // The condition's time has whole seconds: one more for the part of a second it drops.
    let wait = established.0.as_second() + 3 - now;
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
}
