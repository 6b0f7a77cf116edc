//! Every way values reach the store, one folder each: the Pushgateway API ([`push`]), the
//! original JSON API ([`json`]), StatsD ([`statsd`]), prometheus_client multiprocess files
//! ([`multiprocess`]), scrape mode ([`scrape`]) and OTLP/HTTP ([`otlp`]). [`parse`] holds the
//! exposition parsers that push, JSON and scrape share. Each source turns its input into
//! [`crate::model::Family`] values for one worker and applies them to the store.

pub mod json;
pub mod multiprocess;
pub mod otlp;
pub mod parse;
pub mod push;
pub mod scrape;
pub mod statsd;

use crate::app::App;
use crate::lifecycle::CancellationToken;
use std::sync::Arc;

/// What every source (and every other background component) is started with: the running
/// sidecar it writes into and the root shutdown token. Each component takes a
/// [`child_token`](SourceContext::child_token) into its [`crate::lifecycle::Handle`], so that
/// cancelling the root stops all of them and `main` can still stop them one by one, in order.
#[derive(Clone)]
pub struct SourceContext {
    app: Arc<App>,
    shutdown: CancellationToken,
}

impl SourceContext {
    pub fn new(app: Arc<App>, shutdown: CancellationToken) -> SourceContext {
        SourceContext { app, shutdown }
    }

    /// A context with a root token of its own, for a component started alone (tests, tools).
    pub fn standalone(app: &Arc<App>) -> SourceContext {
        SourceContext::new(app.clone(), CancellationToken::new())
    }

    /// The running sidecar: its store, config and registries.
    pub fn app(&self) -> &Arc<App> {
        &self.app
    }

    /// A token for one component: cancelled with the root, or alone through its handle.
    pub fn child_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }
}
