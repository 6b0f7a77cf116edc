//! monasca-sidecar: makes every worker of a pod one clean Prometheus target.
//!
//! The pipeline is visible in the module tree: sources ([`ingest`], [`parse`]) produce
//! [`model::Family`] values for one worker; the [`store`] keeps each worker's latest cumulative
//! values and retires what disappears; [`expose`] aggregates and renders `/metrics`.

pub mod app;
pub mod codec;
pub mod config_file;
pub mod expose;
pub mod ingest;
pub mod model;
pub mod multiprocess;
pub mod otlp;
pub mod parse;
pub mod scrape;
pub mod server;
pub mod state;
pub mod statsd;
pub mod store;
