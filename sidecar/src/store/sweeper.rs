//! The store's sweeper: every [`SWEEP_INTERVAL`] it forgets workers not seen for
//! `forgetAfter`, retiring their counters ([`Store::sweep`](super::Store::sweep)). Owned by
//! the store (expiry is store policy) and run like any source, as a
//! [`lifecycle::Handle`](crate::lifecycle::Handle).

use crate::lifecycle::{CancellationToken, Handle};
use std::sync::Arc;
use std::time::Duration;

/// How often expired workers are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Whatever holds the store (the running sidecar's `App`): one sweep at the current time,
/// returning the ids of the workers forgotten.
pub trait Swept: Send + Sync + 'static {
    fn sweep(&self) -> Vec<String>;
}

/// Starts sweeping `store` every `interval` until `token` is cancelled.
pub fn spawn(store: Arc<dyn Swept>, token: CancellationToken, interval: Duration) -> Handle {
    let mut handle = Handle::new("sweeper", token);
    handle.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            for id in store.sweep() {
                tracing::info!(worker = %id, "worker expired; its counters are retired");
            }
        }
    });
    handle
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// Hands out one expired worker per sweep and counts sweeps.
    struct Counting(Mutex<u32>, tokio::sync::mpsc::UnboundedSender<u32>);

    impl Swept for Counting {
        fn sweep(&self) -> Vec<String> {
            let mut n = self.0.lock();
            *n += 1;
            let _ = self.1.send(*n);
            vec![format!("w{n}")]
        }
    }

    #[tokio::test]
    async fn sweeps_every_interval_until_stopped() {
        let interval = Duration::from_millis(5);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let store = Arc::new(Counting(Mutex::new(0), tx));
        let handle = spawn(store.clone(), CancellationToken::new(), interval);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        handle.stop().await;
        let after = *store.0.lock();
        tokio::time::sleep(interval * 4).await;
        assert_eq!(*store.0.lock(), after, "a stopped sweeper swept again");
    }
}
