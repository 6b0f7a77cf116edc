//! Events about admissions. A pod admitted unchanged because it clashes with its
//! `MetricsSidecar` (a port, a volume name) is reported on the `MetricsSidecar`, so its owner
//! learns it, not only whoever created the pod (who gets the admission warning).
//!
//! Admission is synchronous and must never wait on the API server: the review hands the
//! conflict to a bounded queue, and a task publishes it. Best effort: when the queue is full
//! the Event is dropped (the warning, the log line and the skip metric remain). Every replica
//! publishes what it admitted, leader or not: only the replica that saw the request knows.

pub use crate::conflicts::{ConflictEvent, Sink};
use crate::context::Context;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use monasca_crds::MetricsSidecar;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The Event reason (a fixed CamelCase word, as Kubernetes reasons are).
pub const REASON_NOT_INJECTED: &str = "PodNotInjected";

/// Publishes queued conflicts as Warning Events on their `MetricsSidecar` until the queue
/// closes.
pub async fn run(client: Client, ctx: Arc<Context>, mut queue: mpsc::Receiver<ConflictEvent>) {
    let recorder = Recorder::new(client, crate::identity::reporter());
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
