//! Events about admissions. A pod admitted unchanged because it clashes with its
//! `MetricsSidecar` (a port, a volume name) is reported on the `MetricsSidecar`, so its owner
//! learns it, not only whoever created the pod (who gets the admission warning).
//!
//! Admission is synchronous and must never wait on the API server: the review hands the
//! conflict to a bounded queue, and a task publishes it. Best effort: when the queue is full
//! the Event is dropped (the warning, the log line and the skip metric remain). Every replica
//! publishes what it admitted, leader or not: only the replica that saw the request knows.

use crate::context::Context;
use crate::inject::SkipReason;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use monasca_crds::MetricsSidecar;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// Conflicts waiting to be published, at most.
const QUEUE: usize = 256;

/// The Event reason (a fixed CamelCase word, as Kubernetes reasons are).
pub const REASON_NOT_INJECTED: &str = "PodNotInjected";

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
    /// Connects the sink to a new queue and returns its receiving end (for [`run`]).
    pub fn channel(&self) -> Option<mpsc::Receiver<ConflictEvent>> {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.0.set(tx).ok().map(|()| rx)
    }

    /// Queues a conflict without waiting; false when it was dropped.
    pub fn report(&self, event: ConflictEvent) -> bool {
        self.0.get().is_some_and(|tx| tx.try_send(event).is_ok())
    }
}

/// Publishes queued conflicts as Warning Events on their `MetricsSidecar` until the queue
/// closes.
pub async fn run(client: Client, ctx: Arc<Context>, mut queue: mpsc::Receiver<ConflictEvent>) {
    let recorder = Recorder::new(client, crate::controller::reporter());
    while let Some(conflict) = queue.recv().await {
        let key = ObjectRef::<MetricsSidecar>::new(&conflict.sidecar).within(&conflict.namespace);
        let Some(sidecar) = ctx.sidecars.get(&key) else {
            continue;
        };
        let event = Event {
            type_: EventType::Warning,
            reason: REASON_NOT_INJECTED.into(),
            note: Some(format!(
                "{} ({})",
                conflict.message,
                conflict.reason.label()
            )),
            action: "Admit".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &sidecar.object_ref(&())).await {
            tracing::warn!(error = %e, sidecar = %conflict.sidecar, "cannot publish an admission Event");
        }
    }
}
