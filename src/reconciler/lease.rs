//! Leader election over a `coordination.k8s.io/v1` Lease: one replica reconciles, every replica
//! answers admissions. The holder renews every third of the lease duration and holds it for two
//! thirds of it after it *sent* its last successful renewal: it publishes that instant, and the
//! reconciler writes nothing past it, even if this task is stuck on a request. A candidate never
//! compares the holder's timestamps with its own clock (clocks are skewed): like client-go, it
//! takes over once a whole lease duration has passed, by its own monotonic clock, since it last
//! saw the lease record change. On shutdown the holder releases the lease so a rolling upgrade
//! hands over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub duration: Duration,
}

/// Until when this replica may act as the leader: `None` while it does not hold the lease.
pub type HeldUntil = Option<Instant>;

/// Whether the lease is known to be held now.
pub fn holds(held_until: &HeldUntil) -> bool {
    held_until.is_some_and(|until| Instant::now() < until)
}

/// Runs the election until `shutdown` resolves, publishing until when this replica leads.
pub async fn run(
    client: kube::Client,
    settings: LeaseSettings,
    leading: watch::Sender<HeldUntil>,
    shutdown: impl Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let retry = settings.duration / 3;
    // A candidate looks often, so that it sees each renewal soon after it is made.
    let look = (settings.duration / 10).max(Duration::from_millis(100));
    let mut observed = Observed::default();
    tokio::pin!(shutdown);
    loop {
        let sent = Instant::now();
        // A request that hangs (an API server that stopped answering) counts as failed.
        let attempt = tokio::time::timeout(retry, try_acquire_or_renew(&api, &settings, &mut observed)).await;
        let wait = match attempt.unwrap_or_else(|_| Err(kube::Error::Service("lease request timed out".into()))) {
            Ok(Attempt::Holding) => {
                if leading.borrow().is_none() {
                    info!(lease = %settings.name, identity = %settings.identity, "acquired the lease: reconciling");
                }
                // Counted from when the renewal was sent: a candidate may take over a whole
                // duration after it last saw the record change, which is later than that.
                leading.send_replace(Some(sent + settings.duration * 2 / 3));
                retry
            }
            Ok(Attempt::HeldByOther { holder, expires_in }) => {
                if leading.send_replace(None).is_some() {
                    warn!(lease = %settings.name, %holder, "lost the lease: stopped reconciling");
                }
                expires_in.clamp(Duration::from_millis(100), look)
            }
            Err(e) => {
                warn!(lease = %settings.name, error = %e, "lease request failed");
                let held = *leading.borrow();
                if held.is_some() && !holds(&held) {
                    warn!(lease = %settings.name, "could not renew in time: stopped reconciling");
                    leading.send_replace(None);
                }
                // A holder retries soon, to renew before its deadline; a candidate at its pace.
                if leading.borrow().is_some() { Duration::from_millis(500).min(retry) } else { look }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => break,
        }
    }
    if leading.send_replace(None).is_some() {
        release(&api, &settings).await;
    }
}

enum Attempt {
    Holding,
    HeldByOther { holder: String, expires_in: Duration },
}

/// The lease record as last seen held by another replica, and when this replica saw it change.
#[derive(Default)]
struct Observed {
    record: Option<(String, Option<MicroTime>, Option<i32>)>,
    changed_at: Option<Instant>,
}

impl Observed {
    /// How long the lease held by another stays valid: a whole duration after this replica
    /// last saw its record change, by this replica's own clock.
    fn expires_in(&mut self, spec: &LeaseSpec, duration: Duration, now: Instant) -> Duration {
        let record =
            (spec.holder_identity.clone().unwrap_or_default(), spec.renew_time.clone(), spec.lease_transitions);
        if self.record.as_ref() != Some(&record) || self.changed_at.is_none() {
            self.record = Some(record);
            self.changed_at = Some(now);
        }
        let changed_at = self.changed_at.unwrap_or(now);
        (changed_at + duration).saturating_duration_since(now)
    }
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Observed,
) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(settings.name.clone()), ..Default::default() },
            spec: Some(spec_held_by(settings, now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Holding),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Attempt::HeldByOther { holder: "another replica".into(), expires_in: settings.duration })
            }
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let transitions = spec.lease_transitions.unwrap_or(0);
    if holder == settings.identity {
        let mut renewed = spec_held_by(settings, now, transitions);
        renewed.acquire_time = spec.acquire_time;
        lease.spec = Some(renewed);
    } else {
        let duration = spec.lease_duration_seconds.map_or(settings.duration, |s| Duration::from_secs(s.max(1) as u64));
        let expires_in = observed.expires_in(&spec, duration, Instant::now());
        if !holder.is_empty() && !expires_in.is_zero() {
            return Ok(Attempt::HeldByOther { holder, expires_in });
        }
        info!(lease = %settings.name, previous = %holder, "lease expired or released: taking over");
        lease.spec = Some(spec_held_by(settings, now, transitions + 1));
    }
    // `replace` carries the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(&settings.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(Attempt::Holding),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Ok(Attempt::HeldByOther { holder: "another replica".into(), expires_in: Duration::from_millis(100) })
        }
        Err(e) => Err(e),
    }
}

fn spec_held_by(settings: &LeaseSettings, now: Timestamp, transitions: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(settings.duration.as_secs().max(1) as i32),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Gives the lease up (holder cleared) so another replica takes over without waiting.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else { return };
    let Some(spec) = lease.spec.as_mut() else { return };
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    match api.replace(&settings.name, &PostParams::default(), &lease).await {
        Ok(_) => info!(lease = %settings.name, "released the lease"),
        Err(e) => warn!(lease = %settings.name, error = %e, "could not release the lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_transitions: Some(1),
            ..Default::default()
        }
    }

    /// The holder's clock is an hour behind: its renewTime looks long expired to anyone who
    /// compares it with their own clock. A candidate that only notes when the record changes
    /// never takes over while the holder renews, and takes over a whole duration after the
    /// renewals stop, whatever the clocks say.
    #[test]
    fn expiry_is_measured_from_when_the_record_last_changed_not_from_its_timestamps() {
        let duration = Duration::from_secs(15);
        let start = Instant::now();
        let mut observed = Observed::default();
        let skewed = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z", "2026-01-01T00:00:10Z"];
        for (i, renewed) in skewed.iter().enumerate() {
            let now = start + Duration::from_secs(5 * i as u64);
            assert_eq!(observed.expires_in(&held("a", renewed), duration, now), duration, "renewed: a whole duration");
        }
        // The holder is cut off from the API: the record stops changing.
        let last_change = start + Duration::from_secs(10);
        let at = |s: u64| last_change + Duration::from_secs(s);
        assert_eq!(observed.expires_in(&held("a", skewed[2]), duration, at(14)), Duration::from_secs(1));
        assert_eq!(observed.expires_in(&held("a", skewed[2]), duration, at(15)), Duration::ZERO);

        // A holder whose clock runs an hour ahead is not believed either: a first sight counts
        // from now.
        let mut fresh = Observed::default();
        let ahead = held("b", "2027-01-01T00:00:00Z");
        assert_eq!(fresh.expires_in(&ahead, duration, start), duration);
        assert_eq!(fresh.expires_in(&ahead, duration, start + duration), Duration::ZERO);
    }

    #[test]
    fn the_lease_is_held_until_the_published_instant_only() {
        assert!(!holds(&None));
        assert!(holds(&Some(Instant::now() + Duration::from_secs(5))));
        assert!(!holds(&Some(Instant::now())));
    }
}
