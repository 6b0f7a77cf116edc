//! What a component plugs into the running sidecar ([`crate::app::App`]): its self-metrics,
//! a refresh before each render, a reset on clear, its part of the state file, and the state
//! writer's durability wait. `App` holds these as trait objects, so it imports no source and
//! no source's import of `App` closes a circle.

use crate::codec::Enc;
use crate::expose::SelfFamily;
use crate::store::Now;
use std::future::Future;
use std::pin::Pin;

/// A component that reports its own `monasca_sidecar_*` metrics at render time.
pub trait SelfMetrics: Send + Sync {
    /// Appends this component's families (names must start with `monasca_sidecar_`).
    fn families(&self, out: &mut Vec<SelfFamily>);
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
