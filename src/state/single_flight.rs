//! One piece of work per key at a time: concurrent reviews of one new owner make one GET, and
//! concurrent admissions into one namespace make one copy. Later callers wait for the first and
//! then find its answer remembered. A key's gate is forgotten when its work ends or is dropped
//! (a review cut off by its deadline), so keys never pile up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Gate = Arc<tokio::sync::Mutex<()>>;

#[derive(Default)]
pub struct SingleFlight {
    gates: Mutex<HashMap<String, Gate>>,
}

impl SingleFlight {
    /// Runs `work` once no other work for `key` runs.
    pub async fn run<T>(&self, key: &str, work: impl Future<Output = T>) -> T {
        let gate = self.gates.lock().expect("single-flight gates").entry(key.to_string()).or_default().clone();
        let forget = Forget { flights: self, key, gate: Some(gate) };
        let _held = forget.gate.as_ref().expect("held until dropped").lock().await;
        work.await
    }

    /// Keys with work running or waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.gates.lock().expect("single-flight gates").len()
    }
}

/// Forgets the key's gate when its last holder is done, however its work ended. Every holder
/// takes its share of the gate and gives it back under the map's lock, so the count is exact.
struct Forget<'a> {
    flights: &'a SingleFlight,
    key: &'a str,
    gate: Option<Gate>,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut gates = self.flights.gates.lock().expect("single-flight gates");
        let Some(gate) = self.gate.take() else { return };
        // Ours and the map's: nobody else runs or waits on this key.
        let last = Arc::strong_count(&gate) == 2 && gates.get(self.key).is_some_and(|g| Arc::ptr_eq(g, &gate));
        drop(gate);
        if last {
            gates.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn work_for_one_key_runs_one_at_a_time() {
        let flights = SingleFlight::default();
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let work = || async {
            most.fetch_max(running.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            running.fetch_sub(1, Ordering::SeqCst);
        };
        tokio::join!(flights.run("a", work()), flights.run("a", work()), flights.run("a", work()));
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0, "nothing is left once the work is done");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_cut_off_leaves_the_key_to_the_work_still_running() {
        let flights = SingleFlight::default();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let first = flights.run("a", async { released.await.ok() });
        let second = flights.run("a", async {});
        tokio::pin!(first);
        // The first holds the key; the second waits for it and gives up.
        assert!(tokio::time::timeout(Duration::from_millis(10), &mut first).await.is_err());
        assert!(tokio::time::timeout(Duration::from_millis(10), second).await.is_err());
        assert_eq!(flights.len(), 1, "the first still holds the key");
        let third = flights.run("a", async {});
        tokio::pin!(third);
        assert!(tokio::time::timeout(Duration::from_millis(10), &mut third).await.is_err(), "it waits too");
        release.send(()).unwrap();
        first.await;
        third.await;
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn work_cut_off_by_a_deadline_leaves_no_key_behind() {
        let flights = SingleFlight::default();
        for i in 0..100 {
            let key = format!("owner-{i}");
            let never = flights.run(&key, std::future::pending::<()>());
            assert!(tokio::time::timeout(Duration::from_millis(10), never).await.is_err());
        }
        assert_eq!(flights.len(), 0);
    }
}
