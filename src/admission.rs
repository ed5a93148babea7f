//! One admission decision: which objects are considered, the chain, the copies, the patch, the
//! failure behaviour, and the one log line that explains it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use tracing::{debug, info, warn};

use crate::INJECT_ANNOTATION;
use crate::caches::Caches;
use crate::chain::{self, Subject};
use crate::copies::{self, Copies};
use crate::error::{Error, ReviewError};
use crate::index::Index;
use crate::owners::{OwnerRef, Owners};
use crate::patch::{self, Target};
use crate::review::{self, Request, Verdict};

/// What to do with a Pod whose secrets could not be ensured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnCopyFailure {
    /// Deny with a retryable 503: the Pod's controller tries again.
    Deny,
    /// Admit the Pod without the secrets.
    Allow,
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// The webhook's own namespace: never mutated.
    pub own_namespace: String,
    pub excluded_namespaces: Vec<String>,
    pub on_copy_failure: OnCopyFailure,
    /// Owner lookups and copies must finish within this; below the registered timeoutSeconds.
    pub deadline: Duration,
}

impl Settings {
    /// Why a namespace is left alone whatever its operators: system, our own, excluded by flag,
    /// or annotated `pullsecret-injector.io/inject: "false"`. Shared by admission and reconciler.
    pub fn leaves_alone(&self, ns: &str, namespace: Option<&PartialObjectMeta<Namespace>>) -> Option<&'static str> {
        if ns.starts_with("kube-") {
            Some("kube-* namespace")
        } else if ns.starts_with("openshift-") && ns != "openshift-operators" {
            Some("openshift-* namespace")
        } else if ns == self.own_namespace {
            Some("the webhook's own namespace")
        } else if self.excluded_namespaces.iter().any(|e| e == ns) {
            Some("namespace excluded by --exclude-namespace")
        } else if namespace
            .and_then(|n| n.metadata.annotations.as_ref())
            .and_then(|a| a.get(INJECT_ANNOTATION))
            .is_some_and(|v| v == "false")
        {
            Some("namespace annotated pullsecret-injector.io/inject=false")
        } else {
            None
        }
    }
}

pub struct Webhook {
    settings: Settings,
    caches: Arc<Caches>,
    owners: Arc<Owners>,
    copies: Arc<Copies>,
    decisions: Mutex<HashMap<String, Remembered>>,
}

/// The outcome of one review, as logged and counted.
#[derive(Default)]
struct Decision {
    decision: &'static str,
    reason: String,
    patch: Option<Arc<patch::Addition>>,
    deny: Option<String>,
    needs: Option<Arc<Needs>>,
    /// The namespace is reached by some operator from a catalog with secrets.
    relevant: bool,
}

/// What an object needs, remembered per (namespace, kind, owners) until anything it depends on
/// changes: Pods of one ReplicaSet share an answer, so a warm admission makes no API call.
#[derive(Default, Debug)]
struct Needs {
    /// Names to have in `imagePullSecrets` (ensured copies, or originals in the catalog's namespace).
    wanted: Vec<String>,
    catalogs: Vec<String>,
    chain: Vec<String>,
    warnings: Vec<String>,
    /// Why nothing is needed, when nothing is.
    none_reason: Option<String>,
    /// The patch for a Pod without `imagePullSecrets` (the usual case), built once.
    pod_patch: std::sync::OnceLock<Option<Arc<patch::Addition>>>,
}

/// A remembered answer is trusted this long even when nothing it depends on changed, so that a
/// copy deleted behind our back is recreated.
/// (the caches' generation it was computed under, when, what the object needs)
type Remembered = (u64, Instant, Arc<Needs>);

const DECISION_TTL: Duration = Duration::from_secs(60);
const MAX_DECISIONS: usize = 50_000;

/// The object's namespace, kind, (ServiceAccount) name and owners: everything a decision reads
/// apart from the caches' generation.
fn decision_key(req: &Request<'_>, ns: &str, object: &review::Object<'_>) -> String {
    let mut key = String::with_capacity(128);
    key.push_str(ns);
    key.push('\0');
    key.push_str(&req.kind.kind);
    if req.kind.kind == "ServiceAccount" {
        key.push('\0');
        key.push_str(req.name.as_deref().or(object.metadata.name.as_deref()).unwrap_or(""));
    }
    for owner in &object.metadata.owner_references {
        for part in [&owner.api_version, &owner.kind, &owner.name, &owner.uid] {
            key.push('\0');
            key.push_str(part);
        }
    }
    key
}

impl Decision {
    fn skipped(reason: impl Into<String>) -> Self {
        Decision { decision: "skipped", reason: reason.into(), ..Default::default() }
    }
}

impl Webhook {
    /// The owner cache and the copies are shared with the reconciler.
    pub fn new(settings: Settings, caches: Arc<Caches>, owners: Arc<Owners>, copies: Arc<Copies>) -> Self {
        Webhook { settings, caches, owners, copies, decisions: Mutex::new(HashMap::new()) }
    }

    /// Answers one AdmissionReview body; an error means the body was not a review (HTTP 400).
    pub async fn review(&self, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
        let started = Instant::now();
        let req = review::parse(body)?;
        let d = self.decide(&req).await;
        let verdict = match &d.deny {
            Some(message) => Verdict::Deny { code: 503, message },
            None => {
                let patch = d.patch.as_ref().map(|a| a.patch.as_slice());
                Verdict::Allow { patch, warnings: d.needs.as_ref().map_or(&[], |n| &n.warnings) }
            }
        };
        let response = review::respond(&req.uid, &verdict);
        let elapsed = started.elapsed();
        crate::metrics::admission(&req.kind.kind, &req.operation, d.decision, elapsed.as_secs_f64());
        self.log(&req, &d, elapsed);
        Ok(response)
    }

    fn log(&self, req: &Request<'_>, d: &Decision, elapsed: Duration) {
        let needs = d.needs.as_deref();
        macro_rules! line {
            ($level:ident) => {
                $level!(
                    uid = %req.uid,
                    kind = %req.kind.kind,
                    operation = %req.operation,
                    namespace = req.namespace.as_deref().unwrap_or(""),
                    name = req.display_name(),
                    dry_run = req.dry_run.unwrap_or(false),
                    decision = d.decision,
                    reason = %d.reason,
                    catalogs = %Joined(needs.map_or(&[], |n| &n.catalogs), ","),
                    secrets = %Joined(needs.map_or(&[], |n| &n.wanted), ","),
                    chain = %Joined(needs.map_or(&[], |n| &n.chain), " | "),
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    "admission decision"
                )
            };
        }
        if d.relevant || matches!(d.decision, "patched" | "denied" | "error") {
            line!(info);
        } else {
            line!(debug);
        }
    }

    async fn decide(&self, req: &Request<'_>) -> Decision {
        let target = match (
            req.kind.group.as_ref(),
            req.kind.version.as_ref(),
            req.kind.kind.as_ref(),
            req.operation.as_ref(),
        ) {
            ("", "v1", "Pod", "CREATE") => Target::Pod,
            ("", "v1", "ServiceAccount", "CREATE" | "UPDATE") => Target::ServiceAccount,
            _ => return Decision::skipped("kind or operation not handled"),
        };
        let Some(ns) = req.namespace.as_deref().filter(|n| !n.is_empty()) else {
            return Decision::skipped("not namespaced");
        };
        let namespace = self.caches.namespace(ns);
        if let Some(reason) = self.settings.leaves_alone(ns, namespace.as_deref()) {
            return Decision::skipped(reason);
        }
        let index = self.caches.index();
        if !index.reaches(ns) {
            return Decision::skipped("no operator from a catalog with secrets reaches this namespace");
        }
        let mut d = Decision { relevant: true, ..Default::default() };
        let Some(object) = req.object.as_ref() else {
            d.decision = "skipped";
            d.reason = "review carries no object".into();
            return d;
        };

        let dry_run = req.dry_run.unwrap_or(false);
        let generation = self.caches.generation();
        let key = decision_key(req, ns, object);
        let needs = match self.remembered(&key, generation) {
            Some(needs) => needs,
            None => {
                let labels = namespace.as_ref().and_then(|n| n.metadata.labels.as_ref());
                // Only this path calls the API server, so only it runs against the deadline: a
                // warm admission arms no timer.
                let needs =
                    tokio::time::timeout(self.settings.deadline, self.needs(req, ns, object, labels, &index, dry_run));
                match needs.await.unwrap_or(Err(Error::Deadline(self.settings.deadline))) {
                    Ok(needs) => {
                        let needs = Arc::new(needs);
                        // A dry run created no copies: its answer is not one to remember.
                        if !dry_run {
                            self.remember(key, generation, needs.clone());
                        }
                        needs
                    }
                    Err(e) => return self.failed(req, e, d),
                }
            }
        };
        d.needs = Some(needs.clone());
        if let Some(reason) = &needs.none_reason {
            d.decision = "unchanged";
            d.reason = reason.clone();
            return d;
        }

        let existing = req.image_pull_secrets();
        let meta_annotations = object.metadata.annotations.as_ref();
        let build = || {
            patch::build(
                target,
                existing.as_deref(),
                &needs.wanted,
                meta_annotations.is_some_and(|a| a.present),
                meta_annotations.and_then(|a| a.injected.as_deref()),
            )
            .map(Arc::new)
        };
        let addition = match (target, &existing) {
            (Target::Pod, None) => needs.pod_patch.get_or_init(build).clone(),
            _ => build(),
        };
        match addition {
            Some(addition) => {
                d.decision = "patched";
                d.reason = format!("added {}", addition.added.join(","));
                d.patch = Some(addition);
            }
            None => {
                d.decision = "unchanged";
                d.reason = "already has every pull secret".into();
            }
        }
        d
    }

    /// What the object needs: the chain to its catalogs, and the names of ensured copies.
    async fn needs(
        &self,
        req: &Request<'_>,
        ns: &str,
        object: &review::Object<'_>,
        namespace_labels: Option<&BTreeMap<String, String>>,
        index: &Index,
        dry_run: bool,
    ) -> Result<Needs, Error> {
        let empty = BTreeMap::new();
        let subject = Subject {
            kind: &req.kind.kind,
            namespace: ns,
            name: req.name.as_deref().or(object.metadata.name.as_deref()).unwrap_or(""),
            owner_references: object
                .metadata
                .owner_references
                .iter()
                .map(|r| OwnerRef {
                    api_version: r.api_version.to_string(),
                    kind: r.kind.to_string(),
                    name: r.name.to_string(),
                    uid: r.uid.to_string(),
                })
                .collect(),
            namespace_labels: namespace_labels.unwrap_or(&empty),
        };
        let resolution = chain::resolve(index, &self.owners, &subject).await?;
        let mut needs = Needs {
            chain: resolution.found.iter().map(|f| f.chain.clone()).collect(),
            catalogs: resolution.found.iter().map(|f| format!("{}/{}", f.catalog_namespace, f.catalog_name)).collect(),
            ..Default::default()
        };
        if resolution.found.is_empty() {
            needs.none_reason = Some(if resolution.dropped.is_empty() {
                "no owner leads to an operator".into()
            } else {
                resolution.dropped.join("; ")
            });
            return Ok(needs);
        }
        for (source_ns, source_name) in resolution.secrets(index) {
            let source = self.caches.source_secret(source_ns, source_name).await;
            if let Some(why) = copies::unusable(source.as_deref()) {
                let warning = format!("pull secret {source_ns}/{source_name} of the catalog {why}; not injected");
                warn!(namespace = ns, source = %format!("{source_ns}/{source_name}"), "{warning}");
                needs.warnings.push(warning);
                continue;
            }
            // A tenant namespace that is the catalog's own gets the original secret.
            if source_ns == ns {
                needs.wanted.push(source_name.to_string());
                continue;
            }
            let copy = self.copies.ensure(ns, source.as_deref().expect("usable"), dry_run).await?;
            needs.wanted.push(copy.name().to_string());
        }
        Ok(needs)
    }

    fn remembered(&self, key: &str, generation: u64) -> Option<Arc<Needs>> {
        let decisions = self.decisions.lock().expect("decision cache");
        let (at_generation, at, needs) = decisions.get(key)?;
        (*at_generation == generation && at.elapsed() < DECISION_TTL).then(|| needs.clone())
    }

    fn remember(&self, key: String, generation: u64, needs: Arc<Needs>) {
        let mut decisions = self.decisions.lock().expect("decision cache");
        if decisions.len() >= MAX_DECISIONS {
            decisions.retain(|_, (g, at, _)| *g == generation && at.elapsed() < DECISION_TTL);
            if decisions.len() >= MAX_DECISIONS {
                decisions.clear();
            }
        }
        decisions.insert(key, (generation, Instant::now(), needs));
    }

    /// Pods that need secrets we could not ensure are denied (retryable) unless configured
    /// otherwise; ServiceAccounts are admitted as they are.
    fn failed(&self, req: &Request<'_>, error: Error, mut d: Decision) -> Decision {
        let message =
            format!("olm-pullsecret-injector could not ensure the pull secrets this Pod needs ({error}); retry");
        d.reason = error.to_string();
        if req.kind.kind == "Pod" && self.settings.on_copy_failure == OnCopyFailure::Deny {
            d.decision = "denied";
            d.deny = Some(message);
        } else {
            d.decision = "error";
            d.patch = None;
        }
        d
    }
}

/// Lists written straight into the log line, without building a joined String first.
struct Joined<'a>(&'a [String], &'static str);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(self.1)?;
            }
            f.write_str(item)?;
        }
        Ok(())
    }
}
