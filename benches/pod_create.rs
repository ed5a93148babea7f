//! What a Pod create costs (issue 13): PODS Pods (each owned by an operand, so every one is
//! patched) created through the API server, 16 in flight, with the webhook registered, then
//! without it, then with it again, in one run; `serve` runs in this process as the webhook only,
//! so nothing else reacts to the Pods. Reports the throughput ratio, the API server's own
//! `apiserver_admission_webhook_admission_duration_seconds` for our webhook, and the API server's
//! CPU per 1,000 Pods.
//!
//!     cargo bench --bench pod_create          (PODS=1000 by default)

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::in_process::setting;
use support::olm::*;
use support::{ControlPlane, create_namespace, unique_name};

const IN_FLIGHT: usize = 16;
const HOOK: &str = "pods.pullsecret-injector.io";

fn main() -> anyhow::Result<()> {
    let pods = setting("PODS", 1000);
    support::in_process::bench("pod-create", |dir| async move { run(&dir, pods).await })
}

/// The API server's metrics, as text.
async fn apiserver_metrics(client: &kube::Client) -> anyhow::Result<String> {
    let request = axum::http::Request::get("/metrics").body(Vec::new())?;
    Ok(client.request_text(request).await?)
}

/// Sum of the samples of `name` whose labels contain every one of `labels`, by `le` (for a
/// histogram's buckets) or under "" (for a plain metric).
fn samples(text: &str, name: &str, labels: &[&str]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(name)) {
        let (series, value) = line.rsplit_once(' ').unwrap_or((line, "0"));
        let rest = &series[name.len()..];
        if !labels.iter().all(|l| series.contains(l)) || !(rest.is_empty() || rest.starts_with('{')) {
            continue;
        }
        let le = series.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string();
        let value: f64 = value.parse().unwrap_or(0.0);
        match out.iter_mut().find(|(l, _)| *l == le) {
            Some((_, sum)) => *sum += value,
            None => out.push((le, value)),
        }
    }
    out
}

/// The `q` quantile of a cumulative histogram given as (le, count) deltas, interpolated within
/// its bucket as Prometheus' `histogram_quantile` does.
fn quantile(buckets: &[(String, f64)], q: f64) -> f64 {
    let mut sorted: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(le, c)| (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(0.0) }, *c))
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let rank = q * sorted.last().map_or(0.0, |b| b.1);
    let (mut lower, mut below) = (0.0, 0.0);
    for (upper, count) in sorted {
        if count >= rank {
            if upper.is_infinite() || count == below {
                return lower;
            }
            return lower + (upper - lower) * (rank - below) / (count - below);
        }
        (lower, below) = (upper, count);
    }
    lower
}

fn delta(after: &[(String, f64)], before: &[(String, f64)]) -> Vec<(String, f64)> {
    after.iter().map(|(le, v)| (le.clone(), v - before.iter().find(|(l, _)| l == le).map_or(0.0, |b| b.1))).collect()
}

struct Round {
    pods_per_second: f64,
    apiserver_cpu_seconds: f64,
}

/// Creates `pods` Pods owned by a fresh operand in a fresh namespace; the operator reaches all.
async fn round(client: &kube::Client, pods: usize, expect_patched: bool) -> anyhow::Result<Round> {
    let ns = unique_name("create");
    create_namespace(client, &ns).await;
    let owner = create_operand(client, WIDGET, &ns, "prod").await;
    let cpu = |text: &str| samples(text, "process_cpu_seconds_total", &[]).first().map_or(0.0, |s| s.1);
    let before = cpu(&apiserver_metrics(client).await?);
    let api = Api::<Pod>::namespaced(client.clone(), &ns);
    let started = Instant::now();
    let patched = futures::stream::iter(0..pods)
        .map(|i| {
            let (api, owner) = (api.clone(), owner.clone());
            async move {
                let pod = bare_pod(json!({ "name": format!("p-{i}"), "ownerReferences": [owner] }));
                !pull_secret_names(&api.create(&PostParams::default(), &pod).await.unwrap()).is_empty()
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .filter(|patched| futures::future::ready(*patched))
        .count()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(patched == if expect_patched { pods } else { 0 }, "{patched} of {pods} Pods patched");
    let after = cpu(&apiserver_metrics(client).await?);
    Ok(Round { pods_per_second: pods as f64 / elapsed, apiserver_cpu_seconds: after - before })
}

async fn run(dir: &std::path::Path, pods: usize) -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    let catalog = private_catalog(&client, &[]).await;
    let operator_ns = unique_name("operator");
    create_namespace(&client, &operator_ns).await;
    let operator = install_operator_unseen(&client, &catalog, &operator_ns, &[""], WIDGET).await;

    let certs = olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()])?;
    olm_pullsecret_injector::commands::certs::write(dir, &certs)?;
    let addr =
        support::in_process::serve_as(client.clone(), dir, olm_pullsecret_injector::runtime::Role::Webhook).await;
    let config =
        support::webhook::chart_webhook_configuration(&format!("https://{addr}/mutate"), &certs.ca_pem, "Fail");
    let register = || async {
        support::helm::apply(&client, &config, false).await.map_err(anyhow::Error::msg)?;
        wait_until_webhook_knows(&client, &operator).await;
        anyhow::Ok(())
    };
    let unregister = || async {
        support::webhook::unregister(&client).await;
        // The API server drops the configuration asynchronously.
        let pods = Api::<Pod>::namespaced(client.clone(), &operator_ns);
        loop {
            let probe = bare_pod(json!({ "generateName": "probe-", "ownerReferences": [operator.csv_owner()] }));
            let dry = pods.create(&PostParams { dry_run: true, ..Default::default() }, &probe).await?;
            if pull_secret_names(&dry).is_empty() {
                return anyhow::Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    let hook = format!("name=\"{HOOK}\"");
    let histogram = |text: &str| {
        samples(text, "apiserver_admission_webhook_admission_duration_seconds_bucket", &[&hook, "operation=\"CREATE\""])
    };
    register().await?;
    let mut with = Vec::new();
    let mut observed = Vec::new();
    let first_before = histogram(&apiserver_metrics(&client).await?);
    with.push(round(&client, pods, true).await?);
    observed.push(delta(&histogram(&apiserver_metrics(&client).await?), &first_before));
    unregister().await?;
    let without = round(&client, pods, false).await?;
    register().await?;
    let second_before = histogram(&apiserver_metrics(&client).await?);
    with.push(round(&client, pods, true).await?);
    observed.push(delta(&histogram(&apiserver_metrics(&client).await?), &second_before));
    support::webhook::unregister(&client).await;

    println!(
        "without the webhook: {:.0} Pods/s, API server CPU {:.2} s per 1,000 Pods",
        without.pods_per_second,
        without.apiserver_cpu_seconds * 1000.0 / pods as f64
    );
    for (i, (round, buckets)) in with.iter().zip(&observed).enumerate() {
        println!(
            "with the webhook (round {}): {:.0} Pods/s, ratio {:.2} (target >= 0.85); API server CPU {:.2} s per 1,000 Pods; \
             the API server measured our webhook at p50 {:.1} ms, p99 {:.1} ms (interpolated in its buckets; target p50 < 5 ms)",
            i + 1,
            round.pods_per_second,
            round.pods_per_second / without.pods_per_second,
            round.apiserver_cpu_seconds * 1000.0 / pods as f64,
            quantile(buckets, 0.5) * 1000.0,
            quantile(buckets, 0.99) * 1000.0,
        );
    }
    Ok(())
}
