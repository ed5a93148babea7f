//! Watch-fed caches shared by the webhook and the reconciler: OLM's objects (projected),
//! namespace metadata and the source secrets in catalog namespaces. Every change rebuilds the
//! [`Index`], which is swapped in atomically; admissions never wait on a watch.
//!
//! [`Caches::from_fixture`] fills the same stores from given objects instead of watches, so the
//! resolver and the webhook can be driven in process by tests and benches.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::state::index::{CatalogNamespaces, Ignored, Index};
use crate::state::links::PullSecretLink;
use crate::state::olm::{CatalogSource, ClusterServiceVersion, OperatorGroup, Subscription};

/// The label selector that leaves out the CSVs OLM copied into target namespaces.
pub const NOT_COPIED: &str = "!olm.copiedFrom";

/// Only these secret types are ever read, and so handed out: a pull secret is all a tenant gets.
pub const PULL_SECRET_TYPES: [&str; 2] = ["kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"];

pub struct Caches {
    index: ArcSwap<Index>,
    stores: Stores,
    catalog_namespaces: CatalogNamespaces,
    /// Catalog namespace → its pull secrets; a fixture's [`Feed`] adds namespaces as it goes.
    sources: Mutex<HashMap<String, SourceWatch>>,
    changed: Arc<Notify>,
    /// Bumped whenever the index or a source secret changes: decisions remembered under an older
    /// generation are stale.
    generation: Arc<AtomicU64>,
    /// Namespaces whose remembered decisions went stale one by one (a copy there changed behind
    /// our back): only their decisions are dropped, not every namespace's.
    stale: Mutex<VecDeque<(u64, String)>>,
    /// The number of the latest entry of `stale`.
    stale_seq: AtomicU64,
}

/// Namespaces invalidated one by one that are remembered; more at once drop every decision.
const STALE_NAMESPACES: usize = 1024;

/// The pull secrets of one catalog namespace: one watch per pull-secret type (a field selector on
/// `type` keeps every other Secret out of memory). A store's own readiness wakes a single waiter,
/// and start-up and the reconciler may both wait: each `listed` is a readiness all can wait for.
#[derive(Clone)]
struct SourceWatch {
    by_type: Vec<(Store<Secret>, watch::Receiver<bool>)>,
}

impl SourceWatch {
    async fn wait_listed(&self) {
        for (_, listed) in &self.by_type {
            let _ = listed.clone().wait_for(|listed| *listed).await;
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        let key = ObjectRef::new(name).within(namespace);
        self.by_type.iter().find_map(|(store, _)| store.get(&key))
    }
}

/// An `on_change` for [`reflect`] that wakes whoever waits on `changed`.
pub(crate) fn wake<K>(changed: &Arc<Notify>) -> impl Fn(&watcher::Event<K>) + Send + 'static {
    let changed = changed.clone();
    move |_| changed.notify_one()
}

/// Runs a reflector into `writer` (managedFields dropped), calling `on_change` with every event.
pub(crate) fn reflect<K, S>(
    stream: S,
    writer: reflector::store::Writer<K>,
    what: &'static str,
    on_change: impl Fn(&watcher::Event<K>) + Send + 'static,
) -> impl Future<Output = ()> + Send
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    stream.default_backoff().modify(|o: &mut K| o.managed_fields_mut().clear()).reflect(writer).for_each(move |event| {
        match event {
            Ok(event) => on_change(&event),
            Err(e) => warn!(watch = what, error = %e, "watch failed; retrying"),
        }
        futures::future::ready(())
    })
}

impl Caches {
    /// Starts every watch; source secrets are watched in the catalog namespaces only.
    /// [`Caches::wait_synced`] resolves once they have all listed.
    pub fn start(client: kube::Client, catalog_namespaces: CatalogNamespaces) -> Arc<Caches> {
        let (catalogs, catalogs_w) = reflector::store();
        let (subscriptions, subscriptions_w) = reflector::store();
        let (csvs, csvs_w) = reflector::store();
        let (operator_groups, operator_groups_w) = reflector::store();
        let (namespaces, namespaces_w) = reflector::store();
        let (links, links_w) = reflector::store();
        let caches = Arc::new(Caches::new(
            Stores { catalogs, subscriptions, csvs, operator_groups, namespaces, links },
            catalog_namespaces,
        ));
        for namespace in caches.catalog_namespaces.all() {
            let source = caches.watch_sources(&client, namespace);
            caches.sources.lock().expect("sources").insert(namespace.to_string(), source);
        }
        let cfg = watcher::Config::default;
        let catalogs = watcher(Api::<CatalogSource>::all(client.clone()), cfg());
        tokio::spawn(reflect(catalogs, catalogs_w, "catalogsources", wake(&caches.changed)));
        let subscriptions = watcher(Api::<Subscription>::all(client.clone()), cfg());
        tokio::spawn(reflect(subscriptions, subscriptions_w, "subscriptions", wake(&caches.changed)));
        // OLM copies an all-namespaces operator's CSV into every namespace (OpenShift's default):
        // tens of thousands of objects that are never anchors. The API server leaves them out.
        let csvs = watcher(Api::<ClusterServiceVersion>::all(client.clone()), cfg().labels(NOT_COPIED));
        tokio::spawn(reflect(csvs, csvs_w, "clusterserviceversions", wake(&caches.changed)));
        let operator_groups = watcher(Api::<OperatorGroup>::all(client.clone()), cfg());
        tokio::spawn(reflect(operator_groups, operator_groups_w, "operatorgroups", wake(&caches.changed)));
        let namespaces = watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), cfg());
        tokio::spawn(reflect(namespaces, namespaces_w, "namespaces", wake(&caches.changed)));
        let links = watcher(Api::<PullSecretLink>::all(client), cfg());
        tokio::spawn(reflect(links, links_w, "links of CSVs to catalogs", wake(&caches.changed)));
        tokio::spawn(caches.clone().rebuild_on_change());
        caches
    }

    fn new(stores: Stores, catalog_namespaces: CatalogNamespaces) -> Caches {
        Caches {
            index: ArcSwap::from_pointee(Index::default()),
            stores,
            catalog_namespaces,
            sources: Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
            generation: Arc::new(AtomicU64::new(0)),
            stale: Mutex::new(VecDeque::new()),
            stale_seq: AtomicU64::new(0),
        }
    }

    /// Caches holding `fixture`'s objects, synced, with no watch and no API server; the
    /// [`Feed`] changes them afterwards as watch events would.
    pub fn from_fixture(fixture: Fixture) -> Feed {
        let (catalogs, catalogs_w) = reflector::store();
        let (subscriptions, subscriptions_w) = reflector::store();
        let (csvs, csvs_w) = reflector::store();
        let (operator_groups, operator_groups_w) = reflector::store();
        let (namespaces, namespaces_w) = reflector::store();
        let (links, links_w) = reflector::store();
        let stores = Stores { catalogs, subscriptions, csvs, operator_groups, namespaces, links };
        let caches = Arc::new(Caches::new(stores, fixture.catalog_namespaces));
        let mut feed = Feed {
            caches,
            catalogs: catalogs_w,
            subscriptions: subscriptions_w,
            csvs: csvs_w,
            operator_groups: operator_groups_w,
            namespaces: namespaces_w,
            links: links_w,
            secrets: HashMap::new(),
        };
        fn listed<K: Resource<DynamicType = ()> + Clone>(writer: &mut Writer<K>, objects: Vec<K>) {
            writer.apply_watcher_event(&watcher::Event::Init);
            for object in objects {
                writer.apply_watcher_event(&watcher::Event::InitApply(object));
            }
            writer.apply_watcher_event(&watcher::Event::InitDone);
        }
        listed(&mut feed.catalogs, fixture.catalogs);
        listed(&mut feed.subscriptions, fixture.subscriptions);
        listed(&mut feed.csvs, fixture.csvs);
        listed(&mut feed.operator_groups, fixture.operator_groups);
        listed(&mut feed.namespaces, fixture.namespaces);
        listed(&mut feed.links, fixture.links);
        for secret in fixture.secrets {
            feed.apply(secret);
        }
        feed.caches.rebuild();
        feed
    }

    /// Resolves when every watch has listed once and the first index is built.
    pub async fn wait_synced(&self) {
        let _ = self.stores.catalogs.wait_until_ready().await;
        let _ = self.stores.subscriptions.wait_until_ready().await;
        let _ = self.stores.csvs.wait_until_ready().await;
        let _ = self.stores.operator_groups.wait_until_ready().await;
        let _ = self.stores.namespaces.wait_until_ready().await;
        let _ = self.stores.links.wait_until_ready().await;
        self.rebuild();
        let sources: Vec<SourceWatch> = self.sources.lock().expect("sources").values().cloned().collect();
        for source in sources {
            source.wait_listed().await;
        }
        info!(
            catalogs = self.stores.catalogs.len(),
            csvs = self.stores.csvs.len(),
            namespaces = self.stores.namespaces.len(),
            "caches synced"
        );
    }

    /// Changes whenever anything a decision depends on may have changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Marks every remembered decision stale (something they depend on changed outside the
    /// watched OLM objects, such as a copy deleted behind our back).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Marks the remembered decisions of one namespace stale (a copy there was deleted or
    /// changed behind our back).
    pub fn invalidate_namespace(&self, namespace: &str) {
        let mut stale = self.stale.lock().expect("stale namespaces");
        let seq = self.stale_seq.load(Ordering::SeqCst) + 1;
        if stale.len() == STALE_NAMESPACES {
            stale.pop_front();
        }
        stale.push_back((seq, namespace.to_string()));
        self.stale_seq.store(seq, Ordering::SeqCst);
    }

    /// The number of the latest namespace invalidation.
    pub fn stale_seq(&self) -> u64 {
        self.stale_seq.load(Ordering::SeqCst)
    }

    /// The namespaces invalidated after invalidation number `seq`; `None` when some of them
    /// are no longer recorded (then every decision is stale).
    pub fn stale_since(&self, seq: u64) -> Option<Vec<String>> {
        let stale = self.stale.lock().expect("stale namespaces");
        let latest = self.stale_seq.load(Ordering::SeqCst);
        let oldest = stale.front().map_or(latest + 1, |(first, _)| *first);
        (seq + 1 >= oldest || seq == latest)
            .then(|| stale.iter().filter(|(n, _)| *n > seq).map(|(_, ns)| ns.clone()).collect())
    }

    pub fn index(&self) -> arc_swap::Guard<Arc<Index>> {
        self.index.load()
    }

    /// The current index, to hold across awaits.
    pub fn index_snapshot(&self) -> Arc<Index> {
        self.index.load_full()
    }

    pub fn namespace(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.stores.namespaces.get(&ObjectRef::new(name))
    }

    /// The links of CSVs to catalogs as remembered (the reconciler keeps them).
    pub fn links(&self) -> Vec<Arc<PullSecretLink>> {
        self.stores.links.state()
    }

    /// A source secret, if `namespace` is a catalog namespace and it holds a pull secret `name`.
    pub fn source_secret(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.sources.lock().expect("sources").get(namespace)?.get(namespace, name)
    }

    fn watch_sources(&self, client: &kube::Client, namespace: &str) -> SourceWatch {
        let api = Api::<Secret>::namespaced(client.clone(), namespace);
        let by_type = PULL_SECRET_TYPES.map(|type_| {
            let (store, writer) = reflector::store();
            let (listed_tx, listed) = watch::channel(false);
            // A source secret changed: decisions (which copies hold which content) are stale.
            let generation = self.generation.clone();
            let on_change = move |event: &watcher::Event<Secret>| {
                if matches!(event, watcher::Event::InitDone) {
                    listed_tx.send_replace(true);
                }
                generation.fetch_add(1, Ordering::SeqCst);
            };
            let config = watcher::Config::default().fields(&format!("type={type_}"));
            tokio::spawn(reflect(watcher(api.clone(), config), writer, "catalog-namespace pull secrets", on_change));
            (store, listed)
        });
        SourceWatch { by_type: by_type.into() }
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
            &self.catalog_namespaces,
            &self.stores.catalogs.state(),
            &self.stores.subscriptions.state(),
            &self.stores.csvs.state(),
            &self.stores.operator_groups.state(),
            &self.stores.links.state(),
        );
        let ignored = index.ignored();
        let invalid = ignored.iter().filter(|c| matches!(c.why, Ignored::InvalidSelector { .. })).count();
        crate::telemetry::metrics::set_ignored_catalogs(invalid, ignored.len() - invalid);
        self.index.store(Arc::new(index));
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

struct Stores {
    catalogs: Store<CatalogSource>,
    subscriptions: Store<Subscription>,
    csvs: Store<ClusterServiceVersion>,
    operator_groups: Store<OperatorGroup>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    links: Store<PullSecretLink>,
}

/// The objects a fixture starts with.
#[derive(Default)]
pub struct Fixture {
    pub catalogs: Vec<CatalogSource>,
    pub subscriptions: Vec<Subscription>,
    pub csvs: Vec<ClusterServiceVersion>,
    pub operator_groups: Vec<OperatorGroup>,
    pub namespaces: Vec<PartialObjectMeta<Namespace>>,
    pub links: Vec<PullSecretLink>,
    /// Source secrets, in their catalog namespaces.
    pub secrets: Vec<Secret>,
    pub catalog_namespaces: CatalogNamespaces,
}

/// Changes fixture caches the way watch events change watched ones: the index is rebuilt and the
/// generation bumped at once.
pub struct Feed {
    caches: Arc<Caches>,
    catalogs: Writer<CatalogSource>,
    subscriptions: Writer<Subscription>,
    csvs: Writer<ClusterServiceVersion>,
    operator_groups: Writer<OperatorGroup>,
    namespaces: Writer<PartialObjectMeta<Namespace>>,
    links: Writer<PullSecretLink>,
    secrets: HashMap<String, Writer<Secret>>,
}

impl Feed {
    pub fn caches(&self) -> &Arc<Caches> {
        &self.caches
    }

    /// The object was created or changed. A Secret that is not a pull secret is dropped, as the
    /// watches' field selector drops it.
    pub fn apply<K: Fed>(&mut self, object: K) {
        if !K::watched(&object) {
            return;
        }
        K::writer(self, &object).apply_watcher_event(&watcher::Event::Apply(object));
        self.caches.rebuild();
    }

    /// The object was deleted.
    pub fn delete<K: Fed>(&mut self, object: K) {
        K::writer(self, &object).apply_watcher_event(&watcher::Event::Delete(object));
        self.caches.rebuild();
    }
}

/// The kinds a [`Feed`] can change.
pub trait Fed: Resource<DynamicType = ()> + Clone + Sized + 'static {
    fn writer<'f>(feed: &'f mut Feed, object: &Self) -> &'f mut Writer<Self>;
    fn watched(&self) -> bool {
        true
    }
}

macro_rules! fed {
    ($ty:ty, $field:ident) => {
        impl Fed for $ty {
            fn writer<'f>(feed: &'f mut Feed, _: &Self) -> &'f mut Writer<Self> {
                &mut feed.$field
            }
        }
    };
}
fed!(CatalogSource, catalogs);
fed!(Subscription, subscriptions);
fed!(ClusterServiceVersion, csvs);
fed!(OperatorGroup, operator_groups);
fed!(PartialObjectMeta<Namespace>, namespaces);
fed!(PullSecretLink, links);

impl Fed for Secret {
    fn watched(&self) -> bool {
        PULL_SECRET_TYPES.contains(&self.type_.as_deref().unwrap_or(""))
    }

    fn writer<'f>(feed: &'f mut Feed, secret: &Self) -> &'f mut Writer<Self> {
        let namespace = secret.namespace().unwrap_or_default();
        let caches = &feed.caches;
        feed.secrets.entry(namespace.clone()).or_insert_with(|| {
            let (store, writer) = reflector::store();
            let source = SourceWatch { by_type: vec![(store, watch::channel(true).1)] };
            caches.sources.lock().expect("sources").insert(namespace, source);
            writer
        })
    }
}
