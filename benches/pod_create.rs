//! What a Pod create costs (issue 13): PODS Pods (each owned by an operand, so every one is
//! patched) created through the API server, IN_FLIGHT (16) at a time, in five rounds of one run:
//! our webhook; no webhook; a reference webhook that answers each Pod with the same patch and no
//! logic (the least any patching webhook costs); one that allows without a patch (the cost of a
//! call alone); our webhook again. `serve` runs in this process as the webhook only, on a runtime
//! of its own (its threads' CPU is counted apart), so nothing else reacts to the Pods. Reports
//! each round's throughput as a ratio of the round without, the API server's and the webhook's
//! CPU per 1,000 Pods, and the API server's own
//! `apiserver_admission_webhook_admission_duration_seconds` for the call.
//!
//!     cargo bench --bench pod_create          (PODS=1000 by default)
//!     PODS=5000 PROFILE=DIR cargo bench --bench pod_create
//!
//! With PROFILE, each round also takes a CPU profile of the API server (`/debug/pprof/profile`,
//! PROFILE_SECONDS=4 from the round's start) into DIR/<round>.pb.gz: `go tool pprof -top FILE`
//! shows where the API server's time goes.

#[path = "support/olm_imitation.rs"]
mod olm_imitation;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::in_process::setting;
use support::olm::*;
use support::{ControlPlane, create_namespace, unique_name};

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
    webhook_cpu_seconds: f64,
}

/// A reference webhook on the same TLS server as ours: it answers every Pod's review with `patch`
/// (the one ours gives these Pods, without looking anything up: what any patching webhook costs
/// the API server), or allows without one (what calling a webhook at all costs).
struct Reference {
    addr: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl Reference {
    async fn start(dir: &std::path::Path, patch: Option<String>) -> anyhow::Result<Self> {
        use olm_pullsecret_injector::webhook::review::{self, Verdict};
        let patch: Option<Arc<[u8]>> = patch.map(|p| p.into_bytes().into());
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        // The webhook's own parse and answer, without a decision.
        let answer = move |body: bytes::Bytes| {
            counted.fetch_add(1, Ordering::Relaxed);
            let answer = match review::parse(&body) {
                Ok(request) => {
                    let patch = patch.as_deref().filter(|_| request.kind.kind == "Pod");
                    review::respond(&request.uid, &Verdict::Allow { patch, warnings: &[] })
                }
                Err(e) => e.to_string().into_bytes(),
            };
            std::future::ready(([(axum::http::header::CONTENT_TYPE, "application/json")], answer))
        };
        let app = axum::Router::new().route("/mutate", axum::routing::post(answer));
        let addr = support::in_process::serve_tls(dir, app).await?;
        Ok(Reference { addr, calls })
    }
}

/// A runtime owned by async code: dropped, it shuts down in the background (a plain drop would
/// block inside the bench's runtime).
struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("running").handle()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The webhook's runtime threads are named this; with the log writer they are all its threads.
const WEBHOOK_THREADS: &str = "webhook-serve";

/// CPU seconds (user and system) of this process's threads that are the webhook's.
fn webhook_cpu_seconds() -> f64 {
    support::in_process::thread_cpu_seconds(&[WEBHOOK_THREADS, "log-writer"])
}

/// The API server's CPU profile over the next `seconds`, written to `file`.
async fn profile(client: kube::Client, seconds: u64, file: std::path::PathBuf) -> anyhow::Result<()> {
    use http_body_util::BodyExt;
    let request =
        axum::http::Request::get(format!("/debug/pprof/profile?seconds={seconds}")).body(kube::client::Body::empty())?;
    let response = client.send(request).await?;
    anyhow::ensure!(response.status().is_success(), "profile: {}", response.status());
    std::fs::write(&file, response.into_body().collect().await?.to_bytes())?;
    Ok(())
}

/// Creates `pods` Pods owned by a fresh operand in a fresh namespace; the operator reaches all.
/// With PROFILE set, profiles the API server meanwhile into `<PROFILE>/<label>.pb.gz`.
async fn round(client: &kube::Client, pods: usize, expect_patched: bool, label: &str) -> anyhow::Result<Round> {
    let ns = unique_name("create");
    create_namespace(client, &ns).await;
    let owner = create_operand(client, WIDGET, &ns, "prod").await;
    // The service-account controller makes the namespace's `default` account in its own time.
    let accounts = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &ns);
    support::eventually("the default service account", Duration::from_secs(30), || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await;
    let cpu = |text: &str| samples(text, "process_cpu_seconds_total", &[]).first().map_or(0.0, |s| s.1);
    let before = cpu(&apiserver_metrics(client).await?);
    let webhook_before = webhook_cpu_seconds();
    let api = Api::<Pod>::namespaced(client.clone(), &ns);
    let profiling = std::env::var_os("PROFILE").map(|dir| {
        let file = std::path::Path::new(&dir).join(format!("{label}.pb.gz"));
        tokio::spawn(profile(client.clone(), setting("PROFILE_SECONDS", 4u64), file))
    });
    let started = Instant::now();
    let patched = futures::stream::iter(0..pods)
        .map(|i| {
            let (api, owner) = (api.clone(), owner.clone());
            async move {
                let pod = bare_pod(json!({ "name": format!("p-{i}"), "ownerReferences": [owner] }));
                !pull_secret_names(&api.create(&PostParams::default(), &pod).await.unwrap()).is_empty()
            }
        })
        .buffer_unordered(setting("IN_FLIGHT", 16))
        .filter(|patched| futures::future::ready(*patched))
        .count()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(patched == if expect_patched { pods } else { 0 }, "{patched} of {pods} Pods patched");
    let after = cpu(&apiserver_metrics(client).await?);
    let webhook_cpu_seconds = webhook_cpu_seconds() - webhook_before;
    if let Some(profiling) = profiling {
        profiling.await??;
    }
    Ok(Round { pods_per_second: pods as f64 / elapsed, apiserver_cpu_seconds: after - before, webhook_cpu_seconds })
}

async fn run(dir: &std::path::Path, pods: usize) -> anyhow::Result<()> {
    let cp = ControlPlane::shared();
    let client = cp.admin().await;
    let catalog = olm_imitation::private_catalog(&client, &[]).await;
    let operator_ns = unique_name("operator");
    create_namespace(&client, &operator_ns).await;
    let operator = olm_imitation::install_operator_unseen(&client, &catalog, &operator_ns, &[""], WIDGET).await;

    let certs = olm_pullsecret_injector::commands::certs::generate(&[], &[std::net::Ipv4Addr::LOCALHOST.into()])?;
    olm_pullsecret_injector::commands::certs::write(dir, &certs)?;
    // The webhook on a runtime of its own, so that its threads' CPU can be told from the rest.
    let webhook_runtime = Background(Some(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(WEBHOOK_THREADS)
            .enable_all()
            .build()?,
    ));
    let (serve_client, serve_dir) = (client.clone(), dir.to_path_buf());
    let addr = webhook_runtime
        .handle()
        .spawn(async move {
            support::in_process::serve_as(serve_client, &serve_dir, olm_pullsecret_injector::runtime::Role::Webhook)
                .await
        })
        .await?;
    let patch =
        format!(r#"[{{"op":"add","path":"/spec/imagePullSecrets","value":[{{"name":"{}"}}]}}]"#, catalog.secret);
    let patching = Reference::start(dir, Some(patch)).await?;
    let allowing = Reference::start(dir, None).await?;

    // Points the chart's webhook configuration at `addr` and waits until the API server calls
    // it: ours patches a probe; a reference counts the probe.
    let register = |addr: std::net::SocketAddr, reference: Option<&Reference>| {
        let config =
            support::webhook::chart_webhook_configuration(&format!("https://{addr}/mutate"), &certs.ca_pem, "Fail");
        let (client, operator, operator_ns) = (client.clone(), &operator, &operator_ns);
        let calls = reference.map(|r| r.calls.clone());
        async move {
            support::helm::apply(&client, &config, false).await.map_err(anyhow::Error::msg)?;
            let Some(calls) = calls else {
                wait_until_webhook_knows(&client, operator).await;
                return anyhow::Ok(());
            };
            let pods = Api::<Pod>::namespaced(client.clone(), operator_ns);
            let before = calls.load(Ordering::Relaxed);
            while calls.load(Ordering::Relaxed) == before {
                let probe = bare_pod(json!({ "generateName": "probe-" }));
                pods.create(&PostParams { dry_run: true, ..Default::default() }, &probe).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok(())
        }
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
    // One round with the webhook at `addr` registered; what the API server measured of it.
    let measured = |label: &'static str, patched: bool| {
        let client = client.clone();
        async move {
            let before = histogram(&apiserver_metrics(&client).await?);
            let round = round(&client, pods, patched, label).await?;
            let after = histogram(&apiserver_metrics(&client).await?);
            anyhow::Ok((round, delta(&after, &before)))
        }
    };
    register(addr, None).await?;
    let ours_1 = measured("ours-1", true).await?;
    unregister().await?;
    let without = round(&client, pods, false, "without").await?;
    register(patching.addr, Some(&patching)).await?;
    let fixed_patch = measured("fixed-patch", true).await?;
    register(allowing.addr, Some(&allowing)).await?;
    let allow_only = measured("allow-only", false).await?;
    register(addr, None).await?;
    let ours_2 = measured("ours-2", true).await?;
    support::webhook::unregister(&client).await;

    let per_1000 = |seconds: f64| seconds * 1000.0 / pods as f64;
    println!(
        "without a webhook: {:.0} Pods/s; CPU per 1,000 Pods: API server {:.2} s (our webhook {:.2} s: its watches)",
        without.pods_per_second,
        per_1000(without.apiserver_cpu_seconds),
        per_1000(without.webhook_cpu_seconds),
    );
    let rounds = [
        ("a webhook that allows, no patch", &allow_only),
        ("a webhook that returns a fixed patch", &fixed_patch),
        ("our webhook (round 1)", &ours_1),
        ("our webhook (round 2)", &ours_2),
    ];
    for (name, (round, buckets)) in rounds {
        let total = buckets.iter().find(|(le, _)| le == "+Inf").map_or(0.0, |b| b.1);
        let under_5ms = buckets.iter().find(|(le, _)| le == "0.005").map_or(0.0, |b| b.1);
        let ours = name.starts_with("our");
        println!(
            "{name}: {:.0} Pods/s, ratio {:.2}{}; CPU per 1,000 Pods: API server {:.2} s{}; the API server's \
             measure of the call: {:.0}% under 5 ms, p50 {:.1} ms, p99 {:.1} ms (interpolated in its buckets{})",
            round.pods_per_second,
            round.pods_per_second / without.pods_per_second,
            if ours { " (target >= 0.85)" } else { "" },
            per_1000(round.apiserver_cpu_seconds),
            if ours { format!(", webhook {:.2} s", per_1000(round.webhook_cpu_seconds)) } else { String::new() },
            100.0 * under_5ms / total.max(1.0),
            quantile(buckets, 0.5) * 1000.0,
            quantile(buckets, 0.99) * 1000.0,
            if ours { "; target p50 < 5 ms" } else { "" },
        );
    }
    Ok(())
}
