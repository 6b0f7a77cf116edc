//! Who may write. Every replica serves admission and keeps its caches warm; only the holder of
//! the Lease writes (status, ConfigMaps, rollouts, certificates, the webhook configuration), so
//! replicas never fight over an object.
//!
//! Leadership is a **local deadline**: each successful renewal (or acquisition) that started at
//! local time `t` makes this replica the leader until `t + duration - grace`. Writes check the
//! deadline itself ([`Leadership::is_leader`]), so they stop the moment it passes, whatever the
//! renewal loop is doing (stuck on a dead apiserver, say). A failed renewal changes nothing by
//! itself: the replica stays leader until its deadline, and the next successful renewal extends
//! it. So one API error never demotes a replica that still holds the Lease, and an outage of any
//! length only ends writing (never the process: the webhook keeps serving).
//!
//! Followers never compare the holder's timestamps with their own clock: they note the local
//! time at which they last saw the Lease record change and take it over only when it has not
//! changed for a whole `duration` (client-go's rule). The holder stops writing `grace` before
//! that can happen, which is the margin for the two replicas' timers (not their clocks: wall
//! clock skew plays no part).

use crate::identity::FIELD_MANAGER;
use futures::Stream;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// The Lease every replica competes for, in the operator's namespace.
pub const LEASE_NAME: &str = "monasca-operator";
/// Accepted lease durations (seconds): long enough to ride out an apiserver hiccup or a
/// leader's GC pause, short enough for a quick failover.
pub const LEASE_DURATION_RANGE: std::ops::RangeInclusive<u64> = 30..=60;

/// The timing of the Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease record that stopped changing stays held.
    pub duration: Duration,
    /// The holder stops writing this long before a follower may take over.
    pub grace: Duration,
    /// How often the holder renews and followers look.
    pub retry: Duration,
}

impl LeaseTiming {
    /// The timing for a lease of `seconds` (30-60): a third of it as grace, renewals every
    /// sixth (so the holder gets about three attempts before its deadline).
    pub fn new(seconds: u64) -> crate::Result<LeaseTiming> {
        if !LEASE_DURATION_RANGE.contains(&seconds) {
            return Err(crate::Error::LeaseDuration(seconds));
        }
        let duration = Duration::from_secs(seconds);
        Ok(LeaseTiming {
            duration,
            grace: duration / 3,
            retry: duration / 6,
        })
    }

    /// How long after the start of a successful renewal this replica may write.
    pub fn leadership(&self) -> Duration {
        self.duration - self.grace
    }
}

/// What one round does, given the Lease as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// No Lease yet: create it, holding it.
    Create,
    /// This replica holds it: renew.
    Renew,
    /// Released, or unchanged for a whole lease duration: take it.
    TakeOver,
    /// Someone else holds it.
    Follow,
}

/// Decides a round. `expired`: the record has not changed for its whole duration since this
/// replica first saw it (see [`Observation`]).
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, expired: bool) -> Action {
    let Some(spec) = lease else {
        return Action::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Action::Renew,
        None | Some("") => Action::TakeOver,
        Some(_) if expired => Action::TakeOver,
        Some(_) => Action::Follow,
    }
}

/// The last Lease record a replica saw and when (local time) it first saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    record: Option<(Option<String>, Option<MicroTime>, Option<i32>)>,
    since: Instant,
}

impl Observation {
    fn new(now: Instant) -> Observation {
        Observation {
            record: None,
            since: now,
        }
    }

    /// Notes the record read at `now`; returns whether it has been unchanged for longer than
    /// its lease duration.
    pub fn observe(&mut self, spec: &LeaseSpec, now: Instant, default: Duration) -> bool {
        let record = Some((
            spec.holder_identity.clone(),
            spec.renew_time.clone(),
            spec.lease_duration_seconds,
        ));
        if record != self.record {
            self.record = record;
            self.since = now;
        }
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(default, Duration::from_secs);
        now.saturating_duration_since(self.since) > duration
    }
}

/// One replica's side of the election: reads and writes the Lease.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    timing: LeaseTiming,
    observed: Observation,
}

impl Elector {
    /// An elector for `identity` on the Lease in `namespace`. Makes no API call.
    pub fn new(client: Client, namespace: &str, identity: &str, timing: LeaseTiming) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            timing,
            observed: Observation::new(Instant::now()),
        }
    }

    fn spec(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.timing.duration.as_secs()).ok(),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: reads the Lease and creates, renews or takes it over as [`decide`] says.
    /// `Ok(true)` when this replica holds it now. A write racing with another replica's fails
    /// (409, the resourceVersion read is stale) and is an error, not a hold.
    pub async fn round(&mut self) -> crate::Result<bool> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        let lease = self.api.get_opt(LEASE_NAME).await?;
        let now = Instant::now();
        let spec = lease.as_ref().and_then(|l| l.spec.clone());
        let expired = spec
            .as_ref()
            .is_some_and(|s| self.observed.observe(s, now, self.timing.duration));
        match (decide(spec.as_ref(), &self.identity, expired), lease) {
            (Action::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE_NAME.into()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(0, None)),
                };
                self.api.create(&params, &lease).await?;
                Ok(true)
            }
            (Action::Follow, _) => Ok(false),
            (action, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                let transitions = old.lease_transitions.unwrap_or(0);
                lease.spec = Some(match action {
                    Action::Renew => self.spec(transitions, old.acquire_time),
                    _ => self.spec(transitions.saturating_add(1), None),
                });
                lease.metadata.managed_fields = None;
                self.api.replace(LEASE_NAME, &params, &lease).await?;
                Ok(true)
            }
            (_, None) => Ok(false),
        }
    }

    /// Gives the Lease up (if held) so another replica takes over at once, not after the lease
    /// duration.
    pub async fn release(&mut self) -> crate::Result<()> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        lease.metadata.managed_fields = None;
        self.api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

/// Runs the election until `stop` becomes true (then releases the Lease), publishing the
/// leadership deadline on `state`. Never returns an error: API failures are logged and retried
/// every `retry`, and leadership simply ends when its deadline passes without a renewal.
pub async fn run_lease(
    mut elector: Elector,
    state: watch::Sender<Option<Instant>>,
    mut stop: watch::Receiver<bool>,
) {
    let timing = elector.timing;
    let mut errors: u32 = 0;
    loop {
        let started = Instant::now();
        // A round that hangs (an apiserver that accepts and never answers) must not stall the
        // loop past the next renewal.
        let outcome = match tokio::time::timeout(timing.retry, elector.round()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(crate::Error::LeaseTimeout),
        };
        let was_leader = state.borrow().is_some_and(|d| Instant::now() < d);
        match outcome {
            Ok(true) => {
                errors = 0;
                if !was_leader {
                    tracing::info!("acquired the Lease: this replica writes");
                }
                state.send_replace(Some(started + timing.leadership()));
            }
            Ok(false) => {
                errors = 0;
                if state.borrow().is_some() {
                    tracing::info!("another replica holds the Lease: this replica does not write");
                }
                state.send_replace(None);
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                // The deadline stays: still the leader until it passes, and a later successful
                // renewal extends it.
                tracing::warn!(error = %e, errors, leader = was_leader, "Lease API error; retrying");
            }
        }
        // Wake at the deadline too (not only after `retry`): the moment writing stops is logged
        // when it happens, and the next round starts right away.
        let deadline = (*state.borrow()).filter(|d| Instant::now() < *d);
        let wake = deadline.map_or(timing.retry, |d| {
            timing
                .retry
                .min(d.saturating_duration_since(Instant::now()))
        });
        let expired = async {
            tokio::time::sleep(wake).await;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    errors,
                    lease = ?timing.duration,
                    "leadership deadline passed without a successful renewal: this replica stopped writing (the webhook keeps serving)"
                );
            }
        };
        tokio::select! {
            () = expired => {}
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                let held = state.borrow().is_some();
                state.send_replace(None);
                if held && let Err(e) = elector.release().await {
                    tracing::warn!(error = %e, "cannot release the Lease; it expires by itself");
                }
                return;
            }
        }
    }
}

/// A read-only view of the leadership deadline, cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    state: watch::Receiver<Option<Instant>>,
    /// Keeps the channel open for [`Leadership::standalone`] (no elector owns the sender).
    _sender: Option<Arc<watch::Sender<Option<Instant>>>>,
}

/// Far enough in the future to mean "forever" for a standalone replica (and safe to add to).
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Leadership {
    /// Follows the deadline published by [`run_lease`].
    pub fn from_receiver(state: watch::Receiver<Option<Instant>>) -> Leadership {
        Leadership {
            state,
            _sender: None,
        }
    }

    /// Always the leader: a single replica without leader election (tests, development).
    pub fn standalone() -> Leadership {
        let (tx, rx) = watch::channel(Some(Instant::now() + FOREVER));
        Leadership {
            state: rx,
            _sender: Some(Arc::new(tx)),
        }
    }

    /// A leader (for good) or a follower, and the sender that changes it (tests).
    pub fn channel(leader: bool) -> (watch::Sender<Option<Instant>>, Leadership) {
        let (tx, rx) = watch::channel(leader.then(|| Instant::now() + FOREVER));
        (tx, Leadership::from_receiver(rx))
    }

    fn deadline(&self) -> Option<Instant> {
        *self.state.borrow()
    }

    /// Whether this replica may write now: its deadline has not passed. Checked right before
    /// every write, so writing stops the moment the deadline passes.
    pub fn is_leader(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() < d)
    }

    /// Resolves when this replica is the leader; `false` if the elector is gone.
    pub async fn acquired(&self) -> bool {
        let mut state = self.state.clone();
        loop {
            if self.is_leader() {
                return true;
            }
            if state.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Resolves when this replica stops being the leader (its deadline passes or it is told it
    /// lost); `false` if the elector is gone.
    pub async fn lost(&self) -> bool {
        let mut state = self.state.clone();
        loop {
            let deadline = *state.borrow_and_update();
            match deadline {
                Some(d) if Instant::now() < d => {
                    tokio::select! {
                        () = tokio::time::sleep_until(d) => {}
                        changed = state.changed() => if changed.is_err() { return false },
                    }
                }
                _ => return true,
            }
        }
    }

    /// Yields once each time this replica becomes the leader: the controller reconciles every
    /// object then, since a follower's reconciles wrote nothing.
    pub fn gained(&self) -> impl Stream<Item = ()> + Send + 'static {
        let leadership = self.clone();
        futures::stream::unfold((leadership, false), |(leadership, mut was)| async move {
            loop {
                if was {
                    if !leadership.lost().await {
                        return None;
                    }
                    was = false;
                } else {
                    if !leadership.acquired().await {
                        return None;
                    }
                    return Some(((), (leadership, true)));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
