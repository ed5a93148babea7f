//! Memory: the resident set of `serve` with 10,000 namespaces and 1,000 operators'
//! objects (a CatalogSource, Subscription, CSV and OperatorGroup each) in its caches must stay
//! under 64 MiB, with the CSVs OLM copies of all-namespaces operators into every namespace
//! (OpenShift's default; 20,000 of about 8 KiB each) on top. The baseline, measured in the same
//! run, is this process before `serve` starts (the control plane client and the runtime): the
//! webhook's share is the difference.
//!
//!     cargo bench --bench memory   (NAMESPACES=10000 OPERATORS=1000 COPIED=20000 by default)

#[path = "support/olm_imitation.rs"]
mod olm_imitation;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::in_process::setting;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::core::PartialObjectMeta;
use serde_json::json;
use support::ControlPlane;
use support::olm::*;

const IN_FLIGHT: usize = 16;

fn main() -> anyhow::Result<()> {
    let (namespaces, operators, copied) =
        (setting("NAMESPACES", 10_000), setting("OPERATORS", 1_000), setting("COPIED", 20_000));
    support::in_process::bench("memory", |dir| async move { run(&dir, namespaces, operators, copied).await })
}

fn resident_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

async fn run(dir: &std::path::Path, namespaces: usize, operators: usize, copied: usize) -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    let started = Instant::now();
    let catalog = olm_imitation::private_catalog(&client, &[]).await;
    ensure_crd(&client, WIDGET).await;

    // Namespaces; the first `operators` of them each get an operator from the private catalog.
    let names: Vec<String> = (0..namespaces).map(|i| format!("mem-{i:05}")).collect();
    futures::stream::iter(names.iter().enumerate())
        .for_each_concurrent(IN_FLIGHT, |(i, ns)| {
            let client = client.clone();
            let catalog = &catalog;
            async move {
                let namespace: Namespace =
                    serde_json::from_value(json!({ "metadata": { "name": ns, "labels": { "team": "t" } } })).unwrap();
                Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
                if i < operators {
                    olm_imitation::create_operator_group(&client, ns, &[ns]).await;
                    let csv = "widget-operator.v1.0.0";
                    let create = create_csv(&client, ns, csv, WIDGET, &["widget-operator"]);
                    olm_imitation::subscribe_and_install(&client, ns, (&catalog.namespace, &catalog.name), csv, create)
                        .await;
                }
            }
        })
        .await;
    // The copies OLM makes of all-namespaces operators' CSVs, `copied` of them, one per namespace
    // and operator, each carrying the whole CSV (descriptions, icons) as OLM's copies do.
    let description = "An operator that manages widgets. ".repeat(240);
    let csvs = olm_resource("v1alpha1", "ClusterServiceVersion");
    futures::stream::iter(0..copied)
        .for_each_concurrent(IN_FLIGHT, |i| {
            let api = Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), &names[i % names.len()], &csvs);
            let csv = serde_json::from_value(json!({
                "apiVersion": "operators.coreos.com/v1alpha1", "kind": "ClusterServiceVersion",
                "metadata": { "name": format!("global-operator-{}.v1.0.0", i / names.len()),
                    "labels": { "olm.copiedFrom": "openshift-operators" } },
                "spec": { "displayName": "Global operator", "description": description,
                    "install": { "strategy": "deployment", "spec": { "deployments": [{ "name": "global-operator",
                        "spec": { "selector": { "matchLabels": { "app": "global" } },
                            "template": { "metadata": { "labels": { "app": "global" } },
                                "spec": { "containers": [{ "name": "op", "image": "registry.example/global:1" }] } } } }] } } }
            }))
            .unwrap();
            async move {
                api.create(&PostParams::default(), &csv).await.unwrap();
            }
        })
        .await;
    // Each namespace gets its `default` ServiceAccount from the controller-manager: wait for them,
    // the reconciler caches service accounts too.
    let sas = Api::<PartialObjectMeta<ServiceAccount>>::all(client.clone());
    while sas.list_metadata(&ListParams::default()).await?.items.len() < namespaces {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "set-up: {namespaces} namespaces, {operators} operators, {copied} copied CSVs in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    let certs = olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()])?;
    olm_pullsecret_injector::commands::certs::write(dir, &certs)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = resident_mib();
    let starting = Instant::now();
    support::in_process::serve(client.clone(), dir).await;
    println!("serve ready (caches synced, HTTPS bound) {:.1} s after start", starting.elapsed().as_secs_f64());
    // The reconciler's watches (pods, service accounts, copies) list after the admission caches.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let with_caches = resident_mib();
    println!("resident set before serve (baseline): {baseline:.1} MiB");
    println!(
        "resident set with serve's caches synced: {with_caches:.1} MiB; serve's share {:.1} MiB (target < 64 MiB)",
        with_caches - baseline
    );
    Ok(())
}
