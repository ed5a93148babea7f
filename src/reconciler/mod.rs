//! The reconciler keeps the copies true after admission, on the one replica that holds the
//! [`lease`]. Each pass works from watch caches and acts only where something is off, one sweep
//! per file:
//!
//! - [`copies`]: a changed source reaches every copy (content hash); a copy whose source is no
//!   longer offered to its namespace is deleted after the grace period, unless a live Pod still
//!   names it, and the names we recorded on service accounts are removed with it;
//! - [`service_accounts`]: those that resolve to a catalog but lack its secrets are backfilled;
//! - [`catalogs`]: a namespace selector that does not parse is reported (log, Warning Event);
//! - [`links`]: each CSV's link to its catalog, as a Subscription proves it, is written down
//!   (`PullSecretLink`) and kept until the CSV is gone, so it outlives OLM's records;
//! - [`pods`]: those admitted without the secrets they need are reported, and with `--heal-pods`
//!   the controller-owned ones are deleted so their controller recreates them through the webhook.
//!
//! Every sweep asks the same resolver as the webhook what an object needs.

mod catalogs;
mod copies;
pub(crate) mod lease;
mod links;
mod pods;
mod service_accounts;

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};
use tracing::warn;

use crate::context::Context;
use crate::inject::ledger::{Observed, PullSecretCopy};
use crate::serving::lifecycle::Pending;
use crate::state::caches::{reflect, wake};
use crate::state::index::{Ignored, Index};
use lease::{HeldUntil, holds};

#[derive(Clone, Debug)]
pub struct Options {
    /// How long a copy stays after its source stopped being offered to its namespace: covers
    /// in-flight admissions and Pods rejected after mutation.
    pub cleanup_grace: Duration,
    pub heal_pods: bool,
}

/// A pass runs at least this often (grace periods expire without any event).
const RESYNC: Duration = Duration::from_secs(10);

pub(crate) struct Reconciler {
    ctx: Arc<Context>,
    options: Options,
    pods: Store<Pod>,
    service_accounts: Store<ServiceAccount>,
    /// The ledger of our copies.
    ledger: Store<PullSecretCopy>,
    changed: Arc<Notify>,
    started: Instant,
}

/// What one leader term remembers between passes.
#[derive(Default)]
struct Memory {
    unwanted_since: HashMap<String, Instant>,
    /// ServiceAccount uid → the version and caches generation it was last found complete at.
    service_accounts_done: HashMap<String, Checked>,
    /// Pod uid → caches generation it was last checked at.
    pods_checked: HashMap<String, u64>,
    pods_reported: HashSet<String>,
    healed_controllers: HashMap<String, pods::Healing>,
    /// Pods admitted without their secrets, waiting to be reported per owner.
    unreported: pods::Unreported,
    /// Whether the webhook is known to be called, before healing evicts.
    called: pods::Called,
    /// Controllers whose healing was given up (reported once).
    heals_given_up: HashSet<String>,
    /// `<ns>/<copy>` → when the copy was last checked with a probe.
    verified_at: HashMap<String, Instant>,
    /// `<ns>/<copy>` → since when a copy observed deleted still exists.
    deleted_since: HashMap<String, Instant>,
    /// Ignored catalogs already reported: (UID, what was wrong).
    ignored_reported: HashSet<(String, Ignored)>,
}

#[derive(PartialEq, Eq)]
struct Checked {
    resource_version: String,
    generation: u64,
}

/// What one pass works from.
struct Pass<'a> {
    index: Arc<Index>,
    generation: u64,
    leading: &'a watch::Receiver<HeldUntil>,
}

impl Pass<'_> {
    /// Checked before every write: a pass stops as soon as the lease is no longer known to be
    /// held (by the instant the election published, not only when it says so), so two replicas
    /// never act at once.
    fn lost_lead(&self) -> bool {
        !holds(&self.leading.borrow())
    }
}

impl Reconciler {
    /// Starts the watches the reconciler needs (on every replica, so a takeover is immediate).
    pub fn start(ctx: Arc<Context>, options: Options, ledger: LedgerFollow) -> Arc<Reconciler> {
        let client = ctx.client.clone();
        // Every watch of the reconciler wakes the one the ledger's watch wakes.
        let LedgerFollow { store: ledger, changed } = ledger;
        let (pods, pods_w) = reflector::store();
        let stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).modify(pods::trim);
        tokio::spawn(reflect(stream, pods_w, "pods", wake(&changed)));
        let (service_accounts, sas_w) = reflector::store();
        let stream = watcher(Api::<ServiceAccount>::all(client.clone()), watcher::Config::default())
            .modify(|sa: &mut ServiceAccount| sa.secrets = None);
        tokio::spawn(reflect(stream, sas_w, "serviceaccounts", wake(&changed)));
        Arc::new(Reconciler { ctx, options, pods, service_accounts, ledger, changed, started: Instant::now() })
    }

    /// Reconciles while `leading` says so, once every watch of the reconciler has listed (then
    /// `synced` is marked ready); passes run on changes and at least every 10 s. Returns when
    /// the election ends.
    pub async fn run(self: Arc<Self>, mut leading: watch::Receiver<HeldUntil>, synced: Pending) {
        // A store's readiness wakes one waiter only: this task is the one.
        let _ = self.pods.wait_until_ready().await;
        let _ = self.service_accounts.wait_until_ready().await;
        let _ = self.ledger.wait_until_ready().await;
        synced.ready();
        loop {
            if leading.wait_for(holds).await.is_err() {
                return;
            }
            crate::telemetry::metrics::set_leader(true);
            // A new term: what the previous leader did is only known from the caches.
            let mut memory = Memory::default();
            while holds(&leading.borrow()) {
                let caches = self.ctx.caches();
                let pass = Pass { index: caches.index_snapshot(), generation: caches.generation(), leading: &leading };
                self.report_ignored_catalogs(&pass, &mut memory);
                self.links_sweep(&pass).await;
                self.copies_sweep(&pass, &mut memory).await;
                self.service_accounts_sweep(&pass, &mut memory).await;
                self.pods_sweep(&pass, &mut memory).await;
                let generation = pass.generation;
                tokio::select! {
                    _ = self.changed.notified() => {
                        // Coalesce a burst of watch events into one pass.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ = self.wait_generation_change(generation) => {}
                    _ = tokio::time::sleep(RESYNC) => {}
                    _ = leading.changed() => {}
                }
            }
            crate::telemetry::metrics::set_leader(false);
        }
    }

    async fn wait_generation_change(&self, seen: u64) {
        while self.ctx.caches().generation() == seen {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The ledger, as every process follows it.
pub(crate) struct LedgerFollow {
    store: Store<PullSecretCopy>,
    /// Notified on every change.
    changed: Arc<Notify>,
}

/// Starts the watch of the ledger. What admission remembers of ensured copies follows it, so a
/// copy deleted or changed behind our back (admission marks its entry) is made again by the next
/// admission rather than listed by name while it does not exist.
pub(crate) fn follow_ledger(ctx: &Arc<Context>) -> LedgerFollow {
    let (store, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let stream = watcher(Api::<PullSecretCopy>::all(ctx.client.clone()), watcher::Config::default());
    tokio::spawn(reflect(stream, writer, "ledger of copies", copies_followed(ctx, &changed)));
    LedgerFollow { store, changed }
}

fn copies_followed(
    ctx: &Arc<Context>,
    changed: &Arc<Notify>,
) -> impl Fn(&watcher::Event<PullSecretCopy>) + Send + 'static {
    let (ctx, changed) = (ctx.clone(), changed.clone());
    move |event| {
        // A copy forgotten drops the remembered decisions of its namespace only.
        let forget = |entry: &PullSecretCopy, content_hash: Option<&str>| {
            if ctx.copies.forget(&entry.spec.namespace, &entry.spec.name, content_hash) {
                ctx.caches().invalidate_namespace(&entry.spec.namespace);
            }
        };
        match event {
            watcher::Event::Delete(entry) => forget(entry, None),
            watcher::Event::Apply(entry) if Observed::of(entry).is_some() => forget(entry, None),
            watcher::Event::Apply(entry) => forget(entry, Some(&entry.spec.content_hash)),
            watcher::Event::Init => {
                ctx.copies.forget_all();
                ctx.caches().invalidate();
            }
            watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
        }
        changed.notify_one();
    }
}

fn failed(what: &str, namespace: &str, name: &str, error: impl Display) {
    crate::telemetry::metrics::reconcile_error();
    warn!(%namespace, %name, %error, "could not {what}");
}

/// Forgets what was remembered of objects that are gone.
fn forget_gone<V>(memory: &mut HashMap<String, V>, live: &HashSet<String>) {
    memory.retain(|uid, _| live.contains(uid));
}

fn write_params() -> PatchParams {
    PatchParams { field_manager: Some(crate::FIELD_MANAGER.into()), ..Default::default() }
}
