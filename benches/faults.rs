//! Faults cost little (issue 13): Pods admitted without their secrets (here: the webhook is not
//! registered at all) are reported per owner, within a budget of writes. The baseline, in the same
//! run, is the number of such Pods: one report per Pod is what the reconciler used to write.
//!
//!     cargo bench --bench faults               (PODS=1000 OWNERS=10 by default)

#[path = "support/olm_imitation.rs"]
mod olm_imitation;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::in_process::setting;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::ControlPlane;
use support::olm::*;

const IN_FLIGHT: usize = 16;

fn main() -> anyhow::Result<()> {
    let (pods, owners) = (setting("PODS", 1000), setting("OWNERS", 10));
    support::in_process::bench("faults", |dir| async move { run(&dir, pods, owners).await })
}

fn reported() -> f64 {
    olm_pullsecret_injector::telemetry::metrics::encode()
        .lines()
        .find_map(|l| {
            l.strip_prefix("pullsecret_injector_reconcile_actions_total{action=\"pod_missing_pull_secret\"} ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

async fn run(dir: &std::path::Path, pods: usize, owners: usize) -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    let (_, _, mut tenants) = olm_imitation::private_operator_unseen(&client, &["faults"]).await;
    let tenant = tenants.remove(0);
    // Operand custom resources, each the controller of its share of the Pods.
    let mut controllers = Vec::new();
    for i in 0..owners {
        let mut owner = create_operand(&client, WIDGET, &tenant, &format!("widget-{i}")).await;
        owner["controller"] = json!(true);
        controllers.push(owner);
    }
    // The webhook is not registered: every Pod is admitted without the secret it needs.
    let api = Api::<Pod>::namespaced(client.clone(), &tenant);
    let started = Instant::now();
    futures::stream::iter(0..pods)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let (api, owner) = (api.clone(), controllers[i % owners].clone());
            async move {
                let pod = bare_pod(json!({ "name": format!("app-{i}"), "ownerReferences": [owner] }));
                api.create(&PostParams::default(), &pod).await.unwrap();
            }
        })
        .await;
    println!(
        "set-up: {pods} Pods of {owners} owners admitted without their secret in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let certs = olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()])?;
    olm_pullsecret_injector::commands::certs::write(dir, &certs)?;
    support::in_process::serve(client.clone(), dir).await;
    let started = Instant::now();
    while reported() < pods as f64 {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "only {} of {pods} Pods seen", reported());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "the reconciler saw all {pods} Pods without their secret {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    // Events are published in the background; give them a few seconds to land.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let events = Api::<Event>::namespaced(client.clone(), &tenant).list(&ListParams::default()).await?.items;
    let written = events.iter().filter(|e| e.reason.as_deref() == Some("PodMissingPullSecret")).count();
    println!(
        "Events written for {pods} Pods without their secret: {written} ({:.3} per Pod; baseline one per Pod: {pods})",
        written as f64 / pods as f64
    );
    Ok(())
}
