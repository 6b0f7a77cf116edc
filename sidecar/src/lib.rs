//! monasca-sidecar: makes every worker of a pod one clean Prometheus target.
//!
//! The pipeline is visible in the module tree: [`sources`] (push, JSON, StatsD, multiprocess,
//! scrape, OTLP) produce [`model::Family`] values for one worker; the [`store`] keeps each
//! worker's latest cumulative values, owns the aggregation policy and retires what
//! disappears; [`expose`] renders `/metrics` from the store's read-only view.

pub mod app;
pub mod codec;
pub mod component;
pub mod config_file;
pub mod expose;
pub mod hashing;
pub mod lifecycle;
pub mod model;
pub mod self_metrics;
pub mod server;
pub mod sources;
pub mod state;
pub mod store;
