//! One lifecycle for everything the sidecar runs in the background: every source (HTTP
//! listeners, StatsD, multiprocess, scrape), the store's sweeper, the state writer and the
//! config watcher is a [`Handle`] holding a child of one shared [`CancellationToken`].
//! Cancelling the root stops them all; [`Handle::stop`] stops one and waits for it, so
//! `main` can keep the shutdown order (listeners drain first, the state is written last).
//!
//! A leaf module (no `crate::` imports), so that the store can own its sweeper.

use std::future::Future;
pub use tokio_util::sync::CancellationToken;

/// A running background component: its token, its tasks and threads.
#[must_use = "dropping the handle stops the component"]
pub struct Handle {
    name: &'static str,
    token: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Run on cancel: tells a thread that waits on something other than the token.
    on_cancel: Vec<Box<dyn Fn() + Send + Sync>>,
}

impl Handle {
    /// A handle named `name` (for logs) stopped by `token` (normally a child of the root).
    pub fn new(name: &'static str, token: CancellationToken) -> Handle {
        Handle {
            name,
            token,
            tasks: Vec::new(),
            threads: Vec::new(),
            on_cancel: Vec::new(),
        }
    }

    /// The component's token: cancelled when it is to stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Runs `task` on the current Tokio runtime until it ends or the token is cancelled.
    pub fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        let token = self.token.clone();
        self.tasks.push(tokio::spawn(async move {
            tokio::select! {
                () = task => {}
                () = token.cancelled() => {}
            }
        }));
    }

    /// Runs `task` on the current Tokio runtime to its end: it watches the token itself
    /// (an HTTP listener drains its connections after the token is cancelled).
    pub fn spawn_until_done(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push(tokio::spawn(task));
    }

    /// Adds a thread that ends once the token is cancelled; `wake` is called on stop so that
    /// a thread sleeping on a condition variable sees the token at once.
    pub fn add_thread(
        &mut self,
        thread: std::thread::JoinHandle<()>,
        wake: impl Fn() + Send + Sync + 'static,
    ) {
        self.threads.push(thread);
        self.on_cancel(wake);
    }

    /// Calls `f` when the component is stopped (a thread that polls a flag of its own and is
    /// not waited for).
    pub fn on_cancel(&mut self, f: impl Fn() + Send + Sync + 'static) {
        self.on_cancel.push(Box::new(f));
    }

    /// Cancels the token and wakes the threads, without waiting.
    pub fn cancel(&self) {
        self.token.cancel();
        for f in &self.on_cancel {
            f();
        }
    }

    /// Stops the component and waits until its threads and tasks have ended.
    pub async fn stop(mut self) {
        self.stop_threads();
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                tracing::warn!(component = self.name, error = %e, "background task failed");
            }
        }
    }

    /// Stops the component and waits for its threads (from code without a runtime); its
    /// tasks end at their next await.
    pub fn stop_blocking(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.cancel();
        for thread in std::mem::take(&mut self.threads) {
            if thread.join().is_err() {
                tracing::warn!(component = self.name, "background thread panicked");
            }
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn cancelling_the_root_stops_every_child() {
        let root = CancellationToken::new();
        let mut a = Handle::new("a", root.child_token());
        let mut b = Handle::new("b", root.child_token());
        a.spawn(std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let token = b.token().clone();
        b.spawn_until_done(async move {
            token.cancelled().await;
            let _ = tx.send("drained");
        });
        root.cancel();
        a.stop().await;
        assert_eq!(rx.await, Ok("drained"));
        b.stop().await;
    }

    #[tokio::test]
    async fn stopping_one_child_leaves_its_siblings_running() {
        let root = CancellationToken::new();
        let a = Handle::new("a", root.child_token());
        let b = Handle::new("b", root.child_token());
        a.stop().await;
        assert!(!b.token().is_cancelled());
        assert!(!root.is_cancelled());
    }

    #[test]
    fn a_thread_is_woken_and_joined() {
        let mut handle = Handle::new("t", CancellationToken::new());
        let token = handle.token().clone();
        let pair = Arc::new((parking_lot::Mutex::new(false), parking_lot::Condvar::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let (thread_pair, thread_ended) = (pair.clone(), ended.clone());
        let thread = std::thread::spawn(move || {
            let (lock, cv) = &*thread_pair;
            let mut woken = lock.lock();
            while !token.is_cancelled() {
                cv.wait(&mut woken);
            }
            thread_ended.store(true, Ordering::SeqCst);
        });
        handle.add_thread(thread, move || {
            let (lock, cv) = &*pair;
            *lock.lock() = true;
            cv.notify_all();
        });
        handle.stop_blocking();
        assert!(ended.load(Ordering::SeqCst));
    }
}
