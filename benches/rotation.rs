//! Rotation: a changed source secret must reach 1,000 copies in under 30 s against the
//! local API server. The baseline, measured in the same run, is the API server's own pace for
//! the same writes: this process patching the 1,000 copies directly, 16 requests in flight (the
//! reconciler's concurrency). The reconciler's time is reported as a ratio of it.
//!
//!     cargo bench --bench rotation             (COPIES=1000 by default)

#[path = "support/olm_imitation.rs"]
mod olm_imitation;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::in_process::setting;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use serde_json::json;
use support::olm::*;
use support::{ControlPlane, create_namespace, unique_name};

const IN_FLIGHT: usize = 16;

fn main() -> anyhow::Result<()> {
    let copies = setting("COPIES", 1000);
    support::in_process::bench("rotation", |dir| async move { run(&dir, copies).await })
}

async fn run(dir: &std::path::Path, copies: usize) -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;

    // An operator for all namespaces from a private catalog, and `copies` tenant namespaces that
    // each hold our copy of its secret (as admission would have left them).
    let catalog = olm_imitation::private_catalog(&client, &[]).await;
    let operator_ns = unique_name("operators");
    create_namespace(&client, &operator_ns).await;
    ensure_crd(&client, WIDGET).await;
    olm_imitation::create_operator_group(&client, &operator_ns, &[""]).await;
    let csv = "widget-operator.v1.0.0";
    let create = create_csv(&client, &operator_ns, csv, WIDGET, &["widget-operator"]);
    olm_imitation::subscribe_and_install(&client, &operator_ns, (&catalog.namespace, &catalog.name), csv, create).await;

    support::in_process::install_crds(&client).await;
    let ledger = olm_pullsecret_injector::inject::ledger::Ledger::new(client.clone());
    let started = Instant::now();
    let tenants: Vec<String> = (0..copies).map(|i| format!("rot-{i:04}")).collect();
    futures::stream::iter(&tenants)
        .for_each_concurrent(IN_FLIGHT, |ns| {
            let client = client.clone();
            let (source, ledger) = (catalog.source.clone(), &ledger);
            async move {
                let namespace: Namespace = serde_json::from_value(json!({ "metadata": { "name": ns } })).unwrap();
                Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &namespace).await.unwrap();
                let copy = copy_of(&source, ns);
                Api::<Secret>::namespaced(client, ns).create(&PostParams::default(), &copy).await.unwrap();
                let hash = olm_pullsecret_injector::inject::copies::content_hash(&source);
                ledger.record(ns, source.metadata.name.as_deref().unwrap(), &source, &hash).await.unwrap();
            }
        })
        .await;
    println!("set-up: {copies} namespaces with a copy in {:.1} s", started.elapsed().as_secs_f64());

    // Baseline: the same writes (data and content hash of every copy), issued directly.
    let source_b = with_token(&catalog.source, "token-b");
    let started = Instant::now();
    futures::stream::iter(&tenants)
        .for_each_concurrent(IN_FLIGHT, |ns| {
            let api = Api::<Secret>::namespaced(client.clone(), ns);
            let (source_b, name) = (&source_b, &catalog.secret);
            async move {
                let patch = json!({ "metadata": { "annotations": { "pullsecret-injector.io/content-hash":
                    olm_pullsecret_injector::inject::copies::content_hash(source_b) } }, "data": source_b.data });
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
            }
        })
        .await;
    let baseline = started.elapsed();
    let sources = Api::<Secret>::namespaced(client.clone(), &catalog.namespace);
    let patch = json!({ "data": source_b.data });
    sources.patch(&catalog.secret, &PatchParams::default(), &Patch::Merge(&patch)).await?;

    // The webhook (with its reconciler) in this process, as the lease holder.
    write_certs(dir)?;
    support::in_process::serve(client.clone(), dir).await;
    // Settled: the lease is held and every copy already matches its source.
    wait_for(|| synced() > 0.0 || leader(), Duration::from_secs(60)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = synced();

    // The measurement: rotate the source, wait until the reconciler has updated every copy.
    let source_c = with_token(&catalog.source, "token-c");
    let started = Instant::now();
    let patch = json!({ "data": source_c.data });
    // The content hash follows the source's UID and resourceVersion: the stored source's.
    let source_c = sources.patch(&catalog.secret, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    wait_for(|| synced() - before >= copies as f64, Duration::from_secs(120)).await?;
    let rotation = started.elapsed();

    // Every copy carries the new content, checked by the API server's word.
    let metas = Api::<PartialObjectMeta<Secret>>::all(client.clone())
        .list_metadata(&ListParams::default().labels("app.kubernetes.io/managed-by=olm-pullsecret-injector"))
        .await?;
    let hash_c = olm_pullsecret_injector::inject::copies::content_hash(&source_c);
    let current = metas
        .items
        .iter()
        .filter(|m| {
            m.metadata.annotations.as_ref().and_then(|a| a.get("pullsecret-injector.io/content-hash")) == Some(&hash_c)
        })
        .count();
    anyhow::ensure!(current >= copies, "only {current} of {copies} copies carry the rotated content");

    println!("baseline: {copies} direct patches, {IN_FLIGHT} in flight: {:.2} s", baseline.as_secs_f64());
    println!(
        "rotation: source change to the last of {copies} copies updated by the reconciler: {:.2} s (target < 30 s); \
         {:.2}x the baseline",
        rotation.as_secs_f64(),
        rotation.as_secs_f64() / baseline.as_secs_f64()
    );
    Ok(())
}

fn copy_of(source: &Secret, ns: &str) -> Secret {
    let src = format!("{}/{}", source.metadata.namespace.as_deref().unwrap(), source.metadata.name.as_deref().unwrap());
    serde_json::from_value(json!({
        "metadata": { "name": source.metadata.name, "namespace": ns,
            "labels": { "app.kubernetes.io/managed-by": "olm-pullsecret-injector" },
            "annotations": { "pullsecret-injector.io/source": src,
                "pullsecret-injector.io/source-uid": source.metadata.uid,
                "pullsecret-injector.io/content-hash": olm_pullsecret_injector::inject::copies::content_hash(source) } },
        "type": source.type_, "data": source.data
    }))
    .unwrap()
}

fn with_token(source: &Secret, token: &str) -> Secret {
    let mut rotated = source.clone();
    let config = docker_config("registry.example", token);
    rotated.data = Some([(".dockerconfigjson".to_string(), k8s_openapi::ByteString(config.into_bytes()))].into());
    rotated
}

/// A counter of the reconciler's from the process's metrics.
fn metric(line_prefix: &str) -> f64 {
    olm_pullsecret_injector::telemetry::metrics::encode()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn synced() -> f64 {
    metric("pullsecret_injector_reconcile_actions_total{action=\"copy_synced\"}")
}

fn leader() -> bool {
    metric("pullsecret_injector_leader ") == 1.0
}

async fn wait_for(mut done: impl FnMut() -> bool, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "timed out after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn write_certs(dir: &std::path::Path) -> anyhow::Result<()> {
    let certs = olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()])?;
    Ok(olm_pullsecret_injector::commands::certs::write(dir, &certs)?)
}
