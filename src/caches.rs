//! Watch-fed caches shared by the admission path: OLM's objects (projected), namespace metadata
//! and the source secrets in catalog namespaces. Every change rebuilds the [`Index`], which is
//! swapped in atomically; admissions never wait on a watch.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::index::Index;
use crate::olm::{CatalogSource, ClusterServiceVersion, OperatorGroup, Subscription};

pub struct Caches {
    client: kube::Client,
    index: ArcSwap<Index>,
    catalogs: Store<CatalogSource>,
    subscriptions: Store<Subscription>,
    csvs: Store<ClusterServiceVersion>,
    operator_groups: Store<OperatorGroup>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Catalog namespace → its secrets, watched from the first time a catalog there has secrets.
    sources: Mutex<HashMap<String, Store<Secret>>>,
    synced: AtomicBool,
    changed: Notify,
    /// Bumped whenever the index or a source secret changes: decisions remembered under an older
    /// generation are stale.
    generation: Arc<AtomicU64>,
}

/// Runs a reflector into `writer` (managedFields dropped), calling `on_change` on every event.
pub(crate) fn reflect<K, S>(
    stream: S,
    writer: reflector::store::Writer<K>,
    what: &'static str,
    on_change: impl Fn() + Send + 'static,
) -> impl Future<Output = ()> + Send
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    stream.default_backoff().modify(|o: &mut K| o.managed_fields_mut().clear()).reflect(writer).for_each(move |event| {
        match event {
            Ok(_) => on_change(),
            Err(e) => warn!(watch = what, error = %e, "watch failed; retrying"),
        }
        futures::future::ready(())
    })
}

impl Caches {
    /// Starts every watch. [`Caches::wait_synced`] resolves once they have all listed.
    pub fn start(client: kube::Client) -> Arc<Caches> {
        let (catalogs, catalogs_w) = reflector::store();
        let (subscriptions, subscriptions_w) = reflector::store();
        let (csvs, csvs_w) = reflector::store();
        let (operator_groups, operator_groups_w) = reflector::store();
        let (namespaces, namespaces_w) = reflector::store();
        let caches = Arc::new(Caches {
            client: client.clone(),
            index: ArcSwap::from_pointee(Index::default()),
            catalogs,
            subscriptions,
            csvs,
            operator_groups,
            namespaces,
            sources: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(false),
            changed: Notify::new(),
            generation: Arc::new(AtomicU64::new(0)),
        });
        let cfg = watcher::Config::default;
        let rebuild = |caches: &Arc<Caches>| {
            let caches = caches.clone();
            move || caches.changed.notify_one()
        };
        let catalogs = watcher(Api::<CatalogSource>::all(client.clone()), cfg());
        tokio::spawn(reflect(catalogs, catalogs_w, "catalogsources", rebuild(&caches)));
        let subscriptions = watcher(Api::<Subscription>::all(client.clone()), cfg());
        tokio::spawn(reflect(subscriptions, subscriptions_w, "subscriptions", rebuild(&caches)));
        let csvs = watcher(Api::<ClusterServiceVersion>::all(client.clone()), cfg());
        tokio::spawn(reflect(csvs, csvs_w, "clusterserviceversions", rebuild(&caches)));
        let operator_groups = watcher(Api::<OperatorGroup>::all(client.clone()), cfg());
        tokio::spawn(reflect(operator_groups, operator_groups_w, "operatorgroups", rebuild(&caches)));
        let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client), cfg());
        tokio::spawn(reflect(namespaces, namespaces_w, "namespaces", rebuild(&caches)));
        tokio::spawn(caches.clone().rebuild_on_change());
        caches
    }

    /// Resolves when every watch has listed once and the first index is built.
    pub async fn wait_synced(&self) {
        let _ = self.catalogs.wait_until_ready().await;
        let _ = self.subscriptions.wait_until_ready().await;
        let _ = self.csvs.wait_until_ready().await;
        let _ = self.operator_groups.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        self.rebuild();
        let sources: Vec<Store<Secret>> = self.sources.lock().expect("sources").values().cloned().collect();
        for store in sources {
            let _ = store.wait_until_ready().await;
        }
        self.synced.store(true, Ordering::SeqCst);
        info!(
            catalogs = self.catalogs.len(),
            csvs = self.csvs.len(),
            namespaces = self.namespaces.len(),
            "caches synced"
        );
    }

    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Changes whenever anything a decision depends on may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn index(&self) -> arc_swap::Guard<Arc<Index>> {
        self.index.load()
    }

    /// The current index, to hold across awaits.
    pub fn index_snapshot(&self) -> Arc<Index> {
        self.index.load_full()
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.namespaces.get(&ObjectRef::new(name))
    }

    /// A source secret from the catalog namespace's watch (waiting for its first list if the
    /// namespace only just gained a catalog with secrets).
    pub async fn source_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let store = self.watch_sources(namespace);
        if tokio::time::timeout(Duration::from_secs(2), store.wait_until_ready()).await.is_err() {
            warn!(namespace, "secrets of the catalog namespace are not listed yet");
        }
        store.get(&ObjectRef::new(name).within(namespace))
    }

    fn watch_sources(&self, namespace: &str) -> Store<Secret> {
        let mut sources = self.sources.lock().expect("sources");
        if let Some(store) = sources.get(namespace) {
            return store.clone();
        }
        let (store, writer) = reflector::store();
        let api = Api::<Secret>::namespaced(self.client.clone(), namespace);
        // A source secret changed: decisions (which copies hold which content) are stale.
        let generation = self.generation.clone();
        let bump = move || {
            generation.fetch_add(1, Ordering::SeqCst);
        };
        tokio::spawn(reflect(watcher(api, watcher::Config::default()), writer, "catalog-namespace secrets", bump));
        sources.insert(namespace.to_string(), store.clone());
        store
    }

    async fn rebuild_on_change(self: Arc<Self>) {
        loop {
            self.changed.notified().await;
            // Coalesce bursts (an initial list, an operator upgrade) into one rebuild.
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.rebuild();
        }
    }

    fn rebuild(&self) {
        let index = Index::build(
            &self.catalogs.state(),
            &self.subscriptions.state(),
            &self.csvs.state(),
            &self.operator_groups.state(),
        );
        for catalog in self.catalogs.state() {
            if let Some(ns) = catalog.namespace()
                && !catalog.spec.secrets.is_empty()
            {
                self.watch_sources(&ns);
            }
        }
        self.index.store(Arc::new(index));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}
