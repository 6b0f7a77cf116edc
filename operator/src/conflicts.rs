//! The queue between the webhook, which meets a pod that clashes with its `MetricsSidecar`
//! (a port, a volume name) during a review, and the task that publishes it as an Event
//! ([`crate::webhook::events`]). Admission never waits on the API server: a review only
//! queues, without blocking; a full queue drops the report. A leaf, held by [`crate::Context`].

use crate::inject::SkipReason;
use std::sync::OnceLock;
use tokio::sync::mpsc;

/// Conflicts waiting to be published, at most.
const QUEUE: usize = 256;

/// One pod admitted unchanged because of a conflict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictEvent {
    pub namespace: String,
    pub sidecar: String,
    pub reason: SkipReason,
    /// The admission warning (it names the container and the port or volume).
    pub message: String,
}

/// Where reviews report conflicts; unset (reports dropped) until [`Sink::channel`] is called.
#[derive(Default)]
pub struct Sink(OnceLock<mpsc::Sender<ConflictEvent>>);

impl Sink {
    /// Connects the sink to a new queue and returns its receiving end (for [`crate::webhook::events::run`]).
    pub fn channel(&self) -> Option<mpsc::Receiver<ConflictEvent>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.0.set(tx).ok().map(|()| rx)
    }

    /// Queues a conflict without waiting; false when it was dropped.
    pub fn report(&self, event: ConflictEvent) -> bool {
        self.0.get().is_some_and(|tx| tx.try_send(event).is_ok())
    }
}
