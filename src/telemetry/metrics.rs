//! Prometheus metrics (prefix `pullsecret_injector_`), served as text on the admin port.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub kind: &'static str,
    pub operation: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// `<plural>.<group>` of a kind the webhook may not read.
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub failure_policy: &'static str,
}

/// How a review was answered: the `decision` of the log line and of the admissions metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Patched,
    Unchanged,
    Skipped,
    Denied,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 5] = [Outcome::Patched, Outcome::Unchanged, Outcome::Skipped, Outcome::Denied, Outcome::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// What the reconciler did: the `action` label of `reconcile_actions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    CopySynced,
    CopyReplaced,
    CopyRemoved,
    /// A copy deleted behind our back, made again.
    CopyRecreated,
    /// A copy whose data someone changed, written back from its source.
    CopyRestored,
    /// A copy the tenant took over (our label or source annotation removed): forgotten.
    CopyReleased,
    ServiceAccountBackfilled,
    ServiceAccountEntriesRemoved,
    PodMissingPullSecret,
    PodHealed,
}

impl Action {
    const ALL: [Action; 10] = [
        Action::CopySynced,
        Action::CopyReplaced,
        Action::CopyRemoved,
        Action::CopyRecreated,
        Action::CopyRestored,
        Action::CopyReleased,
        Action::ServiceAccountBackfilled,
        Action::ServiceAccountEntriesRemoved,
        Action::PodMissingPullSecret,
        Action::PodHealed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::CopySynced => "copy_synced",
            Action::CopyReplaced => "copy_replaced",
            Action::CopyRemoved => "copy_removed",
            Action::CopyRecreated => "copy_recreated",
            Action::CopyRestored => "copy_restored",
            Action::CopyReleased => "copy_released",
            Action::ServiceAccountBackfilled => "service_account_backfilled",
            Action::ServiceAccountEntriesRemoved => "service_account_entries_removed",
            Action::PodMissingPullSecret => "pod_missing_pull_secret",
            Action::PodHealed => "pod_healed",
        }
    }
}

/// Label values of `admissions`: kinds and operations the webhook does not handle are counted as
/// `other`, so a caller cannot grow the label set.
const KINDS: [&str; 4] = ["Pod", "ServiceAccount", "Secret", "other"];
const OPERATIONS: [&str; 4] = ["CREATE", "UPDATE", "DELETE", "other"];

struct Metrics {
    registry: Registry,
    /// Every (kind, operation, decision) counter, resolved once: counting is one atomic add.
    admissions: Vec<Counter>,
    duration: Histogram,
    copies_created: Counter,
    copies_updated: Counter,
    copies_conflicts: Counter,
    copies_deleted: Counter,
    reconcile_actions: Family<ActionLabels, Counter>,
    reconcile_errors: Counter,
    leader: Gauge,
    cache_hits: Counter,
    cache_misses: Counter,
    owner_reads_from_etcd: Counter,
    owner_lookups_forbidden: Family<ResourceLabels, Counter>,
    ignored_catalogs: Family<ReasonLabels, Gauge>,
    connections_refused: Counter,
    reviews_refused: Counter,
    unverified_reviews: Counter,
    undecided: Family<PolicyLabels, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("pullsecret_injector");
    let family = Family::<AdmissionLabels, Counter>::default();
    registry.register("admissions", "Admission reviews answered, by kind, operation and decision", family.clone());
    let mut admissions = Vec::new();
    for kind in KINDS {
        for operation in OPERATIONS {
            for outcome in Outcome::ALL {
                let labels = AdmissionLabels { kind, operation, decision: outcome.as_str() };
                admissions.push(family.get_or_create(&labels).clone());
            }
        }
    }
    let duration = Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]);
    registry.register("admission_duration_seconds", "Time to answer an admission review", duration.clone());
    let copies_created = Counter::default();
    registry.register("copies_created", "Managed pull-secret copies created", copies_created.clone());
    let copies_updated = Counter::default();
    registry.register("copies_updated", "Managed pull-secret copies brought up to date", copies_updated.clone());
    let copies_conflicts = Counter::default();
    registry.register(
        "copies_conflicts",
        "Copy names held by a secret that is not our copy of the source",
        copies_conflicts.clone(),
    );
    let copies_deleted = Counter::default();
    registry.register("copies_deleted", "Managed copies deleted after their grace period", copies_deleted.clone());
    let reconcile_actions = Family::<ActionLabels, Counter>::default();
    registry.register(
        "reconcile_actions",
        "Reconciler actions: copy_synced, copy_replaced, copy_removed, copy_recreated, copy_restored, \
         copy_released, service_account_backfilled, service_account_entries_removed, \
         pod_missing_pull_secret, pod_healed",
        reconcile_actions.clone(),
    );
    // Every series exists from the start (at 0): `increase()` and dashboards see the first event.
    for action in Action::ALL {
        drop(reconcile_actions.get_or_create(&ActionLabels { action: action.as_str() }));
    }
    let reconcile_errors = Counter::default();
    registry.register(
        "reconcile_errors",
        "Reconciler actions that failed (retried on the next pass)",
        reconcile_errors.clone(),
    );
    let leader = Gauge::default();
    registry.register("leader", "1 while this replica holds the reconciler lease", leader.clone());
    let cache_hits = Counter::default();
    registry.register("owner_cache_hits", "Owner lookups answered from memory", cache_hits.clone());
    let cache_misses = Counter::default();
    registry.register("owner_cache_misses", "Owner lookups that needed the API server", cache_misses.clone());
    let owner_reads_from_etcd = Counter::default();
    registry.register(
        "owner_reads_from_etcd",
        "Owner lookups the API server's watch cache did not answer with the referenced owner, read again from etcd",
        owner_reads_from_etcd.clone(),
    );
    let owner_lookups_forbidden = Family::<ResourceLabels, Counter>::default();
    registry.register(
        "owner_lookups_forbidden",
        "Owner lookups the API server refused (403), by resource: that path was dropped; grant `get` on it",
        owner_lookups_forbidden.clone(),
    );
    let ignored_catalogs = Family::<ReasonLabels, Gauge>::default();
    registry.register(
        "ignored_catalogs",
        "CatalogSources with secrets that are handed out nowhere, by reason: invalid_namespace_selector \
         (the annotation does not parse) or namespace_not_configured (outside the catalog namespaces)",
        ignored_catalogs.clone(),
    );
    for reason in IGNORED_REASONS {
        drop(ignored_catalogs.get_or_create(&ReasonLabels { reason }));
    }
    let connections_refused = Counter::default();
    registry.register(
        "connections_refused",
        "HTTPS connections closed at once because the connection limit was reached",
        connections_refused.clone(),
    );
    let reviews_refused = Counter::default();
    registry.register(
        "reviews_refused",
        "Reviews answered 503 at once because the limit of reviews in flight was reached",
        reviews_refused.clone(),
    );
    let unverified_reviews = Counter::default();
    registry.register(
        "unverified_reviews",
        "Reviews from a peer whose identity was not verified (no client CA configured): any pod that reaches \
         the port may send them",
        unverified_reviews.clone(),
    );
    let undecided = Family::<PolicyLabels, Counter>::default();
    registry.register(
        "reviews_undecided",
        "Reviews not decided within the deadline, answered as the failure policy says (Ignore: admitted without a \
         patch; Fail: a Pod denied, retryably)",
        undecided.clone(),
    );
    for failure_policy in ["Ignore", "Fail"] {
        drop(undecided.get_or_create(&PolicyLabels { failure_policy }));
    }
    Metrics {
        registry,
        admissions,
        duration,
        copies_created,
        copies_updated,
        copies_conflicts,
        copies_deleted,
        reconcile_actions,
        reconcile_errors,
        leader,
        cache_hits,
        cache_misses,
        owner_reads_from_etcd,
        owner_lookups_forbidden,
        ignored_catalogs,
        connections_refused,
        reviews_refused,
        unverified_reviews,
        undecided,
    }
});

/// Counts one review. Kinds and operations other than those the webhook handles are counted as
/// `other`, so a caller cannot grow the label set.
pub fn admission(kind: &str, operation: &str, outcome: Outcome, seconds: f64) {
    let position = |set: &[&str], value: &str| set.iter().position(|v| *v == value);
    let kind = position(&KINDS, kind).unwrap_or(KINDS.len() - 1);
    let operation = position(&OPERATIONS, operation).unwrap_or(OPERATIONS.len() - 1);
    // `ALL` lists the variants in declaration order.
    METRICS.admissions[(kind * OPERATIONS.len() + operation) * Outcome::ALL.len() + outcome as usize].inc();
    METRICS.duration.observe(seconds);
}

pub fn copy_created() {
    METRICS.copies_created.inc();
}
pub fn copy_updated() {
    METRICS.copies_updated.inc();
}
pub fn copy_conflict() {
    METRICS.copies_conflicts.inc();
}
pub fn copy_deleted() {
    METRICS.copies_deleted.inc();
}
pub fn reconcile_action(action: Action) {
    METRICS.reconcile_actions.get_or_create(&ActionLabels { action: action.as_str() }).inc();
}
pub fn reconcile_error() {
    METRICS.reconcile_errors.inc();
}
pub fn set_leader(leading: bool) {
    METRICS.leader.set(i64::from(leading));
}
pub fn cache_hit() {
    METRICS.cache_hits.inc();
}
/// `resource` comes from a CSV's owned CRDs or the built-in workload kinds: a bounded set.
pub fn owner_lookup_forbidden(resource: &str) {
    METRICS.owner_lookups_forbidden.get_or_create(&ResourceLabels { resource: resource.to_string() }).inc();
}
/// The `reason` labels of `ignored_catalogs`.
const IGNORED_REASONS: [&str; 2] = ["invalid_namespace_selector", "namespace_not_configured"];

/// The catalogs ignored now, by reason (`invalid_namespace_selector`, `namespace_not_configured`).
pub fn set_ignored_catalogs(invalid_selectors: usize, outside_catalog_namespaces: usize) {
    for (reason, count) in IGNORED_REASONS.into_iter().zip([invalid_selectors, outside_catalog_namespaces]) {
        METRICS.ignored_catalogs.get_or_create(&ReasonLabels { reason }).set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
pub fn connection_refused() {
    METRICS.connections_refused.inc();
}
pub fn undecided(failure_policy: &'static str) {
    METRICS.undecided.get_or_create(&PolicyLabels { failure_policy }).inc();
}

pub fn unverified_review() {
    METRICS.unverified_reviews.inc();
}

pub fn review_refused() {
    METRICS.reviews_refused.inc();
}
pub fn cache_miss() {
    METRICS.cache_misses.inc();
}
pub fn owner_read_from_etcd() {
    METRICS.owner_reads_from_etcd.inc();
}

/// The Prometheus text exposition of every metric.
pub fn encode() -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &METRICS.registry).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(line_start: &str) -> u64 {
        encode().lines().find(|l| l.starts_with(line_start)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap()
    }

    #[test]
    fn admissions_are_counted_under_fixed_labels() {
        let pod = r#"pullsecret_injector_admissions_total{kind="Pod",operation="CREATE",decision="patched"}"#;
        let other = r#"pullsecret_injector_admissions_total{kind="other",operation="other",decision="skipped"}"#;
        let (pods, others) = (count(pod), count(other));
        admission("Pod", "CREATE", Outcome::Patched, 0.001);
        admission("Node", "CONNECT", Outcome::Skipped, 0.001);
        admission("ConfigMap", "DELETE", Outcome::Skipped, 0.001);
        assert_eq!(count(pod), pods + 1);
        assert_eq!(count(other), others + 1, "an unknown kind and operation");
        let configmap = r#"pullsecret_injector_admissions_total{kind="other",operation="DELETE",decision="skipped"}"#;
        assert!(count(configmap) >= 1);
        assert_eq!(
            encode().matches("pullsecret_injector_admissions_total{").count(),
            80,
            "every label set is known up front"
        );
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "ALL is in declaration order");
        }
    }
}
