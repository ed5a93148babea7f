//! Leader election over a `coordination.k8s.io/v1` Lease: one replica reconciles, every replica
//! answers admissions. The holder renews every third of the lease duration and steps down when it
//! has not renewed for two thirds of it, before anyone else may take over; a candidate takes over
//! once the holder's last renewal is a whole lease duration old. On shutdown the holder releases
//! the lease so a rolling upgrade hands over at once.

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

/// Runs the election until `shutdown` resolves, publishing whether this replica leads.
pub async fn run(
    client: kube::Client,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
    shutdown: impl Future<Output = ()>,
) {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let retry = settings.duration / 3;
    let mut last_renewed: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        // A request that hangs (an API server that stopped answering) counts as failed, so the
        // holder steps down in time.
        let attempt = tokio::time::timeout(retry, try_acquire_or_renew(&api, &settings)).await;
        let wait = match attempt.unwrap_or_else(|_| Err(kube::Error::Service("lease request timed out".into()))) {
            Ok(Attempt::Holding) => {
                if last_renewed.is_none() {
                    info!(lease = %settings.name, identity = %settings.identity, "acquired the lease: reconciling");
                }
                last_renewed = Some(Instant::now());
                leading.send_replace(true);
                retry
            }
            Ok(Attempt::HeldByOther { holder, expires_in }) => {
                if last_renewed.take().is_some() || *leading.borrow() {
                    warn!(lease = %settings.name, %holder, "lost the lease: stopped reconciling");
                }
                leading.send_replace(false);
                // Look again when it would expire (or sooner), so takeover is prompt.
                expires_in.clamp(Duration::from_millis(100), retry)
            }
            Err(e) => {
                warn!(lease = %settings.name, error = %e, "lease request failed");
                // Step down before a candidate may consider the lease expired.
                if last_renewed.is_some_and(|t| t.elapsed() >= settings.duration * 2 / 3) {
                    warn!(lease = %settings.name, "could not renew in time: stopped reconciling");
                    last_renewed = None;
                    leading.send_replace(false);
                }
                // A holder retries soon, to renew before its deadline; a candidate at its pace.
                if last_renewed.is_some() { Duration::from_millis(500).min(retry) } else { retry }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => break,
        }
    }
    if leading.send_replace(false) {
        release(&api, &settings).await;
    }
}

enum Attempt {
    Holding,
    HeldByOther { holder: String, expires_in: Duration },
}

async fn try_acquire_or_renew(api: &Api<Lease>, settings: &LeaseSettings) -> Result<Attempt, kube::Error> {
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
        let renewed_at = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
        let expires_in = renewed_at.map_or(Duration::ZERO, |at| remaining(at, duration, now));
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

/// How long a lease renewed at `renewed_at` stays valid after `now`.
fn remaining(renewed_at: Timestamp, duration: Duration, now: Timestamp) -> Duration {
    let age = now.duration_since(renewed_at);
    let age = Duration::try_from(age).unwrap_or(Duration::ZERO);
    duration.saturating_sub(age)
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

    #[test]
    fn remaining_counts_down_from_the_last_renewal() {
        let renewed: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later = |s: i64| renewed.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(s)).unwrap();
        assert_eq!(remaining(renewed, Duration::from_secs(15), later(5)), Duration::from_secs(10));
        assert_eq!(remaining(renewed, Duration::from_secs(15), later(15)), Duration::ZERO);
        assert_eq!(remaining(renewed, Duration::from_secs(15), later(60)), Duration::ZERO);
        // A renewal stamped in the future (clock skew) counts as fresh, never as expired.
        assert_eq!(remaining(later(3), Duration::from_secs(15), renewed), Duration::from_secs(15));
    }
}
