//! What a component plugs into the running sidecar ([`crate::app::App`]): its self-metrics,
//! a refresh before each render, a reset on clear, its part of the state file, and the state
//! writer's durability wait. `App` holds these as trait objects, so it imports no source and
//! no source's import of `App` closes a circle.

use crate::codec::Enc;
use crate::self_metrics::Registry;
use crate::store::Now;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A component that reports its own `monasca_sidecar_*` metrics: its `prometheus-client`
/// metrics, and a collector for figures read at render time, go into the app's registry
/// once (see [`crate::self_metrics`]).
pub trait SelfMetrics: Send + Sync {
    /// Registers this component's metrics (names without the `monasca_sidecar_` prefix,
    /// counters without `_total`: the registry adds both).
    fn register(self: Arc<Self>, registry: &mut Registry);
}

/// A source that can bring its values up to date on demand (the multiprocess reader), run
/// right before `/metrics` is rendered so a scrape never sees values older than the files.
pub trait Refresh: Send + Sync {
    fn refresh(&self);
}

/// A source that keeps state of its own beside the store (StatsD accumulators), told when the
/// store is cleared (`POST /v1/clear`) so that it starts again from zero.
pub trait Clear: Send + Sync {
    fn clear(&self);
}

/// A source that keeps state of its own beside the store (the StatsD accumulator) and writes
/// it into the state file.
pub trait StatePart: Send + Sync {
    fn encode_state(&self, now: Now, e: &mut Enc);
}

/// The state writer as `App` sees it: a `/metrics` response waits until the store version it
/// shows is on disk (see [`crate::state::Persister`]).
pub trait Durable: Send + Sync {
    fn durable(&self, version: u64) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}
