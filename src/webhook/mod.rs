//! The admission webhook: HTTP in ([`http`]), the AdmissionReview wire format ([`review`]), one
//! decision per review (the resolver's answer, remembered in the [`memo`]), the patch, the
//! failure behaviour, and the one log line that explains it.

pub mod http;
pub(crate) mod memo;
pub mod observe;
pub mod review;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::context::Context;
use crate::error::{Error, ReviewError};
use crate::inject::ledger::Observed;
use crate::inject::patch::{self, Target};
use crate::resolve::owners::OwnerRef;
use crate::resolve::{Kind, Provision, Subject};
use crate::telemetry::metrics::{self, Outcome};
use memo::{Answer, Memo, Patched};
use review::{Request, Verdict};

/// What to do with a Pod whose secrets could not be ensured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCopyFailure {
    /// Deny with a retryable 503: the Pod's controller tries again.
    Deny,
    /// Admit the Pod without the secrets.
    Allow,
}

/// The webhook configuration's `failurePolicy`, which the process follows too: a review it cannot
/// decide within its deadline is answered as the API server would answer for a webhook that
/// does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Admit without a patch (the reconciler reports the Pod).
    Ignore,
    /// Deny with a retryable 503.
    Fail,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Ignore => "Ignore",
            FailurePolicy::Fail => "Fail",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// A review not decided within the deadline is answered as this says.
    pub failure_policy: FailurePolicy,
    pub on_copy_failure: OnCopyFailure,
    /// Owner lookups and copies must finish within this; below the registered timeoutSeconds.
    pub deadline: Duration,
    /// Whether the peers that send reviews are verified (a client CA is configured). Without,
    /// every review is counted and logged as from an unverified peer.
    pub peers_verified: bool,
}

pub struct Webhook {
    ctx: Arc<Context>,
    settings: Settings,
    memo: Memo,
    /// What Secret reviews reported of our copies, written to the ledger once per interval.
    marks: Arc<observe::Marks>,
    /// Followers of decisions; a record is built only while someone follows.
    decisions: tokio::sync::broadcast::Sender<Arc<DecisionRecord>>,
    /// Whether anyone ever asked to follow decisions (`dev` does; `serve` never).
    followed: std::sync::atomic::AtomicBool,
}

/// A decision as logged, for whoever asked to follow them (`dev` prints the one for its Pod).
#[derive(Debug, Clone)]
pub struct DecisionRecord {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub outcome: Outcome,
    pub chain: Vec<String>,
    pub secrets: Vec<String>,
}

/// The outcome of one review, as logged and counted.
struct Decision {
    outcome: Outcome,
    reason: String,
    patch: Option<Arc<Patched>>,
    deny: Option<String>,
    answer: Option<Arc<Answer>>,
    /// Warnings for a review answered without an [`Answer`] (one not decided in time).
    warnings: Vec<String>,
    /// The namespace is reached by some operator from a catalog with secrets.
    relevant: bool,
}

impl Decision {
    fn new(outcome: Outcome, reason: impl Into<String>, relevant: bool) -> Self {
        Decision {
            outcome,
            reason: reason.into(),
            patch: None,
            deny: None,
            answer: None,
            warnings: Vec::new(),
            relevant,
        }
    }
}

impl Webhook {
    pub fn new(ctx: Arc<Context>, settings: Settings) -> Self {
        Webhook {
            ctx,
            settings,
            memo: Memo::new(),
            marks: Arc::default(),
            decisions: tokio::sync::broadcast::channel(256).0,
            followed: Default::default(),
        }
    }

    /// Every decision from now on, as logged.
    pub fn follow_decisions(&self) -> tokio::sync::broadcast::Receiver<Arc<DecisionRecord>> {
        self.followed.store(true, std::sync::atomic::Ordering::Relaxed);
        self.decisions.subscribe()
    }

    /// Answers one AdmissionReview body; an error means the body was not a review (HTTP 400).
    pub async fn review(&self, body: &[u8]) -> Result<Vec<u8>, ReviewError> {
        let started = Instant::now();
        let req = review::parse(body)?;
        let d = match req.kind.kind.as_ref() {
            // Boxed, as the cold path below: the review's future stays small, and it is moved
            // on every review (12.7 KB with both inline, under 1 KB without).
            "Secret" => Box::pin(self.observe(&req, body)).await,
            _ => self.decide(&req).await,
        };
        let verdict = match &d.deny {
            Some(message) => Verdict::Deny { code: 503, message },
            None => Verdict::Allow {
                patch: d.patch.as_ref().map(|p| p.json.as_slice()),
                warnings: d.answer.as_ref().map_or(&d.warnings, |a| &a.warnings),
            },
        };
        let response = review::respond(&req.uid, &verdict);
        let elapsed = started.elapsed();
        metrics::admission(&req.kind.kind, &req.operation, d.outcome, elapsed.as_secs_f64());
        if !self.settings.peers_verified {
            metrics::unverified_review();
        }
        self.log(&req, &d, elapsed);
        // A flag, not `receiver_count()`, which takes the channel's lock on every review.
        if self.followed.load(std::sync::atomic::Ordering::Relaxed) && self.decisions.receiver_count() > 0 {
            let answer = d.answer.as_deref();
            let _ = self.decisions.send(Arc::new(DecisionRecord {
                kind: req.kind.kind.to_string(),
                namespace: req.namespace.as_deref().unwrap_or("").to_string(),
                name: req.display_name().to_string(),
                outcome: d.outcome,
                chain: answer.map_or_else(Vec::new, |a| a.chain.clone()),
                secrets: answer.map_or_else(Vec::new, |a| a.wanted.clone()),
            }));
        }
        Ok(response)
    }

    fn log(&self, req: &Request<'_>, d: &Decision, elapsed: Duration) {
        let answer = d.answer.as_deref();
        macro_rules! line {
            ($level:ident) => {
                $level!(
                    uid = %req.uid,
                    kind = %req.kind.kind,
                    operation = %req.operation,
                    namespace = req.namespace.as_deref().unwrap_or(""),
                    name = req.display_name(),
                    dry_run = req.dry_run.unwrap_or(false),
                    decision = d.outcome.as_str(),
                    reason = %d.reason,
                    catalogs = %Joined(answer.map_or(&[], |a| &a.catalogs), ","),
                    secrets = %Joined(answer.map_or(&[], |a| &a.wanted), ","),
                    chain = %Joined(answer.map_or(&[], |a| &a.chain), " | "),
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    "admission decision"
                )
            };
        }
        if d.relevant || matches!(d.outcome, Outcome::Patched | Outcome::Denied | Outcome::Error) {
            line!(info);
        } else {
            line!(debug);
        }
    }

    async fn decide(&self, req: &Request<'_>) -> Decision {
        let kind = match (
            req.kind.group.as_ref(),
            req.kind.version.as_ref(),
            req.kind.kind.as_ref(),
            req.operation.as_ref(),
        ) {
            ("", "v1", "Pod", "CREATE") => Kind::Pod,
            ("", "v1", "ServiceAccount", "CREATE" | "UPDATE") => Kind::ServiceAccount,
            _ => return Decision::new(Outcome::Skipped, "kind or operation not handled", false),
        };
        let Some(ns) = req.namespace.as_deref().filter(|n| !n.is_empty()) else {
            return Decision::new(Outcome::Skipped, "not namespaced", false);
        };
        if let Some(skip) = self.ctx.resolver.skip(ns) {
            return Decision::new(Outcome::Skipped, skip.reason(), false);
        }
        let Some(object) = req.object.as_ref() else {
            return Decision::new(Outcome::Skipped, "review carries no object", true);
        };

        let dry_run = req.dry_run.unwrap_or(false);
        let caches = self.ctx.caches();
        let at = self.memo.begin(caches);
        let key = self.memo.key(req, ns, object, dry_run);
        // A real answer serves a dry run too (its copies exist).
        let real = dry_run.then(|| self.memo.key(req, ns, object, false)).and_then(|k| self.memo.get(k, at));
        let answer = match real.or_else(|| self.memo.get(key, at)) {
            Some(answer) => answer,
            None => {
                // Only this path calls the API server, so only it runs against the deadline: a
                // warm admission arms no timer.
                let answer = self.answer(req, kind, ns, object, dry_run);
                let answer = tokio::time::timeout(self.settings.deadline, Box::pin(answer));
                match answer.await.unwrap_or(Err(Error::Deadline(self.settings.deadline))) {
                    Ok(answer) => {
                        let answer = Arc::new(answer);
                        // A dry run's answer is kept under its own key: repeated dry runs cost
                        // nothing more, and a real review still makes its copies.
                        self.memo.insert(key, ns, at, caches, answer.clone());
                        answer
                    }
                    Err(e) => return self.failed(kind, e),
                }
            }
        };
        let mut d = Decision::new(Outcome::Unchanged, "", true);
        d.answer = Some(answer.clone());
        if let Some(reason) = &answer.none_reason {
            d.reason = reason.clone();
            return d;
        }

        let existing = req.image_pull_secrets();
        let annotations = object.metadata.annotations.as_ref();
        let target = match kind {
            Kind::Pod => Target::Pod,
            Kind::ServiceAccount => Target::ServiceAccount,
        };
        let build = || {
            patch::build(
                target,
                existing.as_deref(),
                &answer.wanted,
                annotations.is_some_and(|a| a.present),
                annotations.and_then(|a| a.injected.as_deref()),
            )
            .map(|addition| {
                Arc::new(Patched { json: addition.to_json(), reason: format!("added {}", addition.added.join(",")) })
            })
        };
        let patched = match (kind, &existing) {
            (Kind::Pod, None) => answer.pod_patch.get_or_init(build).clone(),
            _ => build(),
        };
        match patched {
            Some(patched) => {
                d.outcome = Outcome::Patched;
                d.reason.clone_from(&patched.reason);
                d.patch = Some(patched);
            }
            None => d.reason = "already has every pull secret".into(),
        }
        d
    }

    /// The resolver's answer for the object, with its copies ensured.
    async fn answer(
        &self,
        req: &Request<'_>,
        kind: Kind,
        ns: &str,
        object: &review::Object<'_>,
        dry_run: bool,
    ) -> Result<Answer, Error> {
        let subject = Subject {
            kind,
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
        };
        let resolution = self.ctx.resolver.resolve(&subject).await?;
        let mut answer =
            Answer { chain: resolution.chain_texts(), catalogs: resolution.catalogs(), ..Default::default() };
        if resolution.found().is_empty() {
            let dropped = &resolution.chains.dropped;
            // The reasons carry tenant strings: remembered, they are bounded.
            answer.none_reason = Some(if dropped.is_empty() {
                "no owner leads to an operator".into()
            } else {
                crate::resolve::chain::clip(&dropped.join("; ")).to_string()
            });
            return Ok(answer);
        }
        for need in &resolution.needs {
            if let Provision::Unusable(why) = need.provision {
                let source = need.source_ref();
                let warning = format!("pull secret {source} of the catalog {why}; not injected");
                warn!(namespace = ns, %source, "{warning}");
                answer.warnings.push(warning);
            }
        }
        answer.wanted = self.ctx.copies.ensure_all(ns, &resolution.needs, dry_run).await?;
        Ok(answer)
    }

    /// A Secret review (UPDATE or DELETE of a Secret labelled as our copy): always allowed; what
    /// happened to our copy is marked in the ledger (not for dry runs), at most once per
    /// [`observe::MARK_INTERVAL`] per copy.
    async fn observe(&self, req: &Request<'_>, body: &[u8]) -> Decision {
        let (Some(ns), Some(name)) = (req.namespace.as_deref(), req.name.as_deref()) else {
            return Decision::new(Outcome::Skipped, "not a namespaced Secret", false);
        };
        let objects = match observe::objects(body) {
            Ok(objects) => objects,
            Err(e) => return Decision::new(Outcome::Skipped, format!("secret review not read: {e}"), false),
        };
        let Some(old) = objects.old_object.as_ref() else {
            return Decision::new(Outcome::Skipped, "no previous object", false);
        };
        let source = observe::source_of(old)
            .and_then(|s| s.split_once('/'))
            .and_then(|(source_ns, source_name)| self.ctx.caches().source_secret(source_ns, source_name));
        let Some(observed) = observe::observation(old, objects.object.as_ref(), source.as_deref()) else {
            return Decision::new(Outcome::Unchanged, "not a change to one of our copies", false);
        };
        let reason = format!("copy {}", observed.as_str());
        if req.dry_run.unwrap_or(false) {
            return Decision::new(Outcome::Unchanged, reason, true);
        }
        match self.marks.note(ns, name, observed) {
            observe::Pass::Now => match mark(&self.ctx, ns, name, observed, self.settings.deadline).await {
                Ok(()) => Decision::new(Outcome::Unchanged, reason, true),
                Err(e) => Decision::new(Outcome::Error, format!("{reason}; not recorded: {e}"), true),
            },
            observe::Pass::After(delay) => {
                let (ctx, marks, deadline) = (self.ctx.clone(), self.marks.clone(), self.settings.deadline);
                let (ns, name) = (ns.to_string(), name.to_string());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Some(observed) = marks.take_gathered(&ns, &name) else { return };
                    if let Err(e) = mark(&ctx, &ns, &name, observed, deadline).await {
                        warn!(namespace = %ns, copy = %name, error = %e, "copy {} not recorded", observed.as_str());
                    }
                });
                Decision::new(
                    Outcome::Unchanged,
                    format!("{reason}; recorded in {delay:.0?} with any later report"),
                    true,
                )
            }
            observe::Pass::Gathered => {
                Decision::new(Outcome::Unchanged, format!("{reason}; recorded with the reports before it"), true)
            }
        }
    }

    /// A review not decided within the deadline is answered as the failure policy says (a Pod
    /// denied, retryably, only under `Fail`); Pods that need secrets we could not ensure are
    /// denied (retryable) unless configured otherwise; ServiceAccounts are admitted as they are.
    fn failed(&self, kind: Kind, error: Error) -> Decision {
        if let Error::Deadline(deadline) = error {
            let policy = self.settings.failure_policy;
            metrics::undecided(policy.as_str());
            if kind == Kind::Pod && policy == FailurePolicy::Fail {
                let mut d = Decision::new(Outcome::Denied, format!("{error}; failurePolicy Fail"), true);
                d.deny = Some(format!(
                    "olm-pullsecret-injector could not decide within {deadline:?} which pull secrets this Pod needs; retry"
                ));
                return d;
            }
            let mut d = Decision::new(
                Outcome::Error,
                format!("{error}; admitted without a patch (failurePolicy {})", policy.as_str()),
                true,
            );
            // A ServiceAccount is admitted under either policy: the reconciler backfills it.
            let after = match kind {
                Kind::Pod => "the reconciler reports the Pod",
                Kind::ServiceAccount => "the reconciler adds them to the ServiceAccount",
            };
            d.warnings.push(format!(
                "olm-pullsecret-injector could not decide within {deadline:?}: admitted without the pull secrets it may need \
                 (failurePolicy {}); {after}",
                policy.as_str()
            ));
            return d;
        }
        if kind == Kind::Pod && self.settings.on_copy_failure == OnCopyFailure::Deny {
            let mut d = Decision::new(Outcome::Denied, error.to_string(), true);
            d.deny = Some(format!(
                "olm-pullsecret-injector could not ensure the pull secrets this Pod needs: {}; retry",
                error.public_message()
            ));
            d
        } else {
            Decision::new(Outcome::Error, error.to_string(), true)
        }
    }
}

/// Marks the copy's ledger entry with what was observed; this replica forgets the copy and the
/// decisions of its namespace at once (the others when the mark reaches their ledger watch).
async fn mark(ctx: &Context, ns: &str, name: &str, observed: Observed, deadline: Duration) -> Result<(), Error> {
    let marked = tokio::time::timeout(deadline, ctx.copies.ledger().mark(ns, name, observed));
    marked.await.unwrap_or(Err(Error::Deadline(deadline)))?;
    ctx.copies.forget(ns, name, None);
    ctx.caches().invalidate_namespace(ns);
    Ok(())
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
