//! Who may write. Every replica serves admission and keeps its caches warm; only the holder of
//! the Lease writes (status, ConfigMaps, rollouts, certificates, the webhook configuration), so
//! replicas never fight over an object.
//!
//! The Lease itself is run by `kube-lease-manager` in `main`; this module only turns its state
//! channel into the questions the controller and the certificate manager ask.

use futures::Stream;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The Lease every replica competes for, in the operator's namespace.
pub const LEASE_NAME: &str = "monasca-operator";
/// A leader that stops renewing loses the Lease after this long (seconds)...
const LEASE_DURATION: u64 = 15;
/// ...and renews it this long before that (seconds).
const LEASE_GRACE: u64 = 5;
/// Consecutive Lease API failures tolerated (about one lease duration) before giving up.
const MAX_LEASE_ERRORS: u32 = 5;
const LEASE_RETRY: Duration = Duration::from_secs(3);

/// Builds the Lease manager for this replica.
pub async fn lease_manager(
    client: Client,
    namespace: &str,
    identity: &str,
) -> crate::Result<LeaseManager> {
    Ok(LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(LEASE_DURATION)
        .with_grace(LEASE_GRACE)
        .build()
        .await?)
}

/// Runs the Lease until `stop` becomes true (then releases it, so another replica takes over
/// at once instead of after the lease duration), publishing the state on `state`.
///
/// On an API error the replica stops writing at once (`false` is published: it can no longer
/// prove it holds the Lease) and retries; after [`MAX_LEASE_ERRORS`] consecutive failures it
/// returns the error, and `main` exits so that Kubernetes restarts the pod (linkerd's policy:
/// a replica that cannot take part in the election must not linger half-alive).
pub async fn run_lease(
    manager: LeaseManager,
    state: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> crate::Result<()> {
    let mut errors = 0;
    loop {
        tokio::select! {
            changed = manager.changed() => match changed {
                Ok(leader) => {
                    errors = 0;
                    if leader {
                        tracing::info!("acquired the Lease: this replica writes");
                    } else {
                        tracing::info!("lost the Lease: this replica stops writing");
                    }
                    state.send_replace(leader);
                }
                Err(e) => {
                    state.send_replace(false);
                    errors += 1;
                    tracing::warn!(error = %e, errors, "Lease API error");
                    if errors >= MAX_LEASE_ERRORS {
                        return Err(e.into());
                    }
                    tokio::time::sleep(LEASE_RETRY).await;
                }
            },
            () = async { let _ = stop.wait_for(|stop| *stop).await; } => {
                state.send_replace(false);
                manager.release().await?;
                return Ok(());
            }
        }
    }
}

/// A read-only view of the leadership state, cheap to clone.
#[derive(Clone, Debug)]
pub struct Leadership {
    state: watch::Receiver<bool>,
    /// Keeps the channel open for [`Leadership::standalone`] (no lease manager owns the sender).
    _sender: Option<Arc<watch::Sender<bool>>>,
}

impl Leadership {
    /// Follows the state published by a lease manager (`true` while this replica holds the
    /// Lease).
    pub fn from_receiver(state: watch::Receiver<bool>) -> Leadership {
        Leadership {
            state,
            _sender: None,
        }
    }

    /// Always the leader: a single replica without leader election (tests, development).
    pub fn standalone() -> Leadership {
        Leadership::fixed(true)
    }

    /// A fixed state and the sender that changes it (tests of leadership changes).
    pub fn channel(initial: bool) -> (watch::Sender<bool>, Leadership) {
        let (tx, rx) = watch::channel(initial);
        (tx, Leadership::from_receiver(rx))
    }

    fn fixed(leader: bool) -> Leadership {
        let (tx, rx) = watch::channel(leader);
        Leadership {
            state: rx,
            _sender: Some(Arc::new(tx)),
        }
    }

    /// Whether this replica holds the Lease now. Checked right before every write: a replica
    /// that lost the Lease stops writing at its next write, not at the next reconcile.
    pub fn is_leader(&self) -> bool {
        *self.state.borrow()
    }

    /// Resolves when this replica becomes (or already is) the leader; `false` if the lease
    /// manager is gone.
    pub async fn acquired(&self) -> bool {
        let mut state = self.state.clone();
        state.wait_for(|leader| *leader).await.is_ok()
    }

    /// Resolves when this replica stops being the leader; `false` if the lease manager is gone.
    pub async fn lost(&self) -> bool {
        let mut state = self.state.clone();
        state.wait_for(|leader| !*leader).await.is_ok()
    }

    /// Yields once each time this replica becomes the leader: the controller reconciles every
    /// object then, since a follower's reconciles wrote nothing.
    pub fn gained(&self) -> impl Stream<Item = ()> + Send + 'static {
        let state = self.state.clone();
        futures::stream::unfold((state, false), |(mut state, mut was)| async move {
            loop {
                let now = *state.borrow_and_update();
                let gained = now && !was;
                was = now;
                if gained {
                    return Some(((), (state, was)));
                }
                if state.changed().await.is_err() {
                    return None;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn gained_fires_once_per_acquisition() {
        let (tx, leadership) = Leadership::channel(false);
        let mut gained = Box::pin(leadership.gained());
        assert!(!leadership.is_leader());
        tx.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
        assert!(leadership.is_leader());
        tx.send_replace(false);
        let pending = tokio::time::timeout(std::time::Duration::from_millis(50), gained.next());
        assert!(pending.await.is_err(), "losing the lease is not a gain");
        tx.send_replace(true);
        assert_eq!(gained.next().await, Some(()));
        drop(tx);
        assert_eq!(gained.next().await, None);
    }

    #[test]
    fn standalone_is_always_leader() {
        assert!(Leadership::standalone().is_leader());
    }
}
