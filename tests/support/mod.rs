//! Shared helpers for the end-to-end tests. Each test binary gets one real control plane; each
//! test works in namespaces of its own.
#![allow(dead_code)] // every test binary uses a different part of the helpers

pub mod controlplane;
pub mod fixtures;
pub mod gotool;
pub mod helm;
pub mod in_process;
pub mod olm;
pub mod webhook;

use std::future::Future;
use std::time::Duration;

pub use controlplane::ControlPlane;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

/// `N` distinct loopback ports that were free a moment ago, below the kernel's ephemeral range
/// (32768 and up): a port taken from that range can go to an outgoing connection of any process
/// before the child that is to listen on it binds it, and one released and asked for again can
/// come back twice.
pub fn free_ports<const N: usize>() -> [u16; N] {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Test binaries run one after another but each starts over: spread them by process id.
    let start = 20_000 + (std::process::id() % 600) as u16 * 20;
    let mut held = Vec::with_capacity(N);
    while held.len() < N {
        let port = 20_000 + (start - 20_000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(listener);
        }
    }
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A namespace name unique within this control plane.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id() % 10_000, NEXT.fetch_add(1, Ordering::Relaxed))
}

pub async fn create_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

/// Creates the namespace unless it exists (server-side apply).
pub async fn create_namespace_if_missing(client: &kube::Client, name: &str) {
    let ns = serde_json::json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } });
    Api::<Namespace>::all(client.clone())
        .patch(name, &kube::api::PatchParams::apply("e2e"), &kube::api::Patch::Apply(ns))
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
}

/// Polls `check` every 100 ms until it yields a value, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
