//! Leader election on a coordination.k8s.io Lease, with a fence.
//!
//! Client-go's model: the leader renews the Lease every retry period; if it cannot renew within
//! the renew deadline (measured from its last successful renew, never extended by an error), it
//! stops leading at once — it lowers the engine's [`Fence`], so no AWS mutating call leaves this
//! process any more, and the controller stops starting reconciliations — and `run` then exits
//! non-zero so Kubernetes restarts the pod as a standby. A standby takes the Lease only after it
//! has seen the same record unchanged for a whole lease duration (its own clock, so clock skew
//! does not matter). Because renew deadline < lease duration, the old leader has stopped
//! mutating before anyone else can acquire: there is no moment with two writers to AWS.
//!
//! The fence also drops at once when the Lease is found held by another identity, and when the
//! election task ends for any reason (shutdown, panic): it is lowered on drop.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::{Trigger, trigger};
use crate::engine::Fence;

/// How long the controller's running reconciliations may take to finish after leadership is
/// lost before the process exits anyway (their AWS writes are already fenced off).
pub const LOSS_GRACE: Duration = Duration::from_secs(5);

/// Lease timings (client-go's defaults: 15 s, 10 s, 2 s). Validated by the config:
/// `retry_period < renew_deadline < lease_duration`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease record is valid after its last renewal, for the others.
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renew.
    pub renew_deadline: Duration,
    /// Time between two acquire or renew attempts.
    pub retry_period: Duration,
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What one acquire-or-renew attempt found.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease (just acquired or renewed).
    Held,
    /// Another identity holds it (and, for a standby, its record has not expired).
    HeldBy(String),
    /// Someone wrote the Lease between our read and our write: try again.
    Conflict,
}

/// One replica's side of the election on one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: LeaseTimings,
    /// The other holder's record last seen (holder, renewTime, resourceVersion) and when this
    /// replica first saw it: the record expires a lease duration after that, on our clock.
    observed: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timings: LeaseTimings,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            observed: None,
        }
    }

    /// Checks that the Lease can be read (a missing Lease is fine: it is created on acquire).
    pub async fn check(&self) -> Result<(), kube::Error> {
        self.api.get_opt(&self.name).await.map(|_| ())
    }

    fn spec(&self, previous: &LeaseSpec, ours: bool) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let transitions = previous.lease_transitions.unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: if ours {
                previous.acquire_time.clone().or_else(|| Some(now.clone()))
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if ours {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..previous.clone()
        }
    }

    /// Reads the Lease and takes or renews it when allowed. While `leading`, a Lease held by
    /// anyone else is lost at once, whatever its age.
    async fn try_acquire_or_renew(&mut self, leading: bool) -> Result<Attempt, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(&LeaseSpec::default(), false)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        let previous = lease.spec.clone().unwrap_or_default();
        let holder = previous.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if let Some(holder) = holder.filter(|_| !ours) {
            if leading {
                return Ok(Attempt::HeldBy(holder));
            }
            let record = format!(
                "{holder}|{:?}|{:?}",
                previous.renew_time, lease.metadata.resource_version
            );
            let now = Instant::now();
            let seen_at = match &self.observed {
                Some((r, at)) if *r == record => *at,
                _ => {
                    self.observed = Some((record, now));
                    now
                }
            };
            let duration = previous
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.timings.lease_duration, Duration::from_secs);
            if now < seen_at + duration {
                return Ok(Attempt::HeldBy(holder));
            }
            info!(%holder, "the Lease expired: taking it over");
        }
        lease.spec = Some(self.spec(&previous, ours));
        // Replace carries the resourceVersion read above: a concurrent writer makes it fail.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (holder cleared) if this replica still holds it, so a standby takes
    /// over without waiting for expiry.
    async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..spec
        });
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }

    /// Campaigns, then leads until the renew deadline passes without a renew or the Lease is
    /// taken, reporting leadership on `leading` and raising/lowering `fence` with it. Ends when
    /// leadership is lost (after lowering the fence and sending `false`), or when every
    /// receiver of `leading` is gone (lowers the fence, then releases the Lease if held).
    pub async fn run(mut self, fence: Fence, leading: watch::Sender<bool>) {
        let guard = LowerOnDrop(fence.clone());
        let timings = self.timings;
        // Campaign.
        let mut renewed_at = loop {
            let started = Instant::now();
            tokio::select! {
                biased;
                () = leading.closed() => return,
                attempt = self.try_acquire_or_renew(false) => match attempt {
                    Ok(Attempt::Held) => break started,
                    Ok(Attempt::HeldBy(holder)) => debug!(%holder, "standby: the Lease is held"),
                    Ok(Attempt::Conflict) => debug!("standby: the Lease changed while acquiring"),
                    Err(e) => warn!(error = %e, "cannot read or acquire the leader-election Lease"),
                },
            }
            tokio::select! {
                biased;
                () = leading.closed() => return,
                () = tokio::time::sleep(timings.retry_period) => {}
            }
        };
        fence.raise();
        leading.send_replace(true);
        info!(identity = %self.identity, "acquired the lease");
        // Lead: renew every retry period; the deadline counts from the last successful renew.
        let lost = loop {
            let deadline = renewed_at + timings.renew_deadline;
            let next = (Instant::now() + timings.retry_period).min(deadline);
            tokio::select! {
                biased;
                () = leading.closed() => {
                    fence.lower();
                    if let Err(e) = self.release().await {
                        warn!(error = %e, "cannot release the lease; it expires on its own");
                    } else {
                        info!("released the lease");
                    }
                    return;
                }
                () = tokio::time::sleep_until(next) => {}
            }
            if Instant::now() >= deadline {
                break "the renew deadline passed without a successful renew".to_owned();
            }
            let started = Instant::now();
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew(true)).await {
                Ok(Ok(Attempt::Held)) => renewed_at = started,
                Ok(Ok(Attempt::HeldBy(holder))) => break format!("the lease is held by {holder}"),
                Ok(Ok(Attempt::Conflict)) => debug!("the Lease changed while renewing; retrying"),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot renew the lease; retrying until the renew deadline")
                }
                Err(_) => break "the renew deadline passed during a renew".to_owned(),
            }
        };
        fence.lower();
        leading.send_replace(false);
        error!(reason = %lost, "lost the lease: stopped acting on AWS");
        drop(guard);
    }
}

/// Lowers the fence when dropped: whatever ends the election task, AWS writes stop with it.
struct LowerOnDrop(Fence);

impl Drop for LowerOnDrop {
    fn drop(&mut self) {
        self.0.lower();
    }
}

/// Why [`follow_leadership`] returned without a shutdown request.
#[derive(Debug, thiserror::Error)]
pub enum LeadershipEnded {
    /// Leader election ended before this replica ever led.
    #[error("leader election stopped unexpectedly")]
    Stopped,
    /// This replica led and lost the lease (or could not renew it in time).
    #[error("lost the leader-election lease: exiting so this replica restarts as a standby")]
    Lost,
}

/// Runs `controller` once this replica leads, until `shutdown` (returns Ok) or until leadership
/// is lost (returns [`LeadershipEnded::Lost`]: `run` exits non-zero and Kubernetes restarts the
/// pod as a standby; a replica never leads twice in one process).
///
/// `controller` is given a trigger that fires when leadership is lost or shutdown is requested;
/// it must stop taking work then and return once its running work is done. After a loss it gets
/// at most [`LOSS_GRACE`] for that; the fence already refuses its AWS writes.
pub async fn follow_leadership<F, Fut>(
    leading: &mut watch::Receiver<bool>,
    shutdown: Trigger,
    controller: F,
) -> Result<(), LeadershipEnded>
where
    F: FnOnce(Trigger) -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::select! {
        biased;
        () = shutdown.clone() => return Ok(()),
        changed = leading.wait_for(|l| *l) => if changed.is_err() {
            return Err(LeadershipEnded::Stopped);
        },
    }
    info!("leading: starting the controller");
    let mut watch_loss = leading.clone();
    // An error means the election task is gone: not leading either.
    let lost = trigger(async move {
        let _ = watch_loss.wait_for(|l| !*l).await;
    });
    let stop = trigger(futures::future::select(lost.clone(), shutdown.clone()).map(|_| ()));
    let running = controller(stop);
    let lost_then_grace = async {
        lost.clone().await;
        tokio::time::sleep(LOSS_GRACE).await;
    };
    tokio::select! {
        () = running => {}
        () = lost_then_grace => {
            warn!(grace = ?LOSS_GRACE, "running reconciliations did not finish after the lease was lost; exiting anyway");
        }
    }
    if lost.peek().is_some() {
        return Err(LeadershipEnded::Lost);
    }
    Ok(())
}
