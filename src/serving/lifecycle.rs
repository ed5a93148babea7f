//! Readiness and shutdown, shared by every part of a running process (the kubert pattern:
//! `initialized` / `shutdown`). Each part that must be ready before traffic is sent registers a
//! [`Pending`] and marks it ready itself; one [`Shutdown`] signal is watched by all of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// True once every registered part is ready, and false again while draining.
#[derive(Clone, Default)]
pub struct Readiness(Arc<ReadinessState>);

#[derive(Default)]
struct ReadinessState {
    pending: Mutex<Vec<&'static str>>,
    draining: AtomicBool,
}

/// A part not ready yet; [`Pending::ready`] says it is.
#[must_use = "a part is not ready until `ready` is called"]
pub struct Pending {
    readiness: Readiness,
    part: &'static str,
}

impl Readiness {
    /// Registers a part that is not ready yet.
    pub fn pending(&self, part: &'static str) -> Pending {
        self.0.pending.lock().expect("readiness").push(part);
        Pending { readiness: self.clone(), part }
    }

    /// What keeps the process from being ready: parts still pending, or draining.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut why = self.0.pending.lock().expect("readiness").clone();
        if self.0.draining.load(Ordering::SeqCst) {
            why.push("draining");
        }
        why
    }

    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }
}

impl Pending {
    pub fn ready(self) {
        let mut pending = self.readiness.0.pending.lock().expect("readiness");
        if let Some(at) = pending.iter().position(|p| *p == self.part) {
            pending.remove(at);
        }
        tracing::info!(part = self.part, waiting_for = ?*pending, "ready");
    }
}

/// One shutdown signal for every part of the process.
#[derive(Clone)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(Arc::new(watch::channel(false).0))
    }
}

impl Shutdown {
    /// Asks every part to stop.
    pub fn begin(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub async fn begun(&self) {
        // The sender lives in `self`, so this only resolves on `begin`.
        let _ = self.0.subscribe().wait_for(|begun| *begun).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_part_is_and_not_while_draining() {
        let readiness = Readiness::default();
        assert!(readiness.not_ready().is_empty());
        let caches = readiness.pending("caches");
        let listener = readiness.pending("https listener");
        assert_eq!(readiness.not_ready(), ["caches", "https listener"]);
        caches.ready();
        assert_eq!(readiness.not_ready(), ["https listener"]);
        listener.ready();
        assert!(readiness.not_ready().is_empty());
        readiness.start_draining();
        assert_eq!(readiness.not_ready(), ["draining"]);
    }

    #[tokio::test]
    async fn every_clone_sees_the_one_signal() {
        let shutdown = Shutdown::default();
        let waiter = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { shutdown.begun().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        shutdown.begin();
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
    }
}
