//! What `monasca-sidecar` and `monasca-operator` share at run time, so that both stop, log and
//! serve HTTP the same way:
//!
//! - [`shutdown_signal`]: resolves on SIGTERM or SIGINT;
//! - [`logging::init_tracing`]: the `tracing` subscriber (text or JSON, on stderr);
//! - [`http`]: the hyper accept loop with one set of timeouts and a graceful drain;
//! - [`labels`]: `name="value"` label text with the exposition format's escaping.
//!
//! No product logic lives here: only the plumbing both binaries would otherwise each write.

pub mod http;
pub mod labels;
pub mod logging;
mod signal;

pub use signal::shutdown_signal;
